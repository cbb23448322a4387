"""The Colours tab (Fig 5), without UI code: colour conditionals composed over their background
(experiments.color_spec), per-channel histograms of object pixels and the Lemma 8.1 verdict before
sampling (cosines of mean colour differences, from rendered data). Self-contained on purpose:
the colour statistics may be reworked here without touching the other tabs."""

from __future__ import annotations

import os
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from ..imageio import image_grid, to_uint8
from ..sampling import SamplerConfig, sample
from ..zoo import Zoo
from .common import (MAX_SAMPLES, MAX_STEPS, SEED_MAX, InputError, caption, cosine_heatmap, device_of,
                     grid_cols, integer, progress_text, stream_jobs, upscale, weight)

TILE = 160
EXAMPLES = [
    dict(label="yellow + blue", colors=["yellow", "blue"], weight=1.0, steps=16, seed=0, samples=4),
    dict(label="red + green + blue", colors=["red", "green", "blue"], weight=1.0, steps=16, seed=1, samples=4),
    dict(label="gray + cyan, w = 2", colors=["gray", "cyan"], weight=2.0, steps=16, seed=2, samples=4),
]


def _spec(zoo: Zoo):
    """The Fig 5 spec the tab samples (experiments.color_spec picks the net and background), or None."""
    from ..experiments import color_spec

    try:
        return color_spec(zoo, ["yellow", "blue"], [0])
    except ValueError:
        return None


def has_color_net(zoo: Zoo) -> bool:
    return _spec(zoo) is not None


def color_classes(zoo: Zoo) -> list:
    """The colour net's classes (its schema's "classes" or "colors"), else CLEVR's eight."""
    from ..clevr.scene import CLEVR_COLORS

    spec = _spec(zoo)
    if spec is not None:
        cond = zoo.entries[spec.terms[0].model].get("condition") or {}
        return list(cond.get("classes") or cond.get("colors") or CLEVR_COLORS)
    return list(CLEVR_COLORS)


def resolution(zoo: Zoo) -> int:
    spec = _spec(zoo)
    return zoo.resolution_of(spec.terms[0].model) if spec is not None else 32


def background(zoo: Zoo) -> str:
    """What the tab composes over, for Lemma 8.1's μ_b: 'empty' (the empty scene) or 'any' (null label)."""
    spec = _spec(zoo)
    if spec is None or spec.background.cond == "empty" or zoo.role_of(spec.background.model) == "empty":
        return "empty"
    return "any"


def parse_colors(colors, classes: Sequence[str]) -> list:
    if isinstance(colors, str):
        colors = [colors]
    colors = list(colors or [])
    bad = [c for c in colors if c not in classes]
    if bad:
        raise InputError("colours", f"{bad} not in {list(classes)}")
    if len(colors) < 2:
        raise InputError("colours", "pick at least two colours to compose")
    return colors


# ---------------------------------------------------------------------------------------------
# Statistics and the verdict before sampling.

