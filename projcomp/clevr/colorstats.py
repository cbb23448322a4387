"""Colour statistics of our CLEVR renders (Fig 5, right panel) and Lemma 8.1 on them.

One implementation, used by `python -m projcomp.evaluate fig5`, the exact-score colour toy
(`projcomp.theory.colours`) and the app's Colours tab:

  colour_statistics(R, n, seed)   renders n one-object scenes per CLEVR colour and n empty scenes
                                  (the training distribution of the `object-empty` preset, object
                                  colour forced) and measures, in sRGB 0-255:
                                    per-channel histograms of object pixels per colour and of the
                                    empty scenes' pixels (the background, grey in Fig 5),
                                    whole-image means μ_c [R, R, 3] and μ_b (empty scenes),
                                    each colour's mean object colour and the mean floor under it.
  lemma81(stats, colours, background)
                                  Lemma 8.1 as stated: cos(μ_i − μ_b, μ_j − μ_b) with μ = the
                                  whole-image mean in pixel space (d = 3 R²) and μ_b the mean of
                                  the background actually composed over ('empty': the empty scene;
                                  'any': one object of any colour = a colour net's null label).
  pair_verdicts(stats, base, others, background)
                                  the per-pair prediction the Colours tab shows before sampling.

Why the *signed* cosine predicts the outcome (derived in `projcomp.theory.colours`): for one object
of colour a and one of colour b at random places over a floor f with per-value noise s², the
composed density p_a p_b / p_b(ackground) weights the placements where the two objects share a pixel
by exp((a − f)·(b − f) / s²) per shared pixel. Mean differences pointing the same way (cos > 0)
pull both terms onto the same pixels — one object of the blended colour a + b − f; orthogonal ones
(cos ≈ 0: Def 5.2 in the RGB channels, Lemma 8.1's equality) leave the places independent — two
objects; opposed ones (cos < 0) push them apart — two objects as well. Lemma 8.1 itself only says
cos = 0 is necessary for Factorized Conditionals; the sign is what decides blend vs two objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Optional, Sequence

import numpy as np

from ..files import AtomicFile
from .scene import CLEVR_COLORS

__all__ = ["BACKGROUNDS", "DEFAULT_THRESHOLD", "colour_statistics", "lemma81", "pair_verdicts", "histogram_figure", "preview",
           "summary", "toy_colours"]

# Signed-cosine threshold above which a pair is predicted to blend (one object of a mixed colour).
# The toy's exact target (projcomp.theory.colours) turns from two objects to one blended object as
# the per-pixel alignment (a − f)·(b − f) grows past ~s²; in cosine terms the measured cases sit far
# from the boundary (see the README's Fig 5 section), so the value is not tuned: it is the §8 default.
DEFAULT_THRESHOLD = 0.5

# Background the composition is run over -> how μ_b is estimated from renders.
BACKGROUNDS = {
    "empty": "the empty scene (the 'empty' label / empty-scene net): μ_b = mean of empty renders",
    "any": "one object of any colour (a colour net's null label): μ_b = mean over all colours' images",
}

_BINS = np.linspace(0, 256, 33)
_VERSION = 2
_LOCK = threading.RLock()


def _render_set(colour: Optional[str], n: int, resolution: int, seed: int):
    """n scenes with one object of `colour` (None: empty scenes): uint8 [n,R,R,3], object masks [n,R,R]."""
    from .render import render, render_ids
    from .scene import sample_scene

    imgs, masks = [], []
    for i in range(n):
        if colour is None:
            scene = sample_scene([seed, 8, i], num_objects=0, resolution=resolution)
        else:
            scene = sample_scene([seed, 7, CLEVR_COLORS.index(colour), i], num_objects=1, forced={"color": colour},
                                 resolution=resolution)
        imgs.append(render(scene, resolution=resolution))
        masks.append(render_ids(scene, resolution) >= 0)
    return np.stack(imgs), np.stack(masks)


def _hist(px: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 pixels -> [3, 32] per-channel densities over 0-255 (zeros if no pixels)."""
    if len(px) == 0:
        return np.zeros((3, len(_BINS) - 1))
    return np.stack([np.histogram(px[:, ch], bins=_BINS, density=True)[0] for ch in range(3)])


