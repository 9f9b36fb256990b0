"""The core: a candidate (spec and recipe), the model factory, data and training; no Optuna study in here."""
