"""The composition operator of Def 5.1, over denoisers in the EDM convention.

For distributions p = (p_b, p_1, ..., p_k) the paper defines (Def 5.1, eqs. 5-6)

    C[p](x) ∝ p_b(x) ∏_i p_i(x) / p_b(x),     ∇log C[p] = ∇log p_b + Σ_i (∇log p_i − ∇log p_b).

With the EDM parameterisation x = x0 + σ n, the score of a denoiser is (D(x, σ) − x) / σ², which is
affine in D, so the same combination holds for denoiser outputs (docs/design.md):

    D_comp = D_b + Σ_i w_i (D_i − D_b)                                 (w_i = 1: the paper's operator)

Weights w_i ≠ 1 give p_b ∏ (p_i / p_b)^{w_i} (classifier-free guidance is the k = 1 case); a
negative weight is the NOT of Liu et al. (2022). The background is an explicit term: the
"Bayes composition" of §3 is simply background = the unconditional term p_u, and nothing here
knows which background is the right one — that is the paper's point (Fig 3 A vs B).

Every term that shares a network is evaluated in one batched call (chunked under `max_batch`),
so a k-term composition costs about one (k+1)-sample network call per sampler step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional, Sequence

import torch

from .errors import ProjcompError

__all__ = [
    "CompositionError",
    "Term",
    "ComposedDenoiser",
    "compose",
    "combine",
    "coefficients",
    "denoiser_from_eps",
    "denoiser_from_v",
    "denoiser_from_score",
    "score_of",
    "eps_of",
]


class CompositionError(ProjcompError, ValueError):
    """A composition (or its spec) is malformed; the message names the offending field."""


# ---------------------------------------------------------------------------------------------
# Terms.


@dataclasses.dataclass
class Term:
    """One factor p_i of Def 5.1: a denoiser queried with a condition, and its weight w_i."""

    denoiser: Callable[..., torch.Tensor]  # D(x, sigma, cond) -> x0_hat, EDM convention.
    cond: Any = None                       # None = the null label; a Tensor[label_dim]; or a value for denoiser.encode_cond.
    weight: float = 1.0                    # w_i in D_b + Σ w_i (D_i − D_b); 1 is the paper's operator.
    name: Optional[str] = None             # Human-readable label used in errors, plots and specs.

    def label(self, index: int) -> str:
        return self.name if self.name is not None else f"terms[{index}]"


def _check_weight(w: Any, field: str) -> float:
    try:
        w = float(w)
    except (TypeError, ValueError):
        raise CompositionError(f"{field}: weight {w!r} is not a number") from None
    if not math.isfinite(w):
        raise CompositionError(f"{field}: weight {w!r} is not finite")
    return w


def _cond_vector(denoiser: Any, cond: Any, field: str) -> Optional[torch.Tensor]:
    """A term's condition as a label vector [label_dim], or None for the null label."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond.reshape(-1)
    encode = getattr(denoiser, "encode_cond", None)
    if encode is None:
        raise CompositionError(f"{field}: condition {cond!r} given but the denoiser has no encode_cond()")
    try:
        vec = encode(cond)
    except (ValueError, KeyError, TypeError) as e:
        raise CompositionError(f"{field}: bad condition {cond!r}: {e}") from None
    return torch.as_tensor(vec).reshape(-1)


# ---------------------------------------------------------------------------------------------
# The operator.