def colour_statistics(resolution: int = 32, n: int = 24, seed: int = 0, cache_dir: Optional[str] = None,
                      ground_albedo: Optional[float] = None) -> dict:
    """Render and measure (see the module docstring). Arrays are numpy float64, sRGB 0-255.

    With `cache_dir`, the result is stored there as .npz and reused (renders are deterministic).
    `ground_albedo` re-renders everything with another floor grey (the renderer's GROUND_ALBEDO,
    set for the duration of the call): issue 13's controlled experiment on the background."""
    if n < 1 or resolution < 8:
        raise ValueError(f"colour_statistics: n={n} must be >= 1 and resolution={resolution} >= 8")
    if ground_albedo is not None and not 0.0 < float(ground_albedo) <= 1.0:
        raise ValueError(f"ground_albedo: {ground_albedo} must be in (0, 1]")
    if ground_albedo is not None:
        import importlib

        _render = importlib.import_module(__package__ + ".render")   # the module (the package exports a function `render`)

        with _LOCK:
            old = _render.GROUND_ALBEDO
            _render.GROUND_ALBEDO = float(ground_albedo)
            try:
                out = colour_statistics(resolution, n, seed, None)
            finally:
                _render.GROUND_ALBEDO = old
        out["ground_albedo"] = float(ground_albedo)
        return out
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"colorstats_r{resolution}_n{n}_s{seed}_v{_VERSION}.npz")
        with _LOCK:
            if os.path.isfile(path):
                try:
                    with np.load(path) as z:
                        return _unpack(z)
                except (OSError, ValueError, KeyError):
                    pass
    bg_imgs, _ = _render_set(None, n, resolution, seed)
    bg = bg_imgs.astype(np.float64)
    mu_b = bg.mean(0)
    stats = {
        "resolution": int(resolution), "n": int(n), "seed": int(seed), "colors": list(CLEVR_COLORS),
        "bins": _BINS.copy(),
        "background_hist": _hist(bg_imgs.reshape(-1, 3)),
        "background_mean": mu_b,                       # μ_b [R, R, 3]
        "object_hist": np.zeros((len(CLEVR_COLORS), 3, len(_BINS) - 1)),
        "image_mean": np.zeros((len(CLEVR_COLORS),) + mu_b.shape),   # μ_c [R, R, 3]
        "object_mean": np.zeros((len(CLEVR_COLORS), 3)),             # mean object-pixel colour
        "floor_under": np.zeros((len(CLEVR_COLORS), 3)),             # μ_b at those pixels
        "object_std": np.zeros(len(CLEVR_COLORS)),                   # pooled per-value std of object pixels
        "object_pixels": np.zeros(len(CLEVR_COLORS)),
    }
    for ci, c in enumerate(CLEVR_COLORS):
        imgs, masks = _render_set(c, n, resolution, seed)
        px = imgs[masks]
        under = np.broadcast_to(mu_b, imgs.shape)[masks]
        stats["object_hist"][ci] = _hist(px)
        stats["image_mean"][ci] = imgs.astype(np.float64).mean(0)
        stats["object_mean"][ci] = px.mean(0)
        stats["floor_under"][ci] = under.mean(0)
        stats["object_std"][ci] = float(np.sqrt(((px - px.mean(0)) ** 2).mean()))
        stats["object_pixels"][ci] = len(px)
    if path:
        with _LOCK, AtomicFile(path) as f:
            np.savez(f.file, **{k: np.asarray(v) for k, v in stats.items()})
    return stats


def _unpack(z) -> dict:
    out = {k: z[k] for k in z.files}
    for k in ("resolution", "n", "seed"):
        out[k] = int(out[k])
    out["colors"] = [str(c) for c in out["colors"]]
    return out


def _check_colours(stats: dict, colours: Sequence[str]) -> list:
    bad = [c for c in colours if c not in stats["colors"]]
    if bad:
        raise ValueError(f"colours: {bad} are not CLEVR colours {stats['colors']}")
    return [stats["colors"].index(c) for c in colours]


def background_mean(stats: dict, background: str = "empty") -> np.ndarray:
    """μ_b [R, R, 3] of the background composed over (see BACKGROUNDS)."""
    if background == "empty":
        return stats["background_mean"]
    if background == "any":
        return stats["image_mean"].mean(0)     # uniform colour prior, as in the training data
    raise ValueError(f"background: {background!r} is not one of {sorted(BACKGROUNDS)}")


