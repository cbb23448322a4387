"""Fig 5 with exact scores: colour composition on a strip of pixels (issue 13).

The scene is a strip of P pixels × 3 channels (laid out as an image [3, 1, P]): a floor of colour f
and, for a colour term p_c, one object of colour c covering `width` pixels at a uniformly random
place; every value carries independent Gaussian noise of std s. So

    p_b = N(f ⊗ 1, s² I)                             (the empty scene)
    p_c = (1/K) Σ_j N(floor with c at j..j+w−1, s² I)  (K = P − w + 1 places)

and all three have closed-form noised denoisers (`GaussianMixture`). They are composed with
`projcomp.compose` (Def 5.1 over the empty scene, w_i = 1) and sampled with `projcomp.sampling`
exactly as the nets are; each sample is then read pixel by pixel (nearest of floor, a, b and the
blend a + b − f) and counted as two objects (one a, one b), one blended object, one object, etc.

The exact target. p_a p_b / p_bg is again a mixture over pairs of places (i, j); on a pixel both
objects cover, N(x; a) N(x; b) / N(x; f) = N(x; a + b − f) · exp((a − f)·(b − f) / s²). So

    C[p](i, j) ∝ exp(overlap(i, j) · (a − f)·(b − f) / s²),

i.e. the composition places the two objects independently iff (a − f) ⟂ (b − f) — Lemma 8.1's
mean-difference orthogonality, which holds exactly when a and b differ from the floor in disjoint
channels (Def 5.2 in the RGB feature space, the paper's Fig 5 argument). Aligned differences pull
the two objects onto the same pixels (one object of colour a + b − f: a blend); opposed ones push
them apart. `target_rates` gives these probabilities in closed form; the sampler is run to see
whether it reaches them (§7).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..sampling import SamplerConfig, sample
from ..stats import wilson
from .checks import composed_denoiser
from .distributions import GaussianMixture, TheoryError

__all__ = ["strip_distributions", "target_rates", "classify_strips", "colour_toy", "OUTCOMES"]

OUTCOMES = ("two_objects", "one_blended", "one_object", "none", "other")


def _check(floor, colour, pixels, width, noise):
    floor = torch.as_tensor(np.asarray(floor, np.float64)).reshape(3)
    colour = torch.as_tensor(np.asarray(colour, np.float64)).reshape(3)
    if not (1 <= width < pixels):
        raise TheoryError(f"width: {width} must be >= 1 and < pixels={pixels}")
    if not noise > 0:
        raise TheoryError(f"noise: {noise} must be > 0")
    return floor, colour


def strip_distributions(floor, colours: Mapping[str, Sequence[float]], pixels: int = 16, width: int = 1, noise: float = 0.1):
    """(p_b, {name: p_c}) on R^{3·pixels}, layout [3, pixels] (channel-major, like an image [3, 1, P])."""
    out = {}
    f = None
    for name, c in colours.items():
        f, c = _check(floor, c, pixels, width, noise)
        K = pixels - width + 1
        means = f[:, None].repeat(1, pixels)[None].repeat(K, 1, 1)      # [K, 3, P]
        for j in range(K):
            means[j, :, j:j + width] = c[:, None]
        out[name] = GaussianMixture(torch.ones(K), means.reshape(K, -1), noise**2)
    if f is None:
        f, _ = _check(floor, floor, pixels, width, noise)
    p_b = GaussianMixture(torch.ones(1), f[:, None].repeat(1, pixels).reshape(1, -1), noise**2)
    return p_b, out


def target_rates(floor, a, b, pixels: int = 16, width: int = 1, noise: float = 0.1) -> dict:
    """Closed-form C[p] over the empty strip: probability that the two objects share no pixel
    (two objects) and the mean overlap, from C(i, j) ∝ exp(overlap · (a − f)·(b − f) / s²)."""
    f, a = _check(floor, a, pixels, width, noise)
    _, b = _check(floor, b, pixels, width, noise)
    dot = float((a - f) @ (b - f))
    K = pixels - width + 1
    i = np.arange(K)
    ov = np.clip(width - np.abs(i[:, None] - i[None]), 0, None).astype(np.float64)
    logw = ov * dot / noise**2
    w = np.exp(logw - logw.max())
    w /= w.sum()
    return {"dot": dot, "dot_over_s2": dot / noise**2,
            "cos": dot / max(float((a - f).norm() * (b - f).norm()), 1e-300),
            "two_objects": float(w[ov == 0].sum()), "mean_overlap": float((w * ov).sum() / width)}


def classify_strips(x: torch.Tensor, floor, a, b) -> list:
    """Read samples [B, 3, 1, P] (or [B, 3·P]) pixel by pixel: nearest of floor / a / b / blend
    (a + b − f); runs of equal non-floor labels are objects. Returns one outcome per sample
    (see OUTCOMES) with the labels."""
    f = np.asarray(floor, np.float64).reshape(3)
    a = np.asarray(a, np.float64).reshape(3)
    b = np.asarray(b, np.float64).reshape(3)
    protos = np.stack([f, a, b, a + b - f])                       # 0 floor, 1 a, 2 b, 3 blend
    x = np.asarray(torch.as_tensor(x, dtype=torch.float64)).reshape(len(x), 3, -1).transpose(0, 2, 1)  # [B, P, 3]
    lab = ((x[:, :, None, :] - protos[None, None]) ** 2).sum(-1).argmin(-1)   # [B, P]
    out = []
    for row in lab:
        segs = [int(v) for k, v in enumerate(row) if v != 0 and (k == 0 or row[k - 1] != v)]
        if sorted(segs) == [1, 2]:
            kind = "two_objects"
        elif segs == [3]:
            kind = "one_blended"
        elif len(segs) == 1:
            kind = "one_object"
        elif not segs:
            kind = "none"
        else:
            kind = "other"
        out.append({"outcome": kind, "objects": ["floor a b blend".split()[s] for s in segs]})
    return out


def colour_toy(floor, colours: Mapping[str, Sequence[float]], base: str = "yellow", others: Optional[Sequence[str]] = None,
               num_seeds: int = 128, pixels: int = 16, width: int = 1, noise: float = 0.1, num_steps: int = 32,
               solver: str = "heun", keep: int = 16) -> dict:
    """Compose `base` with each other colour over the empty strip; sample `num_seeds` seeds per pair.

    Returns {"config", "pairs": [{pair, target (closed form), counts, rates + 95 % Wilson intervals}],
    "samples": {pair: first `keep` samples [keep, 3, 1, P]} }."""
    if base not in colours:
        raise TheoryError(f"base: {base!r} is not among the colours {sorted(colours)}")
    others = [c for c in colours if c != base] if others is None else list(others)
    cfg = SamplerConfig(num_steps=num_steps, solver=solver)

    rows, keep_samples = [], {}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for other in others:
            p_b, ps = strip_distributions(floor, {base: colours[base], other: colours[other]}, pixels, width, noise)
            D = composed_denoiser(p_b, [ps[base], ps[other]])
            x = sample(D, seeds=range(num_seeds), shape=(3, 1, pixels), config=cfg)
            res = classify_strips(x, floor, colours[base], colours[other])
            counts = {k: sum(r["outcome"] == k for r in res) for k in OUTCOMES}
            row = {"pair": f"{base}+{other}", "seeds": num_seeds,
                   "target": target_rates(floor, colours[base], colours[other], pixels, width, noise)}
            for k in OUTCOMES:
                lo, hi = wilson(counts[k], num_seeds)
                row[k] = {"count": counts[k], "rate": counts[k] / num_seeds, "ci95": [lo, hi]}
            rows.append(row)
            keep_samples[row["pair"]] = x[:keep]
    finally:
        torch.set_num_threads(n)
    config = {"floor": [float(v) for v in np.asarray(floor).reshape(3)],
              "colours": {k: [float(v) for v in np.asarray(c).reshape(3)] for k, c in colours.items()},
              "base": base, "others": others, "num_seeds": num_seeds, "pixels": pixels, "width": width, "noise": noise,
              "sampler": {"num_steps": num_steps, "solver": solver}}
    return {"config": config, "pairs": rows, "samples": keep_samples}


def strips_to_image(x: torch.Tensor, scale: int = 10) -> np.ndarray:
    """Samples [B, 3, 1, P] in [-1, 1] -> uint8 image, one strip per row (for grids)."""
    a = ((torch.as_tensor(x).reshape(len(x), 3, -1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    a = a.transpose(0, 2, 1)                                     # [B, P, 3]
    B, P, _ = a.shape
    out = np.full((B * (scale + 1) + 1, P * scale + 2, 3), 255, np.uint8)
    for i in range(B):
        out[1 + i * (scale + 1): 1 + i * (scale + 1) + scale, 1:1 + P * scale] = a[i].repeat(scale, 0)[None]
    return out
