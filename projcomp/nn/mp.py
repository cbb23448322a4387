"""Magnitude-preserving (MP) primitives of EDM2 (Karras et al. 2024, "Analyzing and Improving
the Training Dynamics of Diffusion Models", §2-3 and App. B), re-implemented from the paper.

Every layer keeps activations at unit expected magnitude when its inputs are; weights carry
no biases and are kept at unit norm per output channel ("forced weight normalisation",
EDM2 Eq. 66). The paper we reproduce (Bradley et al. 2025, App. L) applies that forced
normalisation *after* each optimiser update instead of inside the forward pass; `MPConv`
supports both (see `force_wn_in_forward` and `normalize_weights_`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "normalize",
    "mp_silu",
    "mp_sum",
    "mp_cat",
    "resample",
    "clip_activations",
    "MPFourier",
    "MPConv",
    "normalize_weights_",
    "set_force_wn_in_forward",
    "set_fold_at_inference",
]

#----------------------------------------------------------------------------
# Normalise x to unit RMS over all dims except `dim`-complement (EDM2 Eq. 66's normalize()).
# dim=None: normalise each slice x[i] over all its remaining dimensions (weights, per output
# channel); dim=1: pixel norm over channels. Always computed in float32.

def normalize(x: torch.Tensor, dim: Optional[Sequence[int] | int] = None, eps: float = 1e-4) -> torch.Tensor:
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    # ||x|| / sqrt(n) is the RMS; eps keeps zero slices at zero instead of NaN.
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)

#----------------------------------------------------------------------------
# Magnitude-preserving SiLU (EDM2 Eq. 81): silu(x) of a unit Gaussian has RMS 0.596.

def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / 0.596

#----------------------------------------------------------------------------
# Magnitude-preserving sum (EDM2 Eq. 88): interpolate a -> b by t, then undo the magnitude
# loss of summing two independent unit-magnitude signals.

def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    # Under CUDA autocast one input may be bfloat16 and the other float32; lerp needs one dtype.
    dt = torch.promote_types(a.dtype, b.dtype)
    return a.to(dt).lerp(b.to(dt), t) / math.sqrt((1 - t) ** 2 + t ** 2)

#----------------------------------------------------------------------------
# Magnitude-preserving channel concatenation (EDM2 Eq. 103): a gets weight (1 - t), b weight t,
# each part scaled so that the result has unit magnitude and the balance is independent of
# the two channel counts.

def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    Na = a.shape[dim]
    Nb = b.shape[dim]
    C = math.sqrt((Na + Nb) / ((1 - t) ** 2 + t ** 2))
    wa = C / math.sqrt(Na) * (1 - t)
    wb = C / math.sqrt(Nb) * t
    return torch.cat([wa * a, wb * b], dim=dim)

#----------------------------------------------------------------------------
# Resampling with EDM2's [1, 1] box filter: 2x2 average for 'down', nearest-neighbour
# (the transposed box filter times 4) for 'up'.

def resample(x: torch.Tensor, mode: str = "keep") -> torch.Tensor:
    if mode == "keep":
        return x
    if mode == "down":
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    raise ValueError(f"resample mode {mode!r}: expected 'keep', 'down' or 'up'")

#----------------------------------------------------------------------------
# Activation clipping (EDM2's clip_act) that skips the work when nothing is clipped: on the CPU one
# min/max pass decides, and when every value lies within [-c, c] the clip is the identity in value
# and in gradient (clamp's backward masks nothing), so x is returned as it is -- bit-identical,
# and the four element-wise passes of clamp's backward (ge, le, and, where) are saved. Anything
# outside, or a NaN (min/max propagate it), takes the ordinary clip. On a GPU the check would
# cost a device sync, so the ordinary clip is used there (and under torch.compile).

def clip_activations(x: torch.Tensor, c: float) -> torch.Tensor:
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = torch.aminmax(x.detach())
        if bool(lo >= -c) and bool(hi <= c):
            return x
    return x.clip(-c, c)

#----------------------------------------------------------------------------
# Magnitude-preserving Fourier features (EDM2 App. B.2): fixed random frequencies and phases,
# cos() scaled by sqrt(2) so the output has unit RMS. Used for the noise level c_noise.

class MPFourier(torch.nn.Module):
    def __init__(self,
        num_channels: int,          # Number of output features.
        bandwidth: float = 1.0,     # Std of the random frequencies (in cycles).
        seed: int = 0,              # Frequencies/phases come from their own generator, so they
                                    # are identical in every process and every run.
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * np.pi * torch.randn(num_channels, generator=g) * bandwidth)
        self.register_buffer("phases", 2 * np.pi * torch.rand(num_channels, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float32).ger(self.freqs.to(torch.float32))
        y = y + self.phases.to(torch.float32)
        return (y.cos() * np.sqrt(2)).to(x.dtype)

#----------------------------------------------------------------------------
# Magnitude-preserving convolution / linear layer (EDM2 §2.3, Eq. 66). No bias. The weight is
# normalised to unit RMS per output channel and divided by sqrt(fan_in) in every forward, so
# the effective weight has unit norm; `gain` scales the output (learned zero-initialised gains
# at the block embedding and network output).
#
# Forced weight normalisation: the stored parameter itself is also kept normalised, either
#   'before': inside forward() in training mode (EDM2's original), or
#   'after' : by calling normalize_weights_(net) right after each optimiser step
#             (Bradley et al. 2025, App. L: "weight renormalization after the weights are
#             updated rather than before").

class MPConv(torch.nn.Module):
    def __init__(self,
        in_channels: int,           # Input channels (features for a linear layer).
        out_channels: int,          # Output channels.
        kernel: Sequence[int],      # [] for a linear layer, [k, k] for a k x k convolution.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, *kernel))
        self.force_wn_in_forward = False  # True = EDM2 'before' mode (set by the training loop).
        self.fold_at_inference = True     # Normalise the weight once at inference (see _normalized_weight).

    @torch.no_grad()
    def normalize_weight_(self) -> None:
        self.weight.copy_(normalize(self.weight.to(torch.float32)))

    def _normalized_weight(self) -> torch.Tensor:
        """normalize(w) in float32, computed once per weight version (inference).

        At inference the weights do not change, so EDM2's per-call normalisation (Eq. 66) is folded
        once; the cache is keyed by the parameter's version counter, so an optimiser step, a
        `load_state_dict` or a `normalize_weight_` invalidates it. The gain and 1/sqrt(fan_in) are
        still applied per call, in the same order as training, so outputs are bit-identical."""
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device)
        cache = self.__dict__.get("_fold")
        if cache is None or cache[0] != key:
            cache = (key, normalize(self.weight.detach().to(torch.float32)))
            self.__dict__["_fold"] = cache
        return cache[1]

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        if self.fold_at_inference and not self.training and not (torch.is_grad_enabled() and self.weight.requires_grad):
            w = self._normalized_weight()  # Inference: the normalisation is folded once.
        else:
            w = self.weight.to(torch.float32)
            if self.training and self.force_wn_in_forward:
                with torch.no_grad():
                    self.weight.copy_(normalize(w))
            w = normalize(w)  # Differentiable normalisation (keeps gradients orthogonal to w).
        w = w * (gain / math.sqrt(w[0].numel()))
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        assert w.ndim == 4
        return F.conv2d(x, w, padding=(w.shape[-1] // 2,))


@torch.no_grad()
def normalize_weights_(net: torch.nn.Module) -> None:
    """Forced weight normalisation of every MPConv in `net` (the paper's 'after the update')."""
    for m in net.modules():
        if isinstance(m, MPConv):
            m.normalize_weight_()


def set_fold_at_inference(net: torch.nn.Module, enabled: bool) -> None:
    """Fold each MPConv's weight normalisation once at inference (default) or redo it every call
    (EDM2's reference behaviour; kept for the side-by-side benchmark)."""
    for m in net.modules():
        if isinstance(m, MPConv):
            m.fold_at_inference = bool(enabled)


def set_force_wn_in_forward(net: torch.nn.Module, enabled: bool) -> None:
    """Select EDM2's original 'before' mode (normalise inside forward while training)."""
    for m in net.modules():
        if isinstance(m, MPConv):
            m.force_wn_in_forward = bool(enabled)
