"""The jobs behind the command-line scripts, one module per script of the same name (`train_ppo.py` runs
`detox.jobs.train_ppo.main`): parse the config, build every part, run, save. Benchmarks and tests call these
functions instead of importing a script."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
