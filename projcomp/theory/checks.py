"""Exact compositions and the paper's checks on them.

  composition(p_b, ps)           C[p] (Def 5.1) in closed form: the product of Thm 5.3(a) when masks are
                                 given (Factorized Conditionals), or Gaussian precision algebra when the
                                 background is one Gaussian (experts may be Gaussian mixtures).
  composition_log_prob           the density form of Def 5.1, log p_b + Σ w_i (log p_i − log p_b),
                                 unnormalised, for any exact p (plots).
  factorized_conditionals        Def 5.2 for given masks — exactly from log-densities, or from samples.
  is_projective                  Def 4.1: Π_i♯p̂ = Π_i♯p_i, compared per projected coordinate.
  commute_gap                    C[p^t] vs N_t[C[p]] (§7): the composed denoiser of the noised
                                 distributions against the exact denoiser of the noised composition.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..compose import Term, compose
from .distributions import ExactDistribution, GaussianMixture, Product, TheoryError, _DT

__all__ = [
    "NotNormalizableError",
    "composition",
    "composition_log_prob",
    "composed_denoiser",
    "factorized_conditionals",
    "is_projective",
    "commute_gap",
]


class NotNormalizableError(TheoryError):
    """C[p] ∝ p_b ∏ (p_i / p_b)^{w_i} has no finite normaliser (precision P not positive definite)."""


def _weights(ps, weights) -> list[float]:
    if weights is None:
        return [1.0] * len(ps)
    weights = [float(w) for w in weights]
    if len(weights) != len(ps):
        raise TheoryError(f"weights: {len(weights)} weights for {len(ps)} conditionals")
    return weights


def composed_denoiser(p_b: ExactDistribution, ps: Sequence[ExactDistribution], weights=None):
    """The composed denoiser D_b + Σ w_i (D_i − D_b) built with projcomp.compose (Def 5.1)."""
    return compose(Term(p_b, name="background"), [Term(p, weight=w, name=f"p_{i}") for i, (p, w) in enumerate(zip(ps, _weights(ps, weights)))])


def composition_log_prob(p_b: ExactDistribution, ps: Sequence[ExactDistribution], x: torch.Tensor, sigma=0.0, weights=None) -> torch.Tensor:
    """log of p_b^σ(x) ∏_i (p_i^σ(x) / p_b^σ(x))^{w_i} — Def 5.1's density form, unnormalised.

    At σ > 0 this is the density of C[p^σ] (the composition of the noised laws, what a sampler with
    composed scores follows), not of N_σ[C[p]]; §7 is about the difference."""
    lb = p_b.log_prob(x, sigma)
    out = lb.clone()
    for p, w in zip(ps, _weights(ps, weights)):
        out = out + w * (p.log_prob(x, sigma) - lb)
    return out


# ---------------------------------------------------------------------------------------------
# Closed-form compositions.


def _precision_of(cov: torch.Tensor, what: str) -> torch.Tensor:
    lam = torch.linalg.eigvalsh(cov)
    if float(lam.min()) <= 1e-12:
        raise TheoryError(f"{what}: a singular (point-mass) component has no density ratio; use masks= (Thm 5.3) instead")
    return torch.linalg.inv(cov)


def _gaussian_composition(p_b: GaussianMixture, ps: Sequence[GaussianMixture], ws: list[float]) -> GaussianMixture:
    """C ∝ N_b^{1−Σw} ∏_i (Σ_j π_ij N_ij)^{w_i}, expanded into a mixture over component choices.

    For one choice (j_1..j_k), with c = (1 − Σw, w_1, ..., w_k) and Λ = Σ⁻¹ of each factor,
        P = Σ c Λ,   h = Σ c Λ μ,   mean = P⁻¹ h,   cov = P⁻¹ (precision algebra, §6.5),
    and the factor's mass ∏ π · ∫ ∏ N^c = exp(½ hᵀP⁻¹h − ½ Σ c μᵀΛμ − ½ Σ c log|2πΣ|) (2π)^{d/2} |P|^{-1/2}.
    """
    if p_b.num_components != 1:
        raise TheoryError("p_b: the closed form needs a single-Gaussian background (got a "
                          f"{p_b.num_components}-component mixture); give masks= for factorized conditionals")
    for i, (p, w) in enumerate(zip(ps, ws)):
        if p.num_components > 1 and w != 1.0:
            raise TheoryError(f"weights[{i}]: {w} — a mixture expert raised to a power ≠ 1 is not a mixture")
    d = p_b.dim
    Lb = _precision_of(p_b.covs[0], "p_b")
    facs_b = (1.0 - sum(ws), Lb, p_b.means[0], torch.logdet(2 * math.pi * p_b.covs[0]))
    prec = [[_precision_of(p.covs[j], f"ps[{i}]") for j in range(p.num_components)] for i, p in enumerate(ps)]
    logw, means, covs = [], [], []
    for combo in itertools.product(*[range(p.num_components) for p in ps]):
        facs = [facs_b] + [(w, prec[i][j], p.means[j], torch.logdet(2 * math.pi * p.covs[j])) for i, (p, w, j) in enumerate(zip(ps, ws, combo))]
        P = sum(c * L for c, L, _, _ in facs)
        h = sum(c * L @ m for c, L, m, _ in facs)
        lam = torch.linalg.eigvalsh(0.5 * (P + P.T))
        if float(lam.min()) <= 0:
            raise NotNormalizableError(
                f"composition is not normalizable: precision P = Σ w_i Σ_i⁻¹ + (1 − Σw) Σ_b⁻¹ has eigenvalue {float(lam.min()):.4g} <= 0 "
                f"(component choice {combo}); the background is narrower than the experts allow")
        C = torch.linalg.inv(P)
        m = C @ h
        lz = 0.5 * h @ m - 0.5 * sum(c * (mu @ L @ mu) for c, L, mu, _ in facs) - 0.5 * sum(c * ld for c, _, _, ld in facs)
        lz = lz + 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(P)
        lz = lz + sum(float(torch.log(p.weights[j])) for p, j in zip(ps, combo))
        logw.append(lz)
        means.append(m)
        covs.append(0.5 * (C + C.T))
    logw = torch.stack(logw)
    return GaussianMixture(torch.softmax(logw, 0), torch.stack(means), torch.stack(covs))


def composition(p_b: ExactDistribution, ps: Sequence[ExactDistribution], weights=None, masks: Optional[Sequence[Sequence[int]]] = None) -> ExactDistribution:
    """C[p] (Def 5.1) in closed form.

    masks given: the vector must be Factorized Conditionals for them (checked, Def 5.2); then
    C[p] = p_b(x|_{M_b}) ∏_i p_i(x|_{M_i}) (Thm 5.3(a)), returned as a `Product`. Unit weights only.
    masks None: p_b must be one non-degenerate Gaussian and each p_i a Gaussian mixture; the result
    is a Gaussian mixture by precision algebra, or NotNormalizableError when P is not PD.
    """
    ws = _weights(ps, weights)
    if masks is not None:
        if any(w != 1.0 for w in ws):
            raise TheoryError(f"weights: {ws} — the product form of Thm 5.3(a) is for unit weights")
        chk = factorized_conditionals(p_b, ps, masks)
        if not chk["factorized"]:
            raise TheoryError(f"masks: the vector is not Factorized Conditionals for masks {masks} (Def 5.2): {chk['summary']}")
        M_b = chk["background_mask"]
        blocks = ([(M_b, p_b.marginal(M_b))] if M_b else []) + [(list(M), p.marginal(M)) for M, p in zip(masks, ps)]
        return Product(blocks)
    gms = [p.to_gaussian_mixture() for p in [p_b, *ps]]
    return _gaussian_composition(gms[0], gms[1:], ws)


# ---------------------------------------------------------------------------------------------
# Def 5.2: Factorized Conditionals.


def _check_masks(masks, d):
    masks = [sorted(int(i) for i in M) for M in masks]
    flat = [i for M in masks for i in M]
    if len(set(flat)) != len(flat):
        raise TheoryError(f"masks: {masks} are not disjoint (Def 5.2 needs disjoint M_i)")
    if any(not 0 <= i < d for i in flat):
        raise TheoryError(f"masks: {masks} index outside range({d})")
    M_b = [i for i in range(d) if i not in set(flat)]
    return masks, M_b


def factorized_conditionals(p_b, ps, masks, sigmas: Sequence[float] = (0.3, 1.0), n: int = 256, tol: Optional[float] = None, seed: int = 0) -> dict:
    """Def 5.2 for masks M_1..M_k (M_b = the rest):
      (1) p_b(x) = p_b(x|_{M_b}) ∏_j p_b(x|_{M_j})     (background independent across blocks)
      (2) p_i(x) = p_i(x|_{M_i}) p_b(x|_{M_i^c})         (p_i is the background off M_i, independently)

    Exact distributions: both identities are tested on log-densities of the noised laws at `sigmas`
    (Gaussian noise is coordinate-wise and convolution is injective, so the identities hold for p
    iff they hold for p^σ; this also covers point masses), at n test points drawn from every
    p_j^σ; tol defaults to 1e-6 (max |Δ log p|).
    Samples (Tensors [n, d]): necessary conditions only — (1) max |correlation| between coordinates
    of different blocks of p_b, (2) max 1-D Wasserstein distance between p_i and p_b on each
    coordinate off M_i, and max |correlation| between M_i and the rest under p_i; tol defaults to 0.1.
    """
    exact = isinstance(p_b, ExactDistribution)
    d = p_b.dim if exact else torch.as_tensor(p_b).shape[1]
    masks, M_b = _check_masks(masks, d)
    if len(masks) != len(ps):
        raise TheoryError(f"masks: {len(masks)} masks for {len(ps)} conditionals")
    blocks = [M for M in [M_b, *masks] if M]
    if exact:
        tol = 1e-6 if tol is None else tol
        g = torch.Generator().manual_seed(seed)
        bg_err, cond_err = 0.0, [0.0] * len(ps)
        for s in sigmas:
            pts = torch.cat([p.sample(n, g) for p in [p_b, *ps]])
            x = pts + s * torch.randn(pts.shape, generator=g, dtype=_DT)
            lb = p_b.log_prob(x, s)
            split = sum(p_b.marginal(M).log_prob(x[:, M], s) for M in blocks)
            bg_err = max(bg_err, float((lb - split).abs().max()))
            for i, (p, M) in enumerate(zip(ps, masks)):
                rest = [j for j in range(d) if j not in set(M)]
                rhs = p.marginal(M).log_prob(x[:, M], s) + (p_b.marginal(rest).log_prob(x[:, rest], s) if rest else 0.0)
                cond_err[i] = max(cond_err[i], float((p.log_prob(x, s) - rhs).abs().max()))
        kind = "exact log-density"
    else:
        tol = 0.1 if tol is None else tol
        from scipy.stats import wasserstein_distance

        xb = torch.as_tensor(p_b, dtype=_DT)
        bg_err = _cross_block_corr(xb, blocks)
        cond_err = []
        for xi, M in zip(ps, masks):
            xi = torch.as_tensor(xi, dtype=_DT)
            rest = [j for j in range(d) if j not in set(M)]
            w1 = max((wasserstein_distance(xi[:, j].numpy(), xb[:, j].numpy()) for j in rest), default=0.0)
            cond_err.append(max(w1, _cross_block_corr(xi, [M, rest]) if rest else 0.0))
        kind = "samples (necessary conditions)"
    ok = bg_err <= tol and all(e <= tol for e in cond_err)
    bad = ([f"background not independent across blocks (err {bg_err:.3g})"] if bg_err > tol else []) + [
        f"p_{i} differs from the background off M_{i} (err {e:.3g})" for i, e in enumerate(cond_err) if e > tol]
    return {"factorized": ok, "method": kind, "tol": tol, "background_error": bg_err, "conditional_errors": cond_err,
            "masks": masks, "background_mask": M_b, "summary": "; ".join(bad) if bad else "Def 5.2 holds"}


def _cross_block_corr(x: torch.Tensor, blocks) -> float:
    std = x.std(0)
    live = std > 1e-12
    xc = (x - x.mean(0)) / torch.where(live, std, torch.ones_like(std))
    corr = (xc.T @ xc) / (x.shape[0] - 1)
    worst = 0.0
    for a, b in itertools.combinations(blocks, 2):
        sub = corr[a][:, b] * live[a][:, None] * live[b][None, :]
        worst = max(worst, float(sub.abs().max()))
    return worst


# ---------------------------------------------------------------------------------------------
# Def 4.1: projective composition.


def is_projective(samples_hat: torch.Tensor, samples: Sequence[torch.Tensor], projections: Sequence, tol: float = 0.05) -> dict:
    """Def 4.1 on samples: Π_i♯p̂ = Π_i♯p_i for every i, compared per projected coordinate.

    projections[i] is a list of coordinates (Π_i(x) = x|_{M_i}) or a callable [n, d] -> [n, m].
    For each coordinate: mean and std differences, the 1-D Wasserstein distance W1 and the
    two-sample KS statistic (scipy). Projective iff every W1 <= tol.
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    if len(samples) != len(projections):
        raise TheoryError(f"projections: {len(projections)} projections for {len(samples)} sample sets")
    xh = torch.as_tensor(samples_hat, dtype=_DT).reshape(len(samples_hat), -1)
    terms = []
    for i, (xi, P) in enumerate(zip(samples, projections)):
        xi = torch.as_tensor(xi, dtype=_DT).reshape(len(xi), -1)
        proj = (lambda x, P=P: x[:, list(P)]) if not callable(P) else P
        a, b = torch.as_tensor(proj(xh)).double(), torch.as_tensor(proj(xi)).double()
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        w1 = [float(wasserstein_distance(a[:, j].numpy(), b[:, j].numpy())) for j in range(a.shape[1])]
        ks = [float(ks_2samp(a[:, j].numpy(), b[:, j].numpy()).statistic) for j in range(a.shape[1])]
        terms.append({"w1": w1, "ks": ks, "mean_diff": (a.mean(0) - b.mean(0)).tolist(), "std_diff": (a.std(0) - b.std(0)).tolist()})
    max_w1 = max(max(t["w1"]) for t in terms)
    return {"projective": max_w1 <= tol, "tol": tol, "max_w1": max_w1, "max_ks": max(max(t["ks"]) for t in terms), "terms": terms}


