"""`python -m projcomp.train`: train an EDM2 denoiser on a projcomp dataset zip.

    python -m projcomp.train --preset cpu-32 --data data/clevr-loc-32.zip --outdir runs/loc32
    python -m projcomp.train --preset cpu-32 --data D.zip --outdir R --duration 2Mi --bf16
    torchrun --nproc_per_node 2 -m projcomp.train --preset gpu-64 --data D.zip --outdir R
    python -m projcomp.train --preset paper-xs --data D.zip --outdir R --dry-run

Re-running the same command resumes from the newest `training-state-*.safetensors` in outdir,
bit-identical to an uninterrupted run. The pieces live in projcomp.training: the options and
presets (config.py), the loop (loop.py), the state files (state.py); the names below are
re-exported for `from projcomp import train`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Optional

import torch

from . import checkpoint as ckpt
from .training.config import DEFAULTS, PRESETS, TrainError, build_parser, network_kwargs, parse_nimg, resolve_config
from .training.loop import EDM2Loss, Trainer, learning_rate, power_ema_beta, std_to_exp, training_loop
from .training.state import find_latest_state

__all__ = ["PRESETS", "DEFAULTS", "TrainError", "resolve_config", "learning_rate", "std_to_exp", "power_ema_beta",
           "EDM2Loss", "Trainer", "training_loop", "network_kwargs", "parse_nimg", "find_latest_state", "main"]


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(description=__doc__.split("\n\n")[0]).parse_args(argv)
        cfg = resolve_config(args.preset, {k: getattr(args, k) for k in DEFAULTS})
        if args.dry_run:
            print(json.dumps(cfg, indent=2))
            return 0
        if not args.data or not args.outdir:
            raise TrainError("--data and --outdir are required (or use --dry-run)")
        command = "python -m projcomp.train " + " ".join(shlex.quote(a) for a in argv)
        final = training_loop(cfg, args.data, args.outdir, command=command, progress=not args.no_progress)
        if args.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
            url = ckpt.push_to_hub(final, args.push_to_hub)
            print(f"pushed {final} to {url}", file=sys.stderr)
    except (TrainError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
