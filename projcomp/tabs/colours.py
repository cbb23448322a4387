"""The Colours tab (Fig 5), without UI code: colour conditionals composed over their background
(experiments.color_spec), per-channel histograms of object pixels and the Lemma 8.1 verdict before
sampling (cosines of mean colour differences, from rendered data). Self-contained on purpose:
the colour statistics may be reworked here without touching the other tabs."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ..experiments import Zoo
from ..sampling import SamplerConfig, sample
from .common import (MAX_SAMPLES, MAX_STEPS, SEED_MAX, InputError, caption, cosine_heatmap, device_of, grid,
                     grid_cols, integer, progress_text, stream_jobs, to_uint8, upscale, weight)

TILE = 160
EXAMPLES = [
    dict(label="yellow + blue", colors=["yellow", "blue"], weight=1.0, steps=16, seed=0, samples=4),
    dict(label="red + green + blue", colors=["red", "green", "blue"], weight=1.0, steps=16, seed=1, samples=4),
    dict(label="gray + cyan, w = 2", colors=["gray", "cyan"], weight=2.0, steps=16, seed=2, samples=4),
]


def color_classes(zoo: Zoo) -> list:
    """The colour net's classes (its schema's "classes" or "colors"), else CLEVR's eight."""
    from ..clevr.scene import CLEVR_COLORS

    if zoo.has("color"):
        cond = zoo.entries[zoo.find("color")].get("condition") or {}
        return list(cond.get("classes") or cond.get("colors") or CLEVR_COLORS)
    return list(CLEVR_COLORS)


def resolution(zoo: Zoo) -> int:
    return zoo.resolution_of(zoo.find("color")) if zoo.has("color") else 32


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

_LOCK = threading.Lock()


def _cache_dir() -> str:
    d = os.environ.get("PROJCOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "projcomp")
    os.makedirs(d, exist_ok=True)
    return d


@functools.lru_cache(maxsize=4)
def statistics(res: int = 32, n_per_color: Optional[int] = None, seed: int = 0) -> dict:
    """Object pixels of rendered one-object scenes per CLEVR colour: per-channel histograms (Fig 5)
    and mean sRGB colour. Rendered once, then cached on disk ($PROJCOMP_CACHE).
    `n_per_color` defaults to $PROJCOMP_COLOR_SAMPLES or 24 scenes per colour."""
    from ..clevr.detect import detect
    from ..clevr.render import render
    from ..clevr.scene import CLEVR_COLORS, sample_scene

    n_per_color = int(n_per_color or os.environ.get("PROJCOMP_COLOR_SAMPLES") or 24)
    path = os.path.join(_cache_dir(), f"color_stats_r{res}_n{n_per_color}_s{seed}_v1.json")
    with _LOCK:
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                pass
        bins = np.linspace(0, 256, 33)
        stats = {"bins": bins.tolist(), "hist": {}, "mean": {}, "pixels": {}}
        for ci, c in enumerate(CLEVR_COLORS):
            px = []
            for i in range(n_per_color):
                scene = sample_scene([seed, 7, ci, i], num_objects=1, forced={"color": c}, resolution=res)
                img = render(scene, resolution=res)
                _, labels = detect(img, return_labels=True)
                if labels.max() > 0:
                    px.append(img[labels > 0])
            px = np.concatenate(px).astype(np.float64) if px else np.zeros((0, 3))
            stats["hist"][c] = [np.histogram(px[:, ch], bins=bins, density=True)[0].tolist() for ch in range(3)]
            stats["mean"][c] = px.mean(0).tolist() if len(px) else [0.0, 0.0, 0.0]
            stats["pixels"][c] = int(len(px))
        tmp = path + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, path)
        return stats


def verdict(colors: Sequence[str], stats: dict) -> dict:
    """Lemma 8.1 on object colour: cosines of (μ_c − μ_u) in RGB, μ_u = the mean over all colours
    (the unconditional object). Large |cos| predicts a failed (hybrid) composition."""
    from ..heuristic import mean_difference_cosines, verdict as _verdict

    all_px = sum(stats["pixels"].values())
    mu_u = sum(np.array(stats["mean"][c]) * stats["pixels"][c] for c in stats["mean"]) / max(all_px, 1)
    names, M = mean_difference_cosines({c: torch.tensor(stats["mean"][c]) for c in colors}, torch.tensor(mu_u))
    return {"names": names, "matrix": M, "verdict": _verdict(names, M), "mu_u": mu_u.tolist()}