# ---------------------------------------------------------------------------------------------
# §7: does composing commute with noising?


def commute_gap(p_b: ExactDistribution, ps: Sequence[ExactDistribution], sigmas: Sequence[float], target: Optional[ExactDistribution] = None,
                weights=None, masks=None, n: int = 512, seed: int = 0) -> dict:
    """C[p^σ] vs N_σ[C[p]] at each σ (Thm 5.3(c), §7, Lemma 7.2).

    At x ~ N_σ[C[p]], compares the composed denoiser of the noised laws, D_b + Σ w_i (D_i − D_b)
    (built with projcomp.compose — what a sampler follows), with the exact denoiser of the noised
    composition E_{C[p]}[x0 | x_σ]. Reports rms = sqrt(mean ||ΔD||² / d) (data units) and
    rel = rms / σ (= σ · rms score error per coordinate). Zero for factorized conditionals in pixel
    space or after an orthogonal map; nonzero for a non-orthogonal feature map.
    `target` defaults to composition(p_b, ps, weights, masks).
    """
    target = composition(p_b, ps, weights=weights, masks=masks) if target is None else target
    D_comp = composed_denoiser(p_b, ps, weights)
    g = torch.Generator().manual_seed(seed)
    x0 = target.sample(n, g)
    rms, rel = [], []
    for s in sigmas:
        x = x0 + float(s) * torch.randn(x0.shape, generator=g, dtype=_DT)
        sig = torch.full((n,), float(s), dtype=_DT)
        diff = D_comp(x, sig).double() - target.denoise(x, sig)
        r = float(diff.pow(2).mean().sqrt())
        rms.append(r)
        rel.append(r / float(s))
    return {"sigmas": [float(s) for s in sigmas], "rms": rms, "rel": rel, "max_rms": max(rms), "max_rel": max(rel)}