class ComposedDenoiser:
    """D_comp(x, σ) = D_b + Σ_i w_i (D_i − D_b) — itself a denoiser, so samplers never know."""

    def __init__(
        self,
        background: Term,        # The background p_b (its weight is ignored: it carries 1 − Σ w_i).
        terms: Sequence[Term],   # The conditionals p_1..p_k with their weights.
        max_batch: int = 256,    # Memory cap: most samples in one network call (chunks beyond it).
    ):
        if not isinstance(background, Term):
            raise CompositionError("background: expected a Term, got %r" % type(background).__name__)
        terms = list(terms)
        if len(terms) == 0:
            raise CompositionError("terms: a composition needs at least one term")
        if int(max_batch) < 1:
            raise CompositionError(f"max_batch: {max_batch!r} must be >= 1")
        for i, t in enumerate(terms):
            if not isinstance(t, Term):
                raise CompositionError(f"terms[{i}]: expected a Term, got {type(t).__name__}")
            t.weight = _check_weight(t.weight, t.label(i))
            if not callable(t.denoiser):
                raise CompositionError(f"{t.label(i)}: denoiser is not callable")
        if not callable(background.denoiser):
            raise CompositionError("background: denoiser is not callable")
        self.background = background
        self.terms = terms
        self.max_batch = int(max_batch)
        self.weights = torch.tensor([t.weight for t in terms], dtype=torch.float64)

        # Resolve every condition once, and group the (k+1) evaluations by network so that terms
        # sharing one are evaluated in one batched call. Slot 0 is the background.
        all_terms = [background] + terms
        self._conds = [
            _cond_vector(t.denoiser, t.cond, "background" if j == 0 else t.label(j - 1))
            for j, t in enumerate(all_terms)
        ]
        groups: dict[int, list[int]] = {}
        self._nets: dict[int, Any] = {}
        for j, t in enumerate(all_terms):
            groups.setdefault(id(t.denoiser), []).append(j)
            self._nets[id(t.denoiser)] = t.denoiser
        self._groups = groups
        # Carry the common attributes through, so a composed denoiser can be composed again.
        self.image_shape = getattr(background.denoiser, "image_shape", None)

    @property
    def num_terms(self) -> int:
        return len(self.terms)

    def _cond_rows(self, key: int, net: Any, slots: list[int], device: torch.device) -> Optional[torch.Tensor]:
        """The group's condition rows [n, label_dim] on `device`, built once per device (no
        host-to-device copy per network call)."""
        cache = self.__dict__.setdefault("_cond_cache", {})
        ck = (key, str(device))
        if ck not in cache:
            conds = [self._conds[j] for j in slots]
            if all(c is None for c in conds):
                cache[ck] = None
            else:
                label_dim = getattr(net, "label_dim", None)
                dim = next(c.numel() for c in conds if c is not None)
                if label_dim is not None and label_dim != dim:
                    raise CompositionError(f"condition has {dim} values but the network's label_dim is {label_dim}")
                cache[ck] = torch.stack([
                    (c if c is not None else torch.zeros(dim)).to(dtype=torch.float32) for c in conds
                ]).to(device)
        return cache[ck]

    def _eval_group(self, key: int, slots: list[int], x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Evaluate one network for the given slots in one (chunked) batched call: Tensor[n, B, ...]."""
        net = self._nets[key]
        B = x.shape[0]
        cond_rows = self._cond_rows(key, net, slots, x.device)
        n = len(slots)
        xs = x.unsqueeze(0).expand(n, *x.shape).reshape(n * B, *x.shape[1:])
        ss = sigma.unsqueeze(0).expand(n, B).reshape(n * B)
        cs = None if cond_rows is None else cond_rows.unsqueeze(1).expand(n, B, -1).reshape(n * B, -1)
        outs = []
        for start in range(0, n * B, self.max_batch):
            stop = min(start + self.max_batch, n * B)
            outs.append(net(xs[start:stop], ss[start:stop], None if cs is None else cs[start:stop]))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.reshape(n, B, *x.shape[1:])

    def evaluate_stacked(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Tensor[k+1, B, ...] = [D_b, D_1, ..., D_k] at (x, σ), one batched call per distinct
        network. When one network serves every term (the usual case) this is that call's output
        as is, with no copy."""
        sigma = _sigma_vector(sigma, x)
        if len(self._groups) == 1:
            (key, slots), = self._groups.items()
            return self._eval_group(key, slots, x, sigma)  # slots are 0..k in order
        results: list[Optional[torch.Tensor]] = [None] * (len(self.terms) + 1)
        for key, slots in self._groups.items():
            for j, out in zip(slots, self._eval_group(key, slots, x, sigma).unbind(0)):
                results[j] = out
        dt = functools.reduce(torch.promote_types, [r.dtype for r in results])  # type: ignore[union-attr]
        return torch.stack([r.to(dt) for r in results])  # type: ignore[union-attr]

    def evaluate_terms(self, x: torch.Tensor, sigma: Any) -> list[torch.Tensor]:
        """[D_b, D_1, ..., D_k] at (x, σ), evaluated one batched call per distinct network."""
        return list(self.evaluate_stacked(x, sigma).unbind(0))

    def coefficients(self) -> list:
        """(1 − Σw, w_1, ..., w_k): Def 5.1 folded once, so that D = Σ_j c_j D_j (slot 0 = D_b)."""
        if "_coefs" not in self.__dict__:
            self._coefs = coefficients(self.weights)
        return self._coefs

    def combine(self, outs: Any) -> torch.Tensor:
        """D_b + Σ w_i (D_i − D_b) over stacked outputs [k+1, B, ...] (see the module's `combine`)."""
        return _weighted_sum(outs, self.coefficients())

    def contributions(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """w_i (D_i − D_b) for each term: Tensor[k, B, C, H, W] — where each concept acts (locality)."""
        outs = self.evaluate_terms(x, sigma)
        return torch.stack([w * (D_i - outs[0]) for w, D_i in zip(self.weights.tolist(), outs[1:])])

    def __call__(self, x: torch.Tensor, sigma: Any, cond: Any = None) -> torch.Tensor:
        if cond is not None:
            raise CompositionError("cond: a composed denoiser takes no condition (conditions live in its terms)")
        return self.combine(self.evaluate_stacked(x, sigma))


def coefficients(weights: Any) -> list:
    """(1 − Σw, w_1, ..., w_k): Def 5.1 folded, so that D = Σ_j c_j D_j with slot 0 = D_b."""
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    return [float(1.0 - w.sum())] + w.tolist()


def combine(outs: Any, weights: Sequence[float]) -> torch.Tensor:
    """Def 5.1 over the terms' outputs: D_b + Σ_i w_i (D_i − D_b).

    `outs` is Tensor[k+1, B, ...] (or a list of k+1 tensors) with the background first. Because the
    combination is affine, it is the same for x̂₀ (D), ε and scores: the SDXL pipeline combines its
    ε predictions with this function too (sdxl.py). Folded as (1 − Σw) D_b + Σ w_i D_i and
    accumulated in the wider of fp32 and the inputs' dtype (fp64 for exact-score models; fp16/bf16
    UNet outputs are summed in fp32); returned in the inputs' dtype.
    """
    return _weighted_sum(outs, coefficients(weights))


def _weighted_sum(outs: Any, c: Sequence[float]) -> torch.Tensor:
    stacked = outs if isinstance(outs, torch.Tensor) else torch.stack(list(outs))
    if stacked.shape[0] != len(c):
        raise CompositionError(f"outputs: {stacked.shape[0]} stacked outputs for {len(c) - 1} terms + background")
    acc_dtype = torch.promote_types(stacked.dtype, torch.float32)
    # An element-wise sum in a fixed order, not a matmul: a BLAS contraction picks its blocking
    # from the batch size, which would make sample s depend on the batch it is drawn in.
    acc = stacked[0].to(acc_dtype) * c[0]
    for j in range(1, stacked.shape[0]):
        acc.add_(stacked[j].to(acc_dtype), alpha=c[j])
    return acc.to(stacked.dtype)


def compose(background: Any, terms: Sequence[Any], weights: Optional[Sequence[float]] = None, max_batch: int = 256) -> ComposedDenoiser:
    """Def 5.1: D_b + Σ_i w_i (D_i − D_b).

    `background` and each entry of `terms` may be a `Term`, a `(denoiser, cond)` pair or a bare
    denoiser (null condition). `weights`, when given, overrides the terms' weights and must have one
    entry per term.
    """
    bg = _as_term(background, "background")
    ts = [_as_term(t, f"terms[{i}]") for i, t in enumerate(terms)]
    if weights is not None:
        weights = list(weights)
        if len(weights) != len(ts):
            raise CompositionError(f"weights: {len(weights)} weights given for {len(ts)} terms")
        for i, (t, w) in enumerate(zip(ts, weights)):
            t.weight = _check_weight(w, f"weights[{i}]")
    return ComposedDenoiser(bg, ts, max_batch=max_batch)


def _as_term(obj: Any, field: str) -> Term:
    if isinstance(obj, Term):
        return dataclasses.replace(obj)
    if isinstance(obj, tuple) and len(obj) == 2:
        return Term(obj[0], obj[1])
    if callable(obj):
        return Term(obj)
    raise CompositionError(f"{field}: expected a Term, a (denoiser, cond) pair or a denoiser, got {type(obj).__name__}")


def _sigma_vector(sigma: Any, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, device=x.device)
    sigma = sigma.to(torch.promote_types(sigma.dtype if sigma.is_floating_point() else torch.float32, torch.float32))
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(x.shape[0])


# ---------------------------------------------------------------------------------------------
# Other parameterisations. The composition is the same linear form in each (docs/design.md), so a
# model of any kind is turned into a denoiser once and composed there.


def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def score_of(D: torch.Tensor, x: torch.Tensor, sigma: Any) -> torch.Tensor:
    """∇log p_σ(x) = (D − x) / σ² (Tweedie; EDM eq. 3)."""
    s = _bcast(_sigma_vector(sigma, x), x)
    return (D - x) / s**2


def eps_of(D: torch.Tensor, x: torch.Tensor, sigma: Any) -> torch.Tensor:
    """ε̂ = (x − D) / σ, the noise prediction of a VE denoiser."""
    s = _bcast(_sigma_vector(sigma, x), x)
    return (x - D) / s


class denoiser_from_score:
    """Wrap score(x, σ, cond) as D = x + σ² score."""

    def __init__(self, score_fn: Callable[..., torch.Tensor]):  # score_fn(x, sigma, cond) -> ∇log p_σ(x).
        self.score_fn = score_fn

    def __call__(self, x, sigma, cond=None):
        s = _bcast(_sigma_vector(sigma, x), x)
        return x + s**2 * self.score_fn(x, sigma, cond)


class denoiser_from_eps:
    """An ε-prediction model of the variance-preserving kind as an EDM denoiser.

    The VP model sees x_vp = x / sqrt(1 + σ²) (x in the VE scale of EDM) and predicts ε, so
    D(x, σ) = x − σ ε̂ (Karras et al. 2022, Table 1 "VP" column).
    `sigma_to_t` maps σ to the model's time input (e.g. a DDPM timestep); default: σ itself.
    """

    def __init__(
        self,
        eps_fn: Callable[..., torch.Tensor],                   # eps_fn(x_vp, t, cond) -> ε̂.
        sigma_to_t: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,  # σ -> model time input.
        vp_scaling: bool = True,                               # False: the model takes x unscaled (VE ε-model).
    ):
        self.eps_fn = eps_fn
        self.sigma_to_t = sigma_to_t or (lambda s: s)
        self.vp_scaling = vp_scaling

    def __call__(self, x, sigma, cond=None):
        sig = _sigma_vector(sigma, x)
        s = _bcast(sig, x)
        c_in = 1 / torch.sqrt(1 + s**2) if self.vp_scaling else torch.ones_like(s)
        eps = self.eps_fn(x * c_in, self.sigma_to_t(sig), cond)
        return x - s * eps


class denoiser_from_v:
    """A v-prediction model (Salimans & Ho 2022) as an EDM denoiser.

    With α = 1/sqrt(1+σ²), σ_vp = σ α and the model input z = α x, v = α ε − σ_vp x0, so
    x0 = α z − σ_vp v, i.e. D(x, σ) = x / (1 + σ²) − σ / sqrt(1 + σ²) · v̂.
    """

    def __init__(
        self,
        v_fn: Callable[..., torch.Tensor],                                    # v_fn(z, t, cond) -> v̂.
        sigma_to_t: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,  # σ -> model time input.
    ):
        self.v_fn = v_fn
        self.sigma_to_t = sigma_to_t or (lambda s: s)

    def __call__(self, x, sigma, cond=None):
        sig = _sigma_vector(sigma, x)
        s = _bcast(sig, x)
        alpha = 1 / torch.sqrt(1 + s**2)
        v = self.v_fn(x * alpha, self.sigma_to_t(sig), cond)
        return x * alpha**2 - s * alpha * v
