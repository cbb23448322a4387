"""The exact-score theory lab: closed-form denoisers, Def 5.2 / Def 4.1 / §7 checks, and the paper's toys."""

import json
import math

import pytest
import torch

from projcomp.compose import score_of
from projcomp.sampling import sample
from projcomp.theory import (GaussianMixture, Mixture, NotNormalizableError, Product, TheoryError, bernoulli, commute_gap,
                             composed_denoiser, composition, composition_log_prob, factorized_conditionals, gaussian,
                             is_projective, point_mass, pushforward, rotation)
from projcomp.theory.toys import (eq17_distributions, eq18_distributions, featuremap_distributions, gauss2d_experts, single_thread,
                                  toy_eq17, toy_featuremap, toy_gauss2d)

D64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one intra-op thread is ~100x faster than two on a shared CPU.
    with single_thread():
        yield


def _autograd_score(p, x, sigma):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.log_prob(x, sigma).sum(), x)
    return g


def _random_full_mixture(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(3, d, d, generator=g, dtype=D64)
    covs = L @ L.transpose(1, 2) * 0.3
    covs[2] = 0.0  # a point mass
    covs[1][-1, :] = 0.0  # a singular (rank-deficient) component
    covs[1][:, -1] = 0.0
    return GaussianMixture([0.2, 0.5, 0.3], torch.randn(3, d, generator=g, dtype=D64), covs)


@pytest.mark.parametrize("sigma", [0.05, 0.4, 3.0])
def test_closed_form_denoiser_is_tweedie_of_exact_log_density(sigma):
    """score = (D − x) / σ² must equal ∇ log p_σ computed by autograd, for every family."""
    p_b, p_u, ps = eq18_distributions()
    dists = [
        _random_full_mixture(),
        gaussian([1.0, -2.0], [0.5, 2.0]),
        p_u,                                                            # Mixture of Products
        Product([([0, 2], _random_full_mixture(2, seed=3)), ([1], bernoulli(0.3, std=0.1))]),
        pushforward(featuremap_distributions()[1][0], torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=D64)),
    ]
    g = torch.Generator().manual_seed(1)
    for p in dists:
        x = p.sample(16, g) + sigma * torch.randn(16, p.dim, generator=g, dtype=D64)
        closed = p.score(x, sigma)
        auto = _autograd_score(p, x, sigma)
        assert torch.allclose(closed, auto, rtol=1e-7, atol=1e-7 / sigma**2), p


def test_denoiser_matches_monte_carlo_posterior_mean():
    p = GaussianMixture([0.3, 0.7], torch.tensor([[-1.0], [2.0]], dtype=D64), torch.tensor([0.2, 0.5], dtype=D64))
    g = torch.Generator().manual_seed(0)
    x0 = p.sample(400_000, g)[:, 0]
    for x, s in [(0.3, 0.7), (1.5, 1.5), (-2.0, 0.3)]:
        w = torch.exp(-0.5 * (x - x0) ** 2 / s**2)
        mc = float((w * x0).sum() / w.sum())
        assert abs(float(p.denoise(torch.tensor([[x]]), s)) - mc) < 0.01