def _cache_dir() -> str:
    d = os.environ.get("PROJCOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "projcomp")
    os.makedirs(d, exist_ok=True)
    return d


def statistics(res: int = 32, n_per_color: Optional[int] = None, seed: int = 0) -> dict:
    """Colour statistics of our renders (projcomp.clevr.colorstats, cached on disk in $PROJCOMP_CACHE).
    `n_per_color` defaults to $PROJCOMP_COLOR_SAMPLES or 24 scenes per colour."""
    from ..clevr.colorstats import colour_statistics

    n = int(n_per_color or os.environ.get("PROJCOMP_COLOR_SAMPLES") or 24)
    return colour_statistics(res, n=n, seed=seed, cache_dir=_cache_dir())


def preview(colors: Sequence[str], classes: Sequence[str], res: int, bg: str = "empty") -> tuple:
    """(histogram figure, heatmap figure or None, verdict markdown) before any sampling: Lemma 8.1
    on whole-image means over the background `bg` the tab composes over (colorstats.preview)."""
    from ..clevr.colorstats import preview as colour_preview

    colors = [c for c in (colors or []) if c in classes]
    p = colour_preview(colors, res, background=bg, cache_dir=_cache_dir())
    heat = None if p["matrix"] is None else cosine_heatmap(p["names"], p["matrix"], title="cos(μ_c − μ_b), whole images")
    return p["figure"], heat, p["markdown"]


# ---------------------------------------------------------------------------------------------
# Sampling, streamed.


def check_request(zoo: Zoo, colors, w, steps, seed, samples) -> tuple:
    if not has_color_net(zoo):
        raise InputError("colours", f"no colour-conditioned checkpoint in {zoo.root!r}")
    colors = parse_colors(colors, color_classes(zoo))
    w = weight(w, "weight")
    steps = integer(steps, "steps", 1, MAX_STEPS)
    seed = integer(seed, "seed", 0, SEED_MAX)
    samples = integer(samples, "samples", 1, MAX_SAMPLES)
    return colors, w, steps, seed, samples


def _panel(imgs, seeds, found=None, step=None, size=TILE) -> np.ndarray:
    tiles = []
    for j, (im, s) in enumerate(zip(imgs, seeds)):
        cap = f"seed {s}" + (f" · {', '.join(found[j]) or '—'}" if found is not None else f" · {step}" if step else "")
        tiles.append(caption(np.asarray(upscale(im, size, "sharp")), cap))
    return image_grid(tiles, max(grid_cols(len(tiles)), min(4, len(tiles))))


def compose_stream(zoo: Zoo, colors: Sequence[str], w: float, steps: int, seed: int, num_samples: int, bf16: bool,
                   every: float = 0.25, solver: str = "heun") -> Iterator[tuple]:
    """Yields ("progress", text, preview grid) and finally ("done", text, (grid, found, seeds))."""
    from ..clevr.detect import detect
    from ..experiments import color_spec

    seeds = [int(seed) + i for i in range(int(num_samples))]
    cfg = SamplerConfig(num_steps=int(steps), solver=solver, dtype="bfloat16" if bf16 else "float32").validate()
    t0 = time.perf_counter()

    spec = color_spec(zoo, list(colors), seeds, [float(w)] * len(colors))

    def run(cb):
        names = sorted({spec.background.model, *[t.model for t in spec.terms]})
        den = spec.build(zoo.registry(names))
        net = zoo.get(spec.terms[0].model)
        return to_uint8(sample(den, seeds, tuple(net.image_shape), cfg, device=device_of(net), callback=cb))

    yield "progress", "Sampling 0 % — loading the network", None
    imgs = None
    for kind, data in stream_jobs({"c": run}, parallel=False, every=every):
        if kind == "progress":
            info = data.get("c")
            pv = None if info is None else _panel(to_uint8(info["x0"]), seeds, step=f"step {info['i'] + 1}/{info['n']}")
            yield "progress", progress_text(data, {"c": "colours"}, t0), pv
        else:
            imgs = data["c"]
    framing = zoo.framing_of(spec.terms[0].model)  # read in the frame its net draws
    found = [sorted({d["color"] for d in detect(im, framing=framing)}) for im in imgs]
    dt = time.perf_counter() - t0
    yield "done", f"Done in {dt:.1f} s ({cfg.describe()}).", (_panel(imgs, seeds, found), found, seeds)


def summary(colors: Sequence[str], found: Sequence, seeds: Sequence[int]) -> str:
    both = sum(all(c in f for c in colors) for f in found)
    lines = [f"**All of {', '.join(colors)} detected in {both} / {len(found)} samples.**", "",
             "| seed | colours detected |", "|---|---|"]
    lines += [f"| {s} | {', '.join(f) or '—'} |" for s, f in zip(seeds, found)]
    return "\n".join(lines)
