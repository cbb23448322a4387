"""`python -m projcomp.theory [--outdir DIR] [--toy all|eq17|eq18|gauss2d|featuremap] [--seeds N] [--docs DIR]`

Writes, per toy, DIR/<toy>.png (figure) and DIR/<toy>.json (numbers, including the toy's config),
and DIR/config.json (the command line and every toy's config). With --docs, a small copy of each
figure goes to DOCS/theory_<toy>.png (the README's images).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .distributions import TheoryError


def main(argv=None) -> int:
    from .toys import TOYS

    ap = argparse.ArgumentParser(prog="python -m projcomp.theory", description="Exact-score toys of Bradley et al. (2025).")
    ap.add_argument("--outdir", default="out/theory", help="output folder (default out/theory)")
    ap.add_argument("--toy", default="all", choices=["all", *TOYS], help="which toy to run")
    ap.add_argument("--seeds", type=int, default=None, help="samples per setting (seeds 0..N-1; default: each toy's own)")
    ap.add_argument("--docs", default=None, help="also write small PNG copies as DOCS/theory_<toy>.png")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.seeds < 2:
        print(f"error: --seeds {args.seeds} must be >= 2", file=sys.stderr)
        return 2
    os.makedirs(args.outdir, exist_ok=True)
    names = list(TOYS) if args.toy == "all" else [args.toy]
    configs = {}
    for name in names:
        t0 = time.time()
        kwargs = {} if args.seeds is None else {"num_seeds": args.seeds}
        try:
            numbers, fig = TOYS[name](**kwargs)
        except TheoryError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 1
        numbers["seconds"] = round(time.time() - t0, 2)
        configs[name] = numbers["config"]
        fig.savefig(os.path.join(args.outdir, f"{name}.png"))
        if args.docs:
            os.makedirs(args.docs, exist_ok=True)
            fig.savefig(os.path.join(args.docs, f"theory_{name}.png"), dpi=60)
        with open(os.path.join(args.outdir, f"{name}.json"), "w") as f:
            json.dump(numbers, f, indent=1)
        print(f"{name}: {os.path.join(args.outdir, name)}.png/.json ({numbers['seconds']} s)")
    with open(os.path.join(args.outdir, "config.json"), "w") as f:
        json.dump({"command": " ".join(["python -m projcomp.theory", *(argv if argv is not None else sys.argv[1:])]), "toys": configs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