def test_log_density_is_normalised_and_matches_noising():
    p = _random_full_mixture(2, seed=5)
    g = torch.linspace(-12, 12, 601, dtype=D64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    mass = float(torch.exp(p.log_prob(grid, 0.8)).sum() * (g[1] - g[0]) ** 2)
    assert abs(mass - 1) < 1e-4
    # N_σ[p] as an explicit mixture has the same density as log_prob at σ.
    assert torch.allclose(p.noised(0.8).log_prob(grid[:50], 0.0), p.log_prob(grid[:50], 0.8))


def test_denoiser_protocol_shapes_and_errors():
    p = GaussianMixture([1.0, 1.0], torch.randn(2, 12, dtype=D64), 0.1)
    x = torch.randn(4, 3, 2, 2)
    out = p(x, torch.full((4,), 0.5))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.allclose(out.reshape(4, -1).double(), p.denoise(x.reshape(4, -1), 0.5), atol=1e-6)
    with pytest.raises(TheoryError, match="dimension 12"):
        p(torch.randn(4, 5), torch.ones(4))
    with pytest.raises(TheoryError, match="covs"):
        GaussianMixture([1.0], torch.zeros(1, 2), -torch.eye(2)[None])
    with pytest.raises(TheoryError, match="sigma"):
        point_mass([0.0, 1.0]).log_prob(torch.zeros(1, 2), 0.0)


# ---------------------------------------------------------------------------------------------
# Def 5.2, Def 4.1, §7.


def test_factorized_conditionals_eq17_background_vs_bayes():
    p_b, p_u, ps = eq17_distributions()
    terms, masks = [ps[i] for i in (0, 2, 4, 6)], [[0], [2], [4], [6]]
    assert factorized_conditionals(p_b, terms, masks)["factorized"]
    bad = factorized_conditionals(p_u, terms, masks)
    assert not bad["factorized"] and bad["background_error"] > 1 and min(bad["conditional_errors"]) > 1
    # Wrong masks also fail: p_0 differs from p_b on coordinate 0, not 1.
    assert not factorized_conditionals(p_b, [ps[0]], [[1]])["factorized"]
    # The sample-based (necessary-condition) variant agrees on eq. 18.
    q_b, q_u, qs = eq18_distributions()
    g = torch.Generator().manual_seed(0)
    xb, xu = q_b.sample(4000, g), q_u.sample(4000, g)
    xs = [qs[i].sample(4000, g) for i in (0, 2)]
    assert factorized_conditionals(xb, xs, [[0], [2]])["factorized"]
    assert not factorized_conditionals(xu, xs, [[0], [2]], tol=0.05)["factorized"]
    with pytest.raises(TheoryError, match="disjoint"):
        factorized_conditionals(p_b, terms[:2], [[0, 1], [1]])


def test_thm53_product_form_and_commute_gap_zero_when_factorized():
    p_b, _, ps = eq18_distributions()
    terms, masks = [ps[i] for i in (1, 3)], [[1], [3]]
    C = composition(p_b, terms, masks=masks)                  # Thm 5.3(a): p_b(x|M_b) ∏ p_i(x|M_i)
    x = C.sample(8, torch.Generator().manual_seed(0)) + 0.3 * torch.randn(8, 8, dtype=D64)
    # Def 5.1's density form at σ equals N_σ[C] up to a constant (Thm 5.3(c)).
    diff = composition_log_prob(p_b, terms, x, 0.3) - C.log_prob(x, 0.3)
    assert float(diff.max() - diff.min()) < 1e-9
    assert commute_gap(p_b, terms, [0.05, 0.5, 5.0], masks=masks, n=128)["max_rms"] < 1e-5
    with pytest.raises(TheoryError, match="not Factorized"):
        composition(eq17_distributions()[1], terms, masks=masks)


def test_composition_in_D_equals_composition_in_score_and_density():
    """compose() on exact denoisers == Σ scores combination == ∇ of Def 5.1's density form at σ."""
    p_b, ps = featuremap_distributions()
    A = torch.tensor([[1.0, 0.7], [0.2, 1.3]], dtype=D64)
    X = [pushforward(p, A) for p in [p_b, *ps]]
    w = [1.0, 1.5]
    D = composed_denoiser(X[0], X[1:], weights=w)
    g = torch.Generator().manual_seed(3)
    for s in [0.1, 1.0]:
        x = 2 * torch.randn(32, 2, generator=g, dtype=D64)
        sig = torch.full((32,), s, dtype=D64)
        s_comp = score_of(D(x, sig).double(), x, sig)
        s_sum = X[0].score(x, s) + sum(wi * (p.score(x, s) - X[0].score(x, s)) for wi, p in zip(w, X[1:]))
        xr = x.clone().requires_grad_(True)
        (s_auto,) = torch.autograd.grad(composition_log_prob(X[0], X[1:], xr, s, weights=w).sum(), xr)
        tol = 1e-5 / s**2
        assert torch.allclose(s_comp, s_sum, atol=tol) and torch.allclose(s_sum, s_auto, atol=1e-8)


def test_gaussian_background_composition_is_normalised_density_form():
    p_b, ps = featuremap_distributions()
    C = composition(p_b, ps)                                  # precision algebra, a 4-component mixture
    Cm = composition(p_b, ps, masks=[[0], [1]])               # Thm 5.3(a)
    assert torch.allclose(C.mean(), Cm.mean(), atol=1e-12) and torch.allclose(C.cov(), Cm.cov(), atol=1e-12)
    x = 2 * torch.randn(64, 2, dtype=D64)
    diff = composition_log_prob(p_b, ps, x) - C.log_prob(x)
    assert float(diff.max() - diff.min()) < 1e-9


def test_lemma_62_equivariance_at_t0_for_any_invertible_map():
    p_b, ps = featuremap_distributions()
    Cz = composition(p_b, ps, masks=[[0], [1]])
    for A in (rotation(0.4), torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=D64), torch.tensor([[2.0, 0.3], [-0.5, 0.4]], dtype=D64)):
        X = [pushforward(p, A) for p in [p_b, *ps]]
        lhs, rhs = composition(X[0], X[1:]), pushforward(Cz, A)     # C[A♯p] vs A♯C[p]
        assert torch.allclose(lhs.mean(), rhs.mean(), atol=1e-10) and torch.allclose(lhs.cov(), rhs.cov(), atol=1e-10)
        x = rhs.sample(64, torch.Generator().manual_seed(0))
        assert torch.allclose(lhs.log_prob(x), rhs.log_prob(x), atol=1e-9)