def lemma81(stats: dict, colours: Sequence[str], background: str = "empty") -> dict:
    """Lemma 8.1's cosines cos(μ_i − μ_b, μ_j − μ_b) on whole-image means (pixel space, d = 3R²).

    Also returns the same cosines on per-channel image means (d = 3), and on the mean object colour
    minus the floor under it (RGB, the quantity the toy's exact target depends on)."""
    import torch

    from ..heuristic import mean_difference_cosines

    idx = _check_colours(stats, colours)
    mu_b = background_mean(stats, background)
    names, M = mean_difference_cosines({c: torch.from_numpy(stats["image_mean"][i]) for c, i in zip(colours, idx)},
                                       torch.from_numpy(mu_b))
    _, Mch = mean_difference_cosines({c: torch.from_numpy(stats["image_mean"][i].mean((0, 1))) for c, i in zip(colours, idx)},
                                     torch.from_numpy(mu_b.mean((0, 1))))
    _, Mobj = mean_difference_cosines({c: torch.from_numpy(stats["object_mean"][i] - stats["floor_under"][i]) for c, i in zip(colours, idx)},
                                      torch.zeros(3, dtype=torch.float64))
    return {"names": names, "background": background, "matrix": M, "channel_matrix": Mch, "object_matrix": Mobj}


def pair_verdicts(stats: dict, base: str, others: Sequence[str], background: str = "empty",
                  threshold: float = DEFAULT_THRESHOLD) -> list:
    """One row per pair base+other: Lemma 8.1 cosines and the prediction (two objects vs blend).

    `cos` (whole-image means, pixel space) drives the verdict: composes = cos <= threshold (the
    sign matters, see the module docstring). `factorized` is Lemma 8.1's own necessary condition
    |cos| <= threshold. Over the 'any' background (a null label, Bayes-like) the derivation does not
    apply: p_u places exactly one object, so Def 5.2 fails whatever the colours (§3, Fig 3B) and
    the prediction is a failure for every pair; the cosines are still reported."""
    rows = []
    for other in others:
        L = lemma81(stats, [base, other], background)
        cos = float(L["matrix"][0, 1])
        if background == "any":
            composes, predicts = False, "fails (Bayes background: one object of any colour)"
        else:
            composes = cos <= threshold
            predicts = "two objects" if composes else "one blended object"
        rows.append({"pair": f"{base}+{other}", "cos": cos, "cos_channel_means": float(L["channel_matrix"][0, 1]),
                     "cos_object_minus_floor": float(L["object_matrix"][0, 1]),
                     "predicts": predicts, "composes": composes, "factorized": abs(cos) <= threshold})
    return rows


def albedo_matching(stats: dict, colour: str = "yellow") -> float:
    """The floor albedo at which the floor under the objects has `colour`'s mean R/G level (linear
    light scales with the albedo): the paper's premise that yellow differs from the floor only in B."""
    from .render import GROUND_ALBEDO, srgb_to_linear

    target = float(srgb_to_linear(np.array(stats["object_mean"][stats["colors"].index(colour)][:2].mean() / 255.0)))
    floor = float(srgb_to_linear(np.array(stats["floor_under"].mean() / 255.0)))
    return float(stats.get("ground_albedo", GROUND_ALBEDO)) * target / floor


def summary(stats: dict) -> dict:
    """JSON-ready numbers (histograms, mean colours, floor) without the per-pixel means."""
    return {
        "resolution": stats["resolution"], "scenes_per_colour": stats["n"], "seed": stats["seed"],
        "bins": stats["bins"].tolist(),
        "background_hist": stats["background_hist"].round(6).tolist(),
        "object_hist": {c: stats["object_hist"][i].round(6).tolist() for i, c in enumerate(stats["colors"])},
        "object_mean_rgb": {c: stats["object_mean"][i].round(2).tolist() for i, c in enumerate(stats["colors"])},
        "floor_under_rgb": {c: stats["floor_under"][i].round(2).tolist() for i, c in enumerate(stats["colors"])},
        "background_mean_rgb": stats["background_mean"].reshape(-1, 3).mean(0).round(2).tolist(),
        "object_std": {c: round(float(stats["object_std"][i]), 2) for i, c in enumerate(stats["colors"])},
    }


