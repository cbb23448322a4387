"""EDM samplers (Karras et al. 2022, Alg. 1-2) driven by any denoiser, composed or not.

Thm 5.3(c): when the conditionals are Factorized, reverse diffusion with the composed scores at
every noise level samples the composition exactly, so a standard sampler is all that is needed.
Where the composed path is not the noised composition (non-orthogonal feature spaces, Lemma 7.2),
`langevin_steps` adds an unadjusted-Langevin corrector at each noise level (Du et al. 2023).

The paper samples with EDM2's 32-step Heun sampler. Heun with N steps costs 2N − 1 network
calls (the last step is Euler: σ_{N} = 0), i.e. 63 for N = 32; the paper's "65 model calls"
would be 33 steps. `num_network_calls` reports the count for any setting.

Seeds: the initial noise (and any churn / Langevin noise) for sample s comes from its own
torch.Generator seeded with s, so sample s is bit-identical alone or inside a batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import torch

from .errors import ProjcompError

__all__ = [
    "SamplerConfig",
    "EDM_CHURN",
    "churn_settings",
    "SamplingError",
    "sigma_schedule",
    "noise_for_seeds",
    "sample",
    "num_network_calls",
    "bf16_is_fast",
]


def bf16_is_fast(device: Any = "cpu") -> bool:
    """Whether bfloat16 autocast speeds the network up on `device`.

    On CUDA it does. On a CPU only with native bf16 instructions (AVX512-BF16 or AMX): elsewhere
    oneDNN emulates bf16 and sampling gets slower (measured: 1.0-1.9x slower on an AVX-512 Xeon
    without AVX512-BF16, `benchmarks/bench_sample.py`)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return True
    if dev.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, name, lambda: False)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


class SamplingError(ProjcompError, ValueError):
    """Bad sampler settings; the message names the field."""


# EDM's stochastic sampler (Karras et al. 2022, Alg. 2) with its ImageNet-64 settings (Table 5):
# churn only for σ in [0.05, 50], fresh noise inflated by 1.003. With 16 steps any S_churn ≥ 16·(√2 − 1)
# ≈ 6.6 reaches the per-step cap γ = √2 − 1. Fresh noise lets the sampler correct the errors of
# an imperfect denoiser instead of following them to σ = 0 (EDM §4), which is what the small CLEVR
# nets need (measured in docs/clevr-models.md).
EDM_CHURN = {"S_min": 0.05, "S_max": 50.0, "S_noise": 1.003}


def churn_settings(S_churn: float) -> dict:
    """Sampler settings for EDM's stochastic sampler with this S_churn (0: the ODE). Checked where
    every sampler setting is, by SamplerConfig.validate."""
    return {"S_churn": float(S_churn), **EDM_CHURN} if S_churn else {"S_churn": 0.0}


# The ODE solvers of `sample`, with the names texts give them.
SOLVER_NAMES = {"heun": "Heun", "euler": "Euler", "dpm2m": "DPM-Solver++(2M)"}
SOLVERS = tuple(SOLVER_NAMES)


