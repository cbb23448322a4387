"""The Theory lab tab, without UI code: §6.5's 2-D Gaussian experts with movable means and App. G
eqs. 17/18 (Fig 12), on exact scores (no networks)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..sampling import SamplerConfig, sample
from .common import InputError, integer, number

EXAMPLES = [
    dict(label="split experts: both properties", kind="gauss2d", mode="split", means=(-2, 0, 0, 2), samples=256),
    dict(label="shared experts: a hybrid", kind="gauss2d", mode="shared", means=(-2, 0, 2, 0), samples=256),
    dict(label="App. G eq. 17, coords 0 2 4 6", kind="appg", which="eq17", coords=["0", "2", "4", "6"], samples=64),
    dict(label="App. G eq. 18 (cluttered)", kind="appg", which="eq18", coords=["1", "3", "5"], samples=64),
]


def check_gauss2d(m1x, m1y, m2x, m2y, mode, samples) -> tuple:
    names = ("expert 1 mean x1", "expert 1 mean x2", "expert 2 mean x1", "expert 2 mean x2")
    vals = [number(v, n, -5, 5) for v, n in zip((m1x, m1y, m2x, m2y), names)]
    if mode not in ("split", "shared"):
        raise InputError("experts", f"{mode!r} is not 'split' or 'shared'")
    return vals, mode, integer(samples, "samples", 16, 1024)


def gauss2d_lab(mean1: Sequence[float], mean2: Sequence[float], mode: str = "split", num_samples: int = 256,
                steps: int = 32):
    """§6.5: two 2-D Gaussian experts over the background N(0, 4I), composed (Def 5.1).
    `split`: expert 1 narrow in x1, expert 2 narrow in x2 (factorized: samples co-occur);
    `shared`: both narrow in x1 (a hybrid). Returns (figure, numbers)."""
    import matplotlib.pyplot as plt
    from ..theory import composed_denoiser, composition, composition_log_prob, gaussian
    from ..theory.checks import NotNormalizableError
    from ..theory.toys import single_thread

    p_b = gaussian([0.0, 0.0], [4.0, 4.0])
    e1 = gaussian(list(map(float, mean1)), [1.0, 4.0])
    e2 = gaussian(list(map(float, mean2)), [4.0, 1.0] if mode == "split" else [1.0, 4.0])
    lim = 6.0
    g = torch.linspace(-lim, lim, 121, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=90)
    with single_thread():
        try:
            C = composition(p_b, [e1, e2])
            lp = composition_log_prob(p_b, [e1, e2], pts).reshape(len(g), len(g))
            xs = sample(composed_denoiser(p_b, [e1, e2]), range(int(num_samples)), (2,),
                        SamplerConfig(num_steps=int(steps))).double()
        except NotNormalizableError as e:
            raise InputError("experts", f"this composition is not normalisable: {e}") from None
        dens = torch.exp(lp - lp.max())
        ax.contourf(g, g, dens.numpy(), levels=12, cmap="Blues")
        for p, col in ((p_b, "0.5"), (e1, "tab:red"), (e2, "tab:green")):
            ax.contour(g, g, torch.exp(p.log_prob(pts)).reshape(len(g), len(g)).numpy(), levels=3, colors=col,
                       linestyles="--", linewidths=0.8)
    ax.scatter(xs[:, 0], xs[:, 1], s=3, c="k", alpha=0.5, label="Heun samples")
    m, sm = C.mean(), xs.mean(0)
    ax.plot([float(m[0])], [float(m[1])], "r*", ms=12, label=f"exact mean ({float(m[0]):.2f}, {float(m[1]):.2f})")
    ax.plot([float(sm[0])], [float(sm[1])], "kx", ms=9, mew=2, label=f"sample mean ({float(sm[0]):.2f}, {float(sm[1]):.2f})")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"{mode} experts: background grey,\nexpert 1 red, expert 2 green", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    numbers = {"mode": mode, "exact_mean": [round(float(v), 3) for v in m],
               "sample_mean": [round(float(v), 3) for v in sm],
               "exact_cov": [[round(float(v), 3) for v in r] for r in C.cov()]}
    return fig, numbers


def gauss2d_markdown(num: dict) -> str:
    mode = num["mode"]
    return (f"**{mode}**: exact composed mean ({num['exact_mean'][0]:.2f}, {num['exact_mean'][1]:.2f}), "
            f"sample mean ({num['sample_mean'][0]:.2f}, {num['sample_mean'][1]:.2f}), exact covariance "
            f"{num['exact_cov']}. " + ("Split experts each constrain their own coordinate (Factorized "
            "Conditionals): the composition has both properties at once." if mode == "split" else
            "Shared experts both constrain x1: the composition is a compromise (a hybrid), not both."))


def check_appg(which, coords, samples) -> tuple:
    if which not in ("eq17", "eq18"):
        raise InputError("toy", f"{which!r} is not 'eq17' or 'eq18'")
    try:
        idx = sorted({int(c) for c in (coords or [])})
    except (TypeError, ValueError):
        raise InputError("coordinates", f"{coords!r} are not coordinate numbers 0-7") from None
    if not idx:
        raise InputError("coordinates", "choose at least one coordinate to compose")
    if not all(0 <= i < 8 for i in idx):
        raise InputError("coordinates", f"{idx} must lie in 0-7")
    return which, idx, integer(samples, "samples", 8, 512)


def appg(which: str, idx: Sequence[int], num_seeds: int = 64, steps: int = 24, clutter: float = 0.5) -> tuple:
    """App. G (Fig 12): eq. 17 (empty vs Bayes background) or eq. 18 (cluttered vs Bayes).
    Returns (figure, markdown)."""
    from ..theory.toys import toy_eq17, toy_eq18

    if which == "eq17":
        num, fig = toy_eq17(num_seeds=int(num_seeds), compose_idx=list(idx), num_steps=int(steps))
        a, b = num.get("empty", {}), num.get("bayes", {})
        md = "eq. 17 (p_i = δ(e_i)): empty background vs Bayes (p_u)."
    else:
        num, fig = toy_eq18(num_seeds=int(num_seeds), compose_idx=list(idx), num_steps=int(steps), clutter=float(clutter))
        a, b = num.get("cluttered", {}), num.get("bayes", {})
        md = "eq. 18: independently cluttered background vs Bayes."
    if a and b:
        md += (f" Mean of the composed coordinates: **{a['composed_mean']:.2f}** vs **{b['composed_mean']:.2f}**; "
               f"all requested coordinates on in {100 * a['all_composed_on_rate']:.0f}% vs "
               f"{100 * b['all_composed_on_rate']:.0f}% of samples.")
    return fig, md