def toy_colours(stats: dict) -> tuple:
    """(floor [3], {colour: rgb [3]}) in the nets' [-1, 1] scale for the exact-score toy: the floor
    is the mean floor under the objects, each colour = floor + (its mean object colour − the floor
    under it), so the toy keeps exactly the measured object-minus-floor differences."""
    floor = stats["floor_under"].mean(0)
    cols = {c: floor + stats["object_mean"][i] - stats["floor_under"][i] for i, c in enumerate(stats["colors"])}
    to = lambda v: np.asarray(v, np.float64) / 127.5 - 1.0  # noqa: E731
    return to(floor), {c: to(v) for c, v in cols.items()}


def histogram_figure(stats: dict, highlight: Sequence[str] = ("yellow",), title: Optional[str] = None):
    """Fig 5 (right): per-channel histograms of object pixels per colour, the empty background in
    grey (filled); `highlight` drawn bold. Returns a matplotlib Figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .scene import CLEVR_RGB

    bins = stats["bins"]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.8), dpi=90)
    for ch, ax in enumerate(axes):
        ax.stairs(stats["background_hist"][ch], bins, fill=True, color="0.8", label="empty background")
        for i, c in enumerate(stats["colors"]):
            bold = c in highlight
            ax.stairs(stats["object_hist"][i][ch], bins, color=np.array(CLEVR_RGB[c]) / 255.0,
                      lw=2.4 if bold else 1.0, alpha=1.0 if bold else 0.7, label=c)
        ax.set_title("RGB"[ch] + " channel (object pixels; grey = empty scene)", fontsize=8)
        ax.set_xlim(0, 256)
        ax.tick_params(labelsize=7)
    axes[-1].legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def stats_key(stats: dict) -> str:
    """Short content hash of the measured means (for configs: which statistics a verdict used)."""
    h = hashlib.sha256(json.dumps(summary(stats), sort_keys=True).encode()).hexdigest()
    return h[:12]


def preview(colours: Sequence[str], resolution: int = 32, background: str = "empty", n: Optional[int] = None,
            cache_dir: Optional[str] = None, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Everything the Colours tab shows before sampling (gradio-free): the histogram figure, the
    Lemma 8.1 cosine matrix of the chosen colours over `background`, one verdict row per pair and
    a Markdown summary. `n` defaults to $PROJCOMP_COLOR_SAMPLES or 24 scenes per colour."""
    n = int(n or os.environ.get("PROJCOMP_COLOR_SAMPLES") or 24)
    stats = colour_statistics(resolution, n=n, cache_dir=cache_dir)
    colours = [c for c in colours if c in stats["colors"]]
    out = {"stats": stats, "figure": histogram_figure(stats, highlight=colours), "names": colours, "matrix": None, "pairs": []}
    if len(colours) < 2:
        out["markdown"] = "Pick two or more colours to see the prediction."
        return out
    L = lemma81(stats, colours, background)
    out["names"], out["matrix"] = L["names"], L["matrix"]
    for i, a in enumerate(colours):
        out["pairs"] += pair_verdicts(stats, a, colours[i + 1:], background, threshold)
    ok = all(p["composes"] for p in out["pairs"])
    bg = "the empty scene" if background == "empty" else "one object of any colour (null label)"
    darker = ""
    if bool((stats["object_mean"] < stats["floor_under"]).all()):
        darker = (" In these renders the floor is lighter than every colour in all three channels, so every "
                  "colour's difference from it points the same way (no pair differs in disjoint channels).")
    rows = "\n".join(f"| {p['pair']} | {p['cos']:+.2f} | {p['cos_object_minus_floor']:+.2f} | {p['predicts']} |" for p in out["pairs"])
    out["markdown"] = (
        f"**Prediction: {'one object of each colour' if ok else 'blend / failure'}** "
        f"({'every pair' if ok else 'not every pair'} has cos ≤ {threshold} over {bg}).\n\n"
        "Lemma 8.1 on our renders: cos(μ_a − μ_b, μ_c − μ_b) of whole-image means, μ_b = the background composed "
        "over. cos ≈ 0 (colours differing from the floor in disjoint RGB channels, Def 5.2) leaves the two objects' "
        "places independent; cos > 0 pulls both terms onto one object of a blended colour." + darker + "\n\n"
        "| pair | cos (images) | cos (object − floor, RGB) | predicts |\n|---|---|---|---|\n" + rows)
    return out
