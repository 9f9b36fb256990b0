"""The base every wing may import: errors, the mission's budget and checklist, the private Optuna calls."""
