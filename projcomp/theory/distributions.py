"""Exact-score distributions under VE noising, x_σ = x0 + σ n (App. K notation; EDM convention).

Every distribution here knows its noised law p_σ = p * N(0, σ² I) in closed form, so it exposes

    log_prob(x, σ)   log p_σ(x)                       (σ = 0: the clean density, where one exists)
    denoise(x, σ)    D(x, σ) = E[x0 | x_σ = x]        (Tweedie: ∇log p_σ = (D − x) / σ²)
    __call__(x, σ, cond=None)                         the denoiser protocol (docs/design.md)

and can be composed with `projcomp.compose` and sampled with `projcomp.sampling` exactly like a
network — the samplers and checks used on networks are the ones proved right here (docs/design.md).

Families (all float64 inside):
  GaussianMixture   Σ_k w_k N(μ_k, Σ_k), Σ_k isotropic, diagonal or full, possibly singular: a point
                    mass is a component with Σ_k = 0, a Gaussian is a one-component mixture. Each Σ_k
                    is stored by its eigendecomposition U diag(λ) Uᵀ, so Σ_k + σ² I is inverted for
                    any per-row σ at the cost of one matrix product.
  Product           independent coordinate blocks, each any distribution (Def 5.2's factorised form;
                    eq. 18's 8 binary coordinates without 2^8 components).
  Mixture           Σ_k w_k p_k over arbitrary component distributions (e.g. p_u of eq. 18, a mixture
                    of products); D is the responsibility-weighted average of the components' D.
  pushforward       A♯p for an invertible linear A (+ offset): again a Gaussian mixture, with full
                    covariances A Σ_k Aᵀ (the feature maps of Thm 6.1 / Lemma 6.2 / §7).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..errors import ProjcompError

__all__ = [
    "TheoryError",
    "ExactDistribution",
    "GaussianMixture",
    "Product",
    "Mixture",
    "point_mass",
    "gaussian",
    "bernoulli",
    "pushforward",
    "rotation",
]

_DT = torch.float64


class TheoryError(ProjcompError, ValueError):
    """A theory-lab object or call is malformed; the message names the offending value."""


def _as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, ...] -> [B, dim] float64 (images are flattened; the protocol of docs/design.md)."""
    x = torch.as_tensor(x)
    if x.ndim == 1:
        raise TheoryError(f"x: expected a batch [B, {dim}] (or [B, C, H, W]), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != dim:
        raise TheoryError(f"x: has {flat.shape[1]} values per sample, the distribution has dimension {dim}")
    return flat.to(_DT)


def _sigma_rows(sigma, B: int) -> torch.Tensor:
    """σ as a float64 column [B, 1] (a scalar or a [B] tensor)."""
    s = torch.as_tensor(sigma, dtype=_DT)
    if s.ndim == 0:
        s = s.expand(B)
    s = s.reshape(-1)
    if s.numel() != B:
        raise TheoryError(f"sigma: has {s.numel()} entries for a batch of {B}")
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise TheoryError(f"sigma: {s.tolist()[:4]}... must be finite and >= 0")
    return s.reshape(B, 1)


class ExactDistribution:
    """Base class: a distribution on ℝ^dim with closed-form noised density and denoiser."""

    dim: int

    # -- to implement -------------------------------------------------------------------------
    def _log_prob(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # x [B, d], s [B, 1] -> [B]
        raise NotImplementedError

    def _denoise(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # -> [B, d]
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:  # clean x0 [n, d]
        raise NotImplementedError

    def marginal(self, idx: Sequence[int]) -> "ExactDistribution":
        """Law of x|_idx (the marginal p(x|_M) of Def 5.2), in the order of idx."""
        raise NotImplementedError

    def to_gaussian_mixture(self, max_components: int = 4096) -> "GaussianMixture":
        raise NotImplementedError

    # -- shared API ---------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_σ(x), x [B, dim]; differentiable in x (torch autograd gives the exact score)."""
        x = torch.as_tensor(x)
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise TheoryError(f"x: has {flat.shape[1]} values per sample, the distribution has dimension {self.dim}")
        return self._log_prob(flat.to(_DT), _sigma_rows(sigma, flat.shape[0]))

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """E[x0 | x_σ = x], float64 [B, dim]."""
        flat = _as_rows(x, self.dim)
        s = _sigma_rows(sigma, flat.shape[0])
        if bool((s == 0).any()):
            raise TheoryError("sigma: the denoiser needs sigma > 0 (at sigma = 0, D(x) = x on the support)")
        return self._denoise(flat, s)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """∇log p_σ(x) = (D − x) / σ² (Tweedie)."""
        flat = _as_rows(x, self.dim)
        s = _sigma_rows(sigma, flat.shape[0])
        return (self.denoise(flat, s.reshape(-1)) - flat) / s**2

    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        """Denoiser protocol (docs/design.md): x [B, d] or [B, C, H, W], sigma [B]; cond is ignored
        (an exact distribution is one term; conditions are separate distribution objects)."""
        return self.denoise(x, sigma).to(x.dtype).reshape(x.shape)

    def mean(self) -> torch.Tensor:
        return self.to_gaussian_mixture().mean()

    def cov(self) -> torch.Tensor:
        return self.to_gaussian_mixture().cov()

    label_dim = 0


# ---------------------------------------------------------------------------------------------
# Gaussian mixtures (isotropic / diagonal / full / singular components).


class GaussianMixture(ExactDistribution):
    """Σ_k w_k N(μ_k, Σ_k) with VE-noised law Σ_k w_k N(μ_k, Σ_k + σ² I).

    For each component, with Σ_k = U diag(λ) Uᵀ and y = Uᵀ(x − μ_k):
        log N(x; μ_k, Σ_k + σ²I) = −½ Σ_j y_j² / (λ_j + σ²) − ½ Σ_j log 2π(λ_j + σ²),
        E[x0 | x, k] = μ_k + U diag(λ / (λ + σ²)) y,
    and D(x, σ) = Σ_k r_k(x) E[x0 | x, k] with responsibilities r_k ∝ w_k N(x; μ_k, Σ_k + σ²I).
    """

    def __init__(
        self,
        weights: Sequence[float] | torch.Tensor,   # [K] mixture weights (normalised here; must be > 0).
        means: Sequence | torch.Tensor,            # [K, d] component means μ_k.
        covs=0.0,                                  # Σ_k: scalar / [K] isotropic variance, [K, d] diagonal, or [K, d, d] full (PSD).
    ):
        w = torch.as_tensor(weights, dtype=_DT).reshape(-1)
        mu = torch.as_tensor(means, dtype=_DT)
        if mu.ndim == 1:
            mu = mu.reshape(1, -1)
        K, d = mu.shape
        if w.numel() != K:
            raise TheoryError(f"weights: {w.numel()} weights for {K} component means")
        if bool((w <= 0).any()) or not bool(torch.isfinite(w).all()):
            raise TheoryError(f"weights: {w.tolist()[:8]} must be finite and > 0")
        c = torch.as_tensor(covs, dtype=_DT)
        if c.ndim == 1 and K == 1 and c.numel() == d and d > 1:
            c = c.reshape(1, d)                                          # one component, diagonal
        if c.ndim == 0 or (c.ndim == 1 and c.numel() == K):
            c = c.reshape(-1).expand(K)                                   # isotropic σ_k² per component
            full = torch.diag_embed(c[:, None].expand(K, d).clone())
        elif c.ndim == 2 and c.shape == (K, d):
            full = torch.diag_embed(c.clone())
        elif c.ndim == 3 and c.shape == (K, d, d):
            full = 0.5 * (c + c.transpose(1, 2))
        else:
            raise TheoryError(f"covs: shape {tuple(c.shape)} is not scalar, [K]={K}, [K, d]=({K}, {d}) or [K, d, d]")
        lam, U = torch.linalg.eigh(full)
        scale = max(1.0, float(lam.abs().max())) if lam.numel() else 1.0
        if bool((lam < -1e-9 * scale).any()):
            raise TheoryError(f"covs: a covariance has a negative eigenvalue {float(lam.min()):.3g} (not PSD)")
        self.weights = w / w.sum()
        self.means = mu
        self.covs = full
        self.lam = lam.clamp_min(0.0)
        self.lam[self.lam < 1e-12 * scale] = 0.0
        self.U = U
        self.dim = d
        self.num_components = K

    # Per-component quantities, x [B, d], s [B, 1].
    def _component_terms(self, x, s):
        diff = x[:, None, :] - self.means[None]                          # [B, K, d]
        y = torch.einsum("bkd,kde->bke", diff, self.U)                  # Uᵀ(x − μ_k)
        var = self.lam[None] + (s**2)[:, :, None]                        # [B, K, d]
        if bool((var == 0).any()):
            raise TheoryError("sigma: 0 is not allowed for a mixture with point-mass / singular components")
        log_n = -0.5 * (y**2 / var).sum(-1) - 0.5 * torch.log(2 * math.pi * var).sum(-1)  # [B, K]
        return y, var, log_n + torch.log(self.weights)[None]

    def _log_prob(self, x, s):
        _, _, lj = self._component_terms(x, s)
        return torch.logsumexp(lj, dim=1)

    def _denoise(self, x, s):
        y, var, lj = self._component_terms(x, s)
        r = torch.softmax(lj, dim=1)                                      # responsibilities [B, K]
        shrunk = self.lam[None] / var * y                                 # diag(λ/(λ+σ²)) y
        post = self.means[None] + torch.einsum("kde,bke->bkd", self.U, shrunk)  # E[x0 | x, k]
        return torch.einsum("bk,bkd->bd", r, post)

    def sample(self, n, generator=None):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=_DT)
        return self.means[k] + torch.einsum("nde,ne->nd", self.U[k], self.lam[k].sqrt() * z)

    def marginal(self, idx):
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        return GaussianMixture(self.weights, self.means[:, idx], self.covs[:, idx][:, :, idx])

    def to_gaussian_mixture(self, max_components=4096):
        return self

    def mean(self):
        return (self.weights[:, None] * self.means).sum(0)

    def cov(self):
        m = self.mean()
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    def noised(self, sigma: float) -> "GaussianMixture":
        """N_σ[p] as a Gaussian mixture (the forward-noising operator)."""
        return GaussianMixture(self.weights, self.means, self.covs + sigma**2 * torch.eye(self.dim, dtype=_DT))

    def __repr__(self):
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"


def point_mass(x0: Sequence[float] | torch.Tensor) -> GaussianMixture:
    """δ(x0): a one-component mixture with zero covariance."""
    return GaussianMixture([1.0], torch.as_tensor(x0, dtype=_DT).reshape(1, -1), 0.0)


def gaussian(mean: Sequence[float] | torch.Tensor, cov) -> GaussianMixture:
    """N(mean, cov), cov a scalar, a [d] diagonal or a [d, d] matrix."""
    mu = torch.as_tensor(mean, dtype=_DT).reshape(1, -1)
    c = torch.as_tensor(cov, dtype=_DT)
    if c.ndim >= 1:
        c = c.unsqueeze(0)
    return GaussianMixture([1.0], mu, c)


def bernoulli(p: float = 0.5, values: Sequence[float] = (0.0, 1.0), std: float = 0.0) -> GaussianMixture:
    """A 1-D two-point law: values[1] with probability p (as a 2-component mixture, width `std`)."""
    if not 0.0 < p < 1.0:
        raise TheoryError(f"p: {p!r} must lie strictly between 0 and 1 (use point_mass for 0 or 1)")
    return GaussianMixture([1 - p, p], torch.tensor([[values[0]], [values[1]]], dtype=_DT), std**2)


# ---------------------------------------------------------------------------------------------
# Products over coordinate blocks and general mixtures.


class Product(ExactDistribution):
    """p(x) = ∏_j p_j(x|_{M_j}) over disjoint blocks M_j covering [d] (independent blocks).

    Noising adds independent noise per coordinate, so N_σ[p] = ∏_j N_σ[p_j] on the same blocks:
    log-densities add and the denoiser acts block by block (the reason Thm 5.3(c) holds).
    """

    def __init__(self, blocks: Sequence[tuple[Sequence[int], ExactDistribution]]):  # [(coordinates M_j, law of x|_{M_j}), ...]
        if len(blocks) == 0:
            raise TheoryError("blocks: a product needs at least one block")
        self.blocks = []
        seen: list[int] = []
        for j, (idx, dist) in enumerate(blocks):
            idx = [int(i) for i in idx]
            if len(idx) != dist.dim:
                raise TheoryError(f"blocks[{j}]: {len(idx)} coordinates for a distribution of dimension {dist.dim}")
            self.blocks.append((torch.tensor(idx, dtype=torch.long), dist))
            seen += idx
        d = len(seen)
        if sorted(seen) != list(range(d)):
            raise TheoryError(f"blocks: coordinates {sorted(seen)} do not partition range({d})")
        self.dim = d
        # Fast path for products of 1-D Gaussian mixtures (eq. 18): one vectorised [B, d, K] pass,
        # components padded to a common K with log-weight −∞.
        self._coords = None
        if all(isinstance(dist, GaussianMixture) and dist.dim == 1 for _, dist in self.blocks):
            Kmax = max(dist.num_components for _, dist in self.blocks)
            logw = torch.full((d, Kmax), -math.inf, dtype=_DT)
            mu = torch.zeros(d, Kmax, dtype=_DT)
            lam = torch.ones(d, Kmax, dtype=_DT)
            for idx, dist in self.blocks:
                K = dist.num_components
                logw[idx, :K] = torch.log(dist.weights)
                mu[idx, :K] = dist.means[:, 0]
                lam[idx, :K] = dist.lam[:, 0]
            self._coords = (logw, mu, lam)

    def _coord_terms(self, x, s):
        logw, mu, lam = self._coords
        var = lam[None] + (s**2)[:, :, None]                              # [B, d, K]
        if bool((var == 0).any()):
            raise TheoryError("sigma: 0 is not allowed for a mixture with point-mass / singular components")
        diff = x[:, :, None] - mu[None]
        lj = logw[None] - 0.5 * diff**2 / var - 0.5 * torch.log(2 * math.pi * var)
        return diff, var, lj

    def _log_prob(self, x, s):
        if self._coords is not None:
            return torch.logsumexp(self._coord_terms(x, s)[2], 2).sum(1)
        return sum(dist._log_prob(x[:, idx], s) for idx, dist in self.blocks)

    def _denoise(self, x, s):
        if self._coords is not None:
            diff, var, lj = self._coord_terms(x, s)
            _, mu, lam = self._coords
            post = mu[None] + lam[None] / var * diff
            return (torch.softmax(lj, 2) * post).sum(2)
        out = torch.empty_like(x)
        for idx, dist in self.blocks:
            out[:, idx] = dist._denoise(x[:, idx], s)
        return out

    def sample(self, n, generator=None):
        out = torch.empty(n, self.dim, dtype=_DT)
        for idx, dist in self.blocks:
            out[:, idx] = dist.sample(n, generator)
        return out

    def marginal(self, idx):
        idx = [int(i) for i in idx]
        pos = {c: p for p, c in enumerate(idx)}
        parts = []
        for bidx, dist in self.blocks:
            local = [k for k, c in enumerate(bidx.tolist()) if c in pos]
            if local:
                parts.append(([pos[bidx[k].item()] for k in local], dist.marginal(local) if len(local) < dist.dim else dist))
        return Product(parts)

    def to_gaussian_mixture(self, max_components=4096):
        gms = [(idx, dist.to_gaussian_mixture(max_components)) for idx, dist in self.blocks]
        K = math.prod(g.num_components for _, g in gms)
        if K > max_components:
            raise TheoryError(f"max_components: the product has {K} components (> {max_components})")
        combos = torch.cartesian_prod(*[torch.arange(g.num_components) for _, g in gms]).reshape(K, len(gms))
        w = torch.ones(K, dtype=_DT)
        mu = torch.zeros(K, self.dim, dtype=_DT)
        cov = torch.zeros(K, self.dim, self.dim, dtype=_DT)
        for j, (idx, g) in enumerate(gms):
            c = combos[:, j]
            w = w * g.weights[c]
            mu[:, idx] = g.means[c]
            cov[:, idx[:, None], idx[None, :]] = g.covs[c]
        return GaussianMixture(w, mu, cov)

    def __repr__(self):
        return f"Product({[b[0].tolist() for b in self.blocks]})"


class Mixture(ExactDistribution):
    """Σ_k w_k p_k over arbitrary exact components; N_σ acts component-wise, so
    D(x, σ) = Σ_k r_k(x) D_k(x, σ) with r_k ∝ w_k p_{k,σ}(x)."""

    def __init__(self, weights: Sequence[float] | torch.Tensor, components: Sequence[ExactDistribution]):  # [K] weights; K components of equal dim.
        w = torch.as_tensor(weights, dtype=_DT).reshape(-1)
        if w.numel() != len(components) or len(components) == 0:
            raise TheoryError(f"weights: {w.numel()} weights for {len(components)} components")
        if bool((w <= 0).any()):
            raise TheoryError(f"weights: {w.tolist()} must be > 0")
        dims = {c.dim for c in components}
        if len(dims) != 1:
            raise TheoryError(f"components: dimensions {sorted(dims)} differ")
        self.weights = w / w.sum()
        self.components = list(components)
        self.dim = dims.pop()

    def _log_prob(self, x, s):
        lj = torch.stack([c._log_prob(x, s) for c in self.components], 1) + torch.log(self.weights)[None]
        return torch.logsumexp(lj, 1)

    def _denoise(self, x, s):
        lj = torch.stack([c._log_prob(x, s) for c in self.components], 1) + torch.log(self.weights)[None]
        r = torch.softmax(lj, 1)
        Ds = torch.stack([c._denoise(x, s) for c in self.components], 1)
        return torch.einsum("bk,bkd->bd", r, Ds)

    def sample(self, n, generator=None):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        draws = torch.stack([c.sample(n, generator) for c in self.components], 1)
        return draws[torch.arange(n), k]

    def marginal(self, idx):
        return Mixture(self.weights, [c.marginal(idx) for c in self.components])

    def to_gaussian_mixture(self, max_components=4096):
        gms = [c.to_gaussian_mixture(max_components) for c in self.components]
        if sum(g.num_components for g in gms) > max_components:
            raise TheoryError(f"max_components: the mixture has more than {max_components} components")
        w = torch.cat([wk * g.weights for wk, g in zip(self.weights, gms)])
        return GaussianMixture(w, torch.cat([g.means for g in gms]), torch.cat([g.covs for g in gms]))


# ---------------------------------------------------------------------------------------------
# Linear feature maps (Thm 6.1, Lemma 6.2, §7).


def pushforward(p: ExactDistribution, A: torch.Tensor, b: Optional[torch.Tensor] = None) -> GaussianMixture:
    """A♯p for x = A z + b with A invertible: Σ_k w_k N(A μ_k + b, A Σ_k Aᵀ)."""
    A = torch.as_tensor(A, dtype=_DT)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] != p.dim:
        raise TheoryError(f"A: shape {tuple(A.shape)} is not a square [{p.dim}, {p.dim}] matrix")
    if abs(float(torch.linalg.det(A))) < 1e-12:
        raise TheoryError("A: the feature map must be invertible (det A = 0)")
    g = p.to_gaussian_mixture()
    mu = g.means @ A.T
    if b is not None:
        mu = mu + torch.as_tensor(b, dtype=_DT).reshape(1, -1)
    return GaussianMixture(g.weights, mu, A[None] @ g.covs @ A.T[None])


def rotation(theta: float) -> torch.Tensor:
    """2-D rotation by θ (an orthogonal map)."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=_DT)
