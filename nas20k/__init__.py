"""nas20k: search small MNIST CNNs under a parameter and epoch budget with Optuna."""

import warnings

# Optuna marks heartbeats, stale-trial retries and metric names "experimental" (since v2.8-v3.2) and warns on every
# use, in every worker process; nas20k relies on them knowingly. Matched by message: importing optuna here would
# slow every command's start.
warnings.filterwarnings("ignore", message=r".*(is experimental|experimental feature)")
