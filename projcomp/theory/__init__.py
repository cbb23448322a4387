"""The exact-score theory lab: distributions with closed-form noised scores, the paper's checks
(Def 4.1, Def 5.2, the §7 commute identity) and its toy experiments (App. G eqs. 17/18, §6.5,
Lemma 6.2 / Lemma 7.2). `python -m projcomp.theory` writes every toy's figure and numbers.
"""

from .distributions import (
    ExactDistribution,
    GaussianMixture,
    Mixture,
    Product,
    TheoryError,
    bernoulli,
    gaussian,
    point_mass,
    pushforward,
    rotation,
)
from .checks import (
    NotNormalizableError,
    commute_gap,
    composed_denoiser,
    composition,
    composition_log_prob,
    factorized_conditionals,
    is_projective,
)
