"""The runner: opens Optuna studies, samples and trains trials in workers, races the top, survives faults."""