def histogram_figure(colors: Sequence[str], stats: dict):
    """Fig 5 (right): per-channel histograms of object pixels, the chosen colours in bold."""
    import matplotlib.pyplot as plt
    from ..clevr.scene import CLEVR_RGB

    bins = np.array(stats["bins"])
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.7), dpi=90)
    for ch, ax in enumerate(axes):
        for c, h in stats["hist"].items():
            chosen = c in colors
            rgb = np.array(CLEVR_RGB[c]) / 255 if c in CLEVR_RGB else None
            ax.stairs(h[ch], bins, color=rgb, lw=2.2 if chosen else 0.7, alpha=1.0 if chosen else 0.35,
                      label=c if chosen else None)
        ax.set_title(f"{'RGB'[ch]} channel of object pixels", fontsize=10)
        ax.set_yticks([])
        ax.tick_params(labelsize=8)
    if colors:
        axes[-1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def preview(colors: Sequence[str], classes: Sequence[str], res: int) -> tuple:
    """(histogram figure, heatmap figure or None, verdict markdown) before any sampling."""
    colors = [c for c in (colors or []) if c in classes]
    stats = statistics(res)
    hist = histogram_figure(colors, stats)
    if len(colors) < 2:
        return hist, None, "Pick two or more colours to see the verdict."
    v = verdict(colors, stats)
    heat = cosine_heatmap(v["names"], v["matrix"], title="cos(μ_c − μ_u) in RGB")
    vd = v["verdict"]
    rows = "\n".join(f"| {p['a']} + {p['b']} | {p['cos']:+.2f} | {'yes' if p['composes'] else 'no'} |"
                     for p in vd["pairs"])
    md = (f"**Heuristic (Lemma 8.1): {vd['summary']}** (|cos| ≤ {vd['threshold']} passes).\n\n"
          "Factorized conditionals have orthogonal mean differences; colour lives in the same three channels for "
          "every object, so colours mostly are *not* factorized (Fig 5).\n\n"
          "| pair | cos | composes? |\n|---|---|---|\n" + rows)
    return hist, heat, md


# ---------------------------------------------------------------------------------------------
# Sampling, streamed.


def check_request(zoo: Zoo, colors, w, steps, seed, samples) -> tuple:
    if not zoo.has("color"):
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
    return grid(tiles, max(grid_cols(len(tiles)), min(4, len(tiles))))


def compose_stream(zoo: Zoo, colors: Sequence[str], w: float, steps: int, seed: int, num_samples: int, bf16: bool,
                   every: float = 0.25) -> Iterator[tuple]:
    """Yields ("progress", text, preview grid) and finally ("done", text, (grid, found, seeds))."""
    from ..clevr.detect import detect
    from ..experiments import color_spec

    seeds = [int(seed) + i for i in range(int(num_samples))]
    cfg = SamplerConfig(num_steps=int(steps), dtype="bfloat16" if bf16 else "float32").validate()
    t0 = time.perf_counter()

    def run(cb):
        spec = color_spec(zoo, list(colors), seeds, [float(w)] * len(colors))
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
    found = [sorted({d["color"] for d in detect(im)}) for im in imgs]
    dt = time.perf_counter() - t0
    yield "done", f"Done in {dt:.1f} s.", (_panel(imgs, seeds, found), found, seeds)


def summary(colors: Sequence[str], found: Sequence, seeds: Sequence[int]) -> str:
    both = sum(all(c in f for c in colors) for f in found)
    lines = [f"**All of {', '.join(colors)} detected in {both} / {len(found)} samples.**", "",
             "| seed | colours detected |", "|---|---|"]
    lines += [f"| {s} | {', '.join(f) or '—'} |" for s, f in zip(seeds, found)]
    return "\n".join(lines)