def test_commute_gap_orthogonal_zero_non_orthogonal_large():
    p_b, ps = featuremap_distributions()
    Cz = composition(p_b, ps, masks=[[0], [1]])
    sig = [0.1, 0.5, 1.0, 2.0]
    gaps = {}
    for name, A in (("rot", rotation(0.5)), ("shear", torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=D64))):
        X = [pushforward(p, A) for p in [p_b, *ps]]
        gaps[name] = commute_gap(X[0], X[1:], sig, target=pushforward(Cz, A), n=256)["max_rms"]
    assert gaps["rot"] < 1e-5
    assert gaps["shear"] > 0.1


def test_is_projective():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 3, generator=g, dtype=D64)
    b = torch.randn(2000, 3, generator=g, dtype=D64)
    b[:, 2] += 1.0
    assert is_projective(a, [b], [[0, 1]])["projective"]
    res = is_projective(a, [b], [[1, 2]])
    assert not res["projective"] and res["terms"][0]["w1"][1] > 0.8
    assert is_projective(a, [b], [lambda x: x[:, :1] + x[:, 1:2]], tol=0.1)["projective"]


# ---------------------------------------------------------------------------------------------
# The paper's toys.


def test_eq17_acceptance_empty_vs_bayes():
    numbers, _ = toy_eq17(num_seeds=256)
    e, b = numbers["empty"], numbers["bayes"]
    assert abs(e["composed_mean"] - 1) <= 0.05 and abs(e["composed_min"] - 1) <= 0.05
    assert e["other_max_abs"] <= 0.05
    assert e["factorized"] and not b["factorized"]
    assert e["composed_mean"] - b["composed_mean"] > 0.3      # Bayes is dimmer by a wide margin (≈ 0.75)
    assert e["all_composed_on_rate"] == 1.0 and b["all_composed_on_rate"] < 0.1
    assert e["projective"] < 0.05 < b["projective"]           # max W1 of Π_i♯p̂ vs Π_i♯p_i