@dataclasses.dataclass
class SamplerConfig:
    """Settings of `sample`, serialisable to JSON beside every output."""

    num_steps: int = 32           # N noise levels; Heun uses 2N − 1 network calls.
    sigma_min: float = 0.002      # EDM σ_min.
    sigma_max: float = 80.0       # EDM σ_max.
    rho: float = 7.0              # EDM schedule exponent ρ (Karras et al. 2022, eq. 5).
    solver: str = "heun"          # 'heun' (2nd order, last step Euler), 'euler', or 'dpm2m' (DPM-Solver++(2M): 2nd order, one call per step).
    S_churn: float = 0.0          # Stochasticity (EDM Alg. 2); 0 = deterministic ODE.
    S_min: float = 0.0            # Churn only for σ in [S_min, S_max].
    S_max: float = 1e9            # (EDM: ∞; a finite stand-in keeps the spec valid JSON.)
    S_noise: float = 1.0          # Noise inflation of the churn step.
    langevin_steps: int = 0       # ULA corrector steps at each noise level (0 = off).
    langevin_snr: float = 0.1     # Corrector step size as a fraction of σ² (ε = snr · σ²).
    dtype: str = "float32"        # Network compute dtype: 'float32' or 'bfloat16' (autocast).

    def describe(self) -> str:
        """E.g. '16 Heun steps, 31 network calls': what a run of these settings costs, for texts."""
        return f"{self.num_steps} {SOLVER_NAMES[self.solver]} steps, {num_network_calls(self)} network calls"

    def validate(self) -> "SamplerConfig":
        if not isinstance(self.num_steps, int) or isinstance(self.num_steps, bool) or self.num_steps < 1:
            raise SamplingError(f"num_steps: {self.num_steps!r} must be an integer >= 1")
        for name in ("sigma_min", "sigma_max", "rho", "S_noise", "langevin_snr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SamplingError(f"{name}: {v!r} must be a finite positive number")
        if self.sigma_min >= self.sigma_max:
            raise SamplingError(f"sigma_min: {self.sigma_min} must be below sigma_max {self.sigma_max}")
        if self.solver not in SOLVERS:
            raise SamplingError(f"solver: {self.solver!r} is not one of {', '.join(map(repr, SOLVERS))}")
        if self.solver == "dpm2m" and (self.S_churn > 0 or self.langevin_steps > 0):
            raise SamplingError("solver: 'dpm2m' is a deterministic multistep solver; use S_churn = 0 and "
                                "langevin_steps = 0 with it (or solver 'heun')")
        if not (math.isfinite(self.S_churn) and self.S_churn >= 0):
            raise SamplingError(f"S_churn: {self.S_churn!r} must be >= 0")
        if not isinstance(self.langevin_steps, int) or self.langevin_steps < 0:
            raise SamplingError(f"langevin_steps: {self.langevin_steps!r} must be an integer >= 0")
        if self.dtype not in ("float32", "bfloat16"):
            raise SamplingError(f"dtype: {self.dtype!r} is not one of 'float32', 'bfloat16'")
        return self


def sigma_schedule(num_steps: int = 32, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM time steps (Karras et al. 2022, eq. 5), float64, with σ_N = 0 appended: [N + 1]."""
    i = torch.arange(num_steps, dtype=torch.float64)
    if num_steps == 1:
        t = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


def num_network_calls(cfg: SamplerConfig) -> int:
    """Denoiser evaluations of one run (a composed denoiser evaluates all its terms per call)."""
    per_level = 1 + cfg.langevin_steps
    if cfg.solver == "heun":
        return 2 * cfg.num_steps - 1 + cfg.langevin_steps * cfg.num_steps
    return cfg.num_steps * per_level      # euler, dpm2m: one call per noise level


def noise_for_seeds(seeds: Sequence[int], shape: Sequence[int], device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise [len(seeds), *shape], one generator per seed (batch-size independent)."""
    out = []
    for s in seeds:
        g = torch.Generator(device="cpu").manual_seed(int(s))
        out.append(torch.randn(tuple(shape), generator=g, dtype=torch.float32))
    return torch.stack(out).to(device=device, dtype=dtype)


class _SeededNoise:
    """Fresh noise for churn / Langevin steps: per-seed generators, advanced in lock step."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: Any):
        # Offset the seed so these streams never coincide with the initial-noise stream.
        self.gens = [torch.Generator(device="cpu").manual_seed((int(s) + 0x5EED) % (2**63)) for s in seeds]
        self.shape = tuple(shape)
        self.device = device

    def __call__(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.gens]).to(self.device)


def sample(
    denoiser: Callable[..., torch.Tensor],                        # D(x, σ, cond) -> x0_hat; composed or plain.
    seeds: Sequence[int],                                         # One sample per seed.
    shape: Sequence[int],                                         # Per-sample shape, e.g. (3, 32, 32).
    config: Optional[SamplerConfig] = None,                       # Sampler settings (defaults: 32-step Heun).
    cond: Any = None,                                             # Condition passed to a plain denoiser.
    device: Any = "cpu",                                          # Where x lives.
    callback: Optional[Callable[[dict], None]] = None,            # Called after each step with {i, n, sigma, x, x0}.
    **overrides: Any,                                             # Field overrides of `config`.
) -> torch.Tensor:
    """Run the EDM sampler from σ_max to 0 and return x0 (float32, unclipped) [len(seeds), *shape]."""
    cfg = dataclasses.replace(config or SamplerConfig(), **overrides).validate()
    seeds = [int(s) for s in seeds]
    if len(seeds) == 0:
        raise SamplingError("seeds: at least one seed is needed")
    t_steps = sigma_schedule(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
    x = noise_for_seeds(seeds, shape, device=device, dtype=torch.float64) * t_steps[0]
    fresh = _SeededNoise(seeds, shape, device) if (cfg.S_churn > 0 or cfg.langevin_steps > 0) else None
    autocast = cfg.dtype == "bfloat16"
    B = len(seeds)

    def D(x_: torch.Tensor, s: float) -> torch.Tensor:
        sig = torch.full((B,), s, dtype=torch.float32, device=device)
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            out = denoiser(x_.to(torch.float32), sig, cond) if cond is not None else denoiser(x_.to(torch.float32), sig)
        return out.to(torch.float64)

    n = cfg.num_steps
    if cfg.solver == "dpm2m":
        return _dpm_solver_2m(D, x, t_steps, callback)
    for i in range(n):
        t_cur, t_next = float(t_steps[i]), float(t_steps[i + 1])
        # Langevin corrector at this noise level (ULA on the composed score, Du et al. 2023).
        for _ in range(cfg.langevin_steps):
            eps = cfg.langevin_snr * t_cur**2
            score = (D(x, t_cur) - x) / t_cur**2
            x = x + eps * score + math.sqrt(2 * eps) * fresh().to(torch.float64)
        # Churn: temporarily raise the noise level (EDM Alg. 2).
        gamma = min(cfg.S_churn / n, math.sqrt(2) - 1) if cfg.S_min <= t_cur <= cfg.S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * cfg.S_noise * fresh().to(torch.float64)
        # Euler step.
        x0 = D(x, t_hat)
        d_cur = (x - x0) / t_hat
        x_next = x + (t_next - t_hat) * d_cur
        # Heun correction, except for the last step (σ_N = 0).
        if cfg.solver == "heun" and i < n - 1:
            x0_next = D(x_next, t_next)
            d_prime = (x_next - x0_next) / t_next
            x_next = x + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
        if callback is not None:
            callback({"i": i, "n": n, "sigma": t_next, "x": x.to(torch.float32), "x0": x0.to(torch.float32)})
    return x.to(torch.float32)


def _dpm_solver_2m(D: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, t_steps: torch.Tensor,
                   callback: Optional[Callable[[dict], None]]) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in EDM's parameterisation x = x0 + σ n.

    With λ = −log σ and step h = λ_next − λ_cur, the probability-flow ODE integrates exactly for a
    denoiser held constant over the step: x_next = (σ_next / σ_cur) x + (1 − σ_next / σ_cur) D. The
    multistep correction replaces D by the linear extrapolation of the last two denoiser outputs in λ,
    (1 + 1/(2r)) D_cur − 1/(2r) D_prev with r = h_prev / h: second order with ONE network call per
    step (Heun needs two). The first step has no history (first order); the last, to σ = 0, is first
    order too (h = ∞: x = D), as DPM-Solver's `lower_order_final` does for few steps."""
    n = len(t_steps) - 1
    x0_prev, h_prev = None, None
    for i in range(n):
        t_cur, t_next = float(t_steps[i]), float(t_steps[i + 1])
        x0 = D(x, t_cur)
        if t_next == 0:
            x = x0
        else:
            h = math.log(t_cur / t_next)
            d = x0 if x0_prev is None else x0 + (x0 - x0_prev) * (h / (2 * h_prev))
            x = (t_next / t_cur) * x + (1 - t_next / t_cur) * d
            h_prev = h
        x0_prev = x0
        if callback is not None:
            callback({"i": i, "n": n, "sigma": t_next, "x": x.to(torch.float32), "x0": x0.to(torch.float32)})
    return x.to(torch.float32)
