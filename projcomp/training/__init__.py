"""Training an EDM2 denoiser on a projcomp dataset (the command line is `python -m projcomp.train`).

  config.py  the typed table of options, the presets, resolve_config, the argparse CLI
  loop.py    the EDM2 loop with the paper's changes (App. L), per-image seeding, DDP
  state.py   training-state files (bit-exact resume), snapshots, final checkpoints, warm start
"""

from .config import DEFAULTS, FIELDS, PRESETS, TrainError, build_parser, network_kwargs, parse_nimg, resolve_config
from .loop import EDM2Loss, Trainer, learning_rate, power_ema_beta, std_to_exp, training_loop
from .state import find_latest_state

__all__ = ["DEFAULTS", "FIELDS", "PRESETS", "TrainError", "build_parser", "network_kwargs", "parse_nimg",
           "resolve_config", "EDM2Loss", "Trainer", "learning_rate", "power_ema_beta", "std_to_exp",
           "training_loop", "find_latest_state"]