def test_eq17_tight_gaussian_reading_also_composes():
    p_b, _, ps = eq17_distributions(std=0.05)
    xs = sample(composed_denoiser(p_b, [ps[i] for i in (0, 2, 4, 6)]), range(64), (8,)).double()
    m = xs.mean(0)
    assert torch.allclose(m[[0, 2, 4, 6]], torch.ones(4, dtype=D64), atol=0.05)
    assert float(m[[1, 3, 5, 7]].abs().max()) < 0.05


def test_eq18_cluttered_bayes_about_as_good():
    p_b, p_u, ps = eq18_distributions()
    terms = [ps[i] for i in (0, 2, 4, 6)]
    means = {}
    for name, bg in (("b", p_b), ("u", p_u)):
        xs = sample(composed_denoiser(bg, terms), range(64), (8,)).double()
        means[name] = xs.mean(0)
    for m in means.values():
        assert float(m[[0, 2, 4, 6]].min()) > 0.95           # every requested coordinate is on
    assert abs(float(means["b"][[1, 3, 5, 7]].mean()) - 0.5) < 0.1
    assert 0.2 < float(means["u"][[1, 3, 5, 7]].mean()) < 0.5  # clutter slightly thinned (exact target 0.366)


def test_gauss2d_split_vs_shared():
    p_b, e1, split, shared = gauss2d_experts()
    assert torch.allclose(composition(p_b, [e1, split]).mean(), torch.tensor([-2.0, 2.0], dtype=D64))
    assert torch.allclose(composition(p_b, [e1, shared]).mean(), torch.tensor([-1.5, 0.0], dtype=D64))
    with pytest.raises(NotNormalizableError, match="not normalizable"):
        composition(gaussian([0.0, 0.0], [1.0, 1.0]), [gaussian([-2.0, 0.0], [4.0, 4.0]), gaussian([0.0, 2.0], [4.0, 4.0])])
    numbers, _ = toy_gauss2d(num_seeds=256)
    assert numbers["split"]["factorized"] and not numbers["shared"]["factorized"]
    assert torch.allclose(torch.tensor(numbers["split"]["sample_mean"]), torch.tensor([-2.0, 2.0]), atol=0.15)
    # Shared: not factorized, so the ODE endpoint (≈ −0.79, derived in toy_gauss2d) misses the hybrid −1.5.
    assert abs(numbers["shared"]["sample_mean"][0] + 0.79) < 0.15
    assert numbers["non_normalizable_raises"]


def test_featuremap_orthogonal_samples_correctly_non_orthogonal_does_not():
    numbers, _ = toy_featuremap(num_seeds=256, langevin_steps=0, ref_samples=4000)
    o, n = numbers["orthogonal"], numbers["non_orthogonal"]
    for r in (o, n):
        assert r["lemma_6_2"]["mean_err"] < 1e-10 and r["lemma_6_2"]["logdensity_err"] < 1e-9
    assert o["heun"]["max_w1"] < 0.12 and o["heun"]["max_mode_mass_error"] < 0.06
    assert n["heun"]["max_w1"] > 0.3 and n["heun"]["max_mode_mass_error"] > 0.08
    assert o["commute_gap"]["max_rms"] < 1e-5 < 0.1 < n["commute_gap"]["max_rms"]


def test_cli_writes_figure_numbers_and_config(tmp_path):
    from projcomp.theory.__main__ import main

    assert main(["--outdir", str(tmp_path), "--toy", "eq17", "--seeds", "32", "--docs", str(tmp_path / "docs")]) == 0
    assert (tmp_path / "eq17.png").stat().st_size > 1000 and (tmp_path / "docs" / "theory_eq17.png").exists()
    numbers = json.loads((tmp_path / "eq17.json").read_text())
    assert numbers["config"]["num_seeds"] == 32 and numbers["acceptance"]["empty_composed_within_0.05_of_1"]
    assert json.loads((tmp_path / "config.json").read_text())["toys"]["eq17"]["sampler"]["num_steps"] == 32
