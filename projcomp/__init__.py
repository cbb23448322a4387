"""projcomp: projective composition of diffusion models (Bradley et al., ICML 2025).

Public API — re-exported names only; each concept lives in its own module:
  compose.py   the composition operator (Def 5.1)
  sampling.py  EDM samplers with per-seed noise
  spec.py      the JSON composition spec used by the CLI, the app and the evaluation
  heuristic.py the mean-difference cosine heuristic (Lemma 8.1, Fig 8)
"""

from .compose import (
    ComposedDenoiser,
    CompositionError,
    Term,
    compose,
    denoiser_from_eps,
    denoiser_from_score,
    denoiser_from_v,
    eps_of,
    score_of,
)
from .heuristic import mean_difference_cosines, verdict
from .sampling import SamplerConfig, SamplingError, noise_for_seeds, num_network_calls, sample, sigma_schedule
from .spec import CompositionSpec, TermSpec

__version__ = "0.1.0"


def load(*args, **kwargs):
    """Load a checkpoint folder or Hub repo as a denoiser (see projcomp.checkpoint.load)."""
    from .checkpoint import load as _load

    return _load(*args, **kwargs)
