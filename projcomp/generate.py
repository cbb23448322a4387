"""Images from a composition spec: `run_spec` (sample every seed of a `CompositionSpec` over a
`Zoo`), `save_images`, and the command line `python -m projcomp.generate` that writes one PNG per
seed. The samplers themselves are `projcomp.sampling`.

    python -m projcomp.generate SPEC.json --outdir out/sample
    python -m projcomp.generate --setting A --locations 0.3,0.5 0.7,0.5 0.5,0.7 --seeds 0-7 --outdir out/A
    python -m projcomp.generate --setting B --k 4 --seeds 0-3 --steps 16 --bf16 --outdir out/B
    python -m projcomp.generate --colors yellow blue --seeds 0-7 --outdir out/color

A SPEC.json names models by checkpoint folder (see projcomp.spec). Every image is written as
`<outdir>/seed<SEED>.png` with `spec.json` (the full, resolved spec) beside it, so each image can
be regenerated alone: sample s is the same whatever else is in the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import torch

from .compose import CompositionError
from .files import atomic_write_json
from .imageio import to_uint8
from .experiments import SETTINGS, color_spec, random_locations, setting_framing, setting_spec
from .zoo import Zoo, ZooError
from .sampling import SOLVERS, SamplingError, churn_settings, sample
from .spec import CompositionSpec

__all__ = ["prepare", "run_spec", "parse_seeds", "build_spec", "save_images", "main"]


def prepare(spec: CompositionSpec, zoo: Zoo):
    """(composed denoiser, image shape) for `spec`; raises before any sampling if anything is off."""
    names = {spec.background.model, *[t.model for t in spec.terms]}
    missing = sorted(n for n in names if n not in zoo.entries)
    if missing:
        raise CompositionError(f"model: unknown network {missing[0]!r} (known: {sorted(zoo.entries)})")
    shapes = {n: tuple(zoo.get(n).image_shape) for n in names}
    if len(set(shapes.values())) > 1:
        raise CompositionError(f"model: the composed networks have different image shapes {shapes}")
    return spec.build(zoo.registry(sorted(names))), shapes[spec.terms[0].model]


def run_spec(spec: CompositionSpec, zoo: Zoo, batch: int = 8, progress=None, prepared=None) -> torch.Tensor:
    """Sample every seed of `spec` (in batches of `batch` seeds) and return x0 [N, C, H, W]."""
    den, shape = prepared or prepare(spec, zoo)
    outs = []
    seeds = list(spec.seeds)
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        cb = None
        if progress is not None:
            cb = lambda info, i=i: progress(i + len(chunk) * (info["i"] + 1) / info["n"], len(seeds))  # noqa: E731
        outs.append(sample(den, chunk, shape, spec.sampler, callback=cb, device=zoo.device))
    return torch.cat(outs).cpu()


def parse_seeds(items: Sequence[str]) -> list:
    """'0-7' or '3' or '1,5,9' -> list of ints."""
    seeds = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = part.split("-", 1)
                    seeds.extend(range(int(a), int(b) + 1))
                else:
                    seeds.append(int(part))
            except ValueError:
                raise CompositionError(f"seeds: {part!r} is not an integer or a range like 0-7") from None
    if not seeds:
        raise CompositionError("seeds: none given")
    return seeds


def _parse_xy(s: str) -> list:
    try:
        x, y = (float(v) for v in s.split(","))
    except ValueError:
        raise CompositionError(f"locations: {s!r} is not 'x,y' (two numbers in [0, 1])") from None
    return [x, y]


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m projcomp.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", help="a composition spec JSON (models = checkpoint folder names)")
    ap.add_argument("--setting", choices=sorted(SETTINGS), help="Fig 3 setting: A empty background, B Bayes, C cluttered")
    ap.add_argument("--locations", nargs="+", metavar="X,Y", help="object locations in [0,1] image coordinates")
    ap.add_argument("--k", type=int, help="k random locations (from the CLEVR scene sampler) instead of --locations")
    ap.add_argument("--location-seed", type=int, default=0, help="seed of the random locations")
    ap.add_argument("--colors", nargs="+", help="alone: colour conditionals to compose (Fig 5); with --setting: one "
                    "colour per location ('any' = any colour), for nets with a colour per object")
    ap.add_argument("--weights", nargs="+", type=float, help="one weight per term (default 1: the paper's operator)")
    ap.add_argument("--color-guidance", type=float, default=1.0, help="with --setting and --colors: each coloured "
                    "term D_xy + g (D_xyc - D_xy), classifier-free guidance of the colour inside the term (1 = off)")
    ap.add_argument("--steps", type=int, help="sampler steps (default 32 Heun = 63 network calls)")
    ap.add_argument("--solver", choices=list(SOLVERS), help="ODE solver: heun (default; 2N-1 calls), euler (N), "
                    "dpm2m (DPM-Solver++(2M), second order with N calls)")
    ap.add_argument("--churn", type=float, help="S_churn of EDM's stochastic sampler (Alg. 2; churn for sigma in "
                    "[0.05, 50]); 0 = the deterministic ODE")
    ap.add_argument("--seeds", nargs="+", default=["0-3"], help="seeds, e.g. 0-7 or 1,4,9")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    ap.add_argument("--resolution", type=int, help="pick checkpoints of this resolution")
    ap.add_argument("--checkpoints", default=os.environ.get("PROJCOMP_CHECKPOINTS", "checkpoints"), help="folder of checkpoints")
    ap.add_argument("--batch", type=int, default=8, help="seeds per sampler batch")
    ap.add_argument("--outdir", required=True, help="output folder")
    return ap


def build_spec(args, zoo: Zoo) -> CompositionSpec:
    sampler = {}
    if args.steps is not None:
        sampler["num_steps"] = args.steps
    if args.solver:
        sampler["solver"] = args.solver
    if args.bf16:
        sampler["dtype"] = "bfloat16"
    if args.churn is not None:
        sampler.update(churn_settings(args.churn))
    seeds = parse_seeds(args.seeds)
    if args.spec:
        if args.setting or args.colors or args.locations or args.k is not None:
            raise CompositionError("spec: give either a SPEC.json or --setting/--colors flags, not both")
        try:
            with open(args.spec) as f:
                d = json.load(f)
        except OSError as e:
            raise CompositionError(f"spec: cannot read {args.spec!r} ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise CompositionError(f"spec: {args.spec!r} is not valid JSON ({e})") from None
        if isinstance(d, dict):
            d.setdefault("sampler", {}).update(sampler)
        return CompositionSpec.from_dict(d)
    if args.colors and not args.setting:
        return color_spec(zoo, args.colors, seeds, args.weights, sampler, args.resolution)
    if args.setting:
        if args.locations and args.k is not None:
            raise CompositionError("locations: give --locations or --k, not both")
        if args.k is not None:
            if not 1 <= args.k <= 10:
                raise CompositionError(f"k: {args.k} must be between 1 and 10")
            # drawn in the frame the setting's nets were trained on (their dataset's framing)
            locs = random_locations(args.k, args.location_seed, framing=setting_framing(zoo, args.setting, args.resolution))
        elif args.locations:
            locs = [_parse_xy(s) for s in args.locations]
        else:
            raise CompositionError("locations: --setting needs --locations X,Y ... or --k N")
        colors = None
        if args.colors:
            if len(args.colors) != len(locs):
                raise CompositionError(f"colors: {len(args.colors)} colours for {len(locs)} locations")
            colors = [None if c == "any" else c for c in args.colors]
        return setting_spec(zoo, args.setting, locs, seeds, args.weights, sampler, args.resolution, colors=colors,
                            color_guidance=args.color_guidance)
    raise CompositionError("spec: give a SPEC.json, --setting A|B|C, or --colors")


def save_images(images: torch.Tensor, spec: CompositionSpec, outdir: str, extra: dict | None = None) -> list:
    from PIL import Image

    os.makedirs(outdir, exist_ok=True)
    paths = []
    for s, img in zip(spec.seeds, to_uint8(images)):
        p = os.path.join(outdir, f"seed{s:04d}.png")
        Image.fromarray(img).save(p)
        paths.append(p)
    atomic_write_json(os.path.join(outdir, "spec.json"), {**spec.to_dict(), "meta": extra or {}})
    return paths


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        zoo = Zoo(args.checkpoints, dtype=None)
        spec = build_spec(args, zoo)
        prepared = prepare(spec, zoo)
        from tqdm import tqdm

        bar = tqdm(total=len(spec.seeds), desc="sampling", unit="img")
        def progress(done, total):
            bar.n = round(done, 2)
            bar.refresh()
        images = run_spec(spec, zoo, batch=args.batch, progress=progress, prepared=prepared)
        bar.close()
        paths = save_images(images, spec, args.outdir, {"command": "python -m projcomp.generate " + " ".join(argv or sys.argv[1:]),
                                                        "checkpoints": {n: zoo.entries[n].get("training", {}) for n in {spec.background.model, *[t.model for t in spec.terms]}}})
    except (CompositionError, SamplingError, ZooError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images and spec.json to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
