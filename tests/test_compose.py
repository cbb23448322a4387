"""Def 5.1 over denoisers: equivalences, batching, validation, per-seed reproducibility."""

import math
import os

import pytest
import torch

import projcomp
from projcomp.compose import CompositionError, Term, compose, denoiser_from_eps, denoiser_from_v, eps_of, score_of
from projcomp.sampling import SamplerConfig, SamplingError, noise_for_seeds, num_network_calls, sample, sigma_schedule
from projcomp.spec import CompositionSpec


class TinyNet(torch.nn.Module):
    """A small conditional conv denoiser (random weights) obeying the denoiser protocol."""

    def __init__(self, label_dim=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.label_dim = label_dim
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 3, 3, padding=1)
        self.emb = torch.nn.Linear(label_dim + 1, 8)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.calls = []

    def forward(self, x, sigma, cond=None):
        self.calls.append(x.shape[0])
        if cond is None:
            cond = torch.zeros(x.shape[0], self.label_dim)
        e = self.emb(torch.cat([cond, torch.log(sigma)[:, None] / 4], 1))[:, :, None, None]
        h = torch.tanh(self.conv1(x / torch.sqrt(1 + sigma[:, None, None, None] ** 2)) + e)
        return self.conv2(h)

    def encode_cond(self, value):
        v = torch.zeros(self.label_dim)
        v[int(value)] = 1
        return v


def _x(B=4, seed=1):
    return torch.randn(B, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_default_weights_are_the_paper_operator():
    net = TinyNet()
    x, s = _x(), torch.full((4,), 2.0)
    comp = compose(Term(net, None), [Term(net, 0), Term(net, 1)])
    Db, D0, D1 = net(x, s), net(x, s, net.encode_cond(0).expand(4, -1)), net(x, s, net.encode_cond(1).expand(4, -1))
    expected = Db + (D0 - Db) + (D1 - Db)
    torch.testing.assert_close(comp(x, s), expected, rtol=1e-5, atol=1e-5)


def test_batched_equals_per_term_and_uses_one_call():
    net, bg_net = TinyNet(seed=0), TinyNet(label_dim=3, seed=5)
    x, s = _x(), torch.full((4,), 0.7)
    terms = [Term(net, i % 3, w) for i, w in enumerate([1.0, -0.5, 2.0, 0.3])]
    comp = compose(Term(bg_net, None), terms)
    net.calls.clear(); bg_net.calls.clear()
    out = comp(x, s)
    assert net.calls == [16] and bg_net.calls == [4]  # 4 terms x 4 samples in ONE call; background separately
    Db = bg_net(x, s)
    ref = Db.clone()
    for t in terms:
        ref += t.weight * (net(x, s, net.encode_cond(t.cond).expand(4, -1)) - Db)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # Chunking under a memory cap changes nothing.
    chunked = compose(Term(bg_net, None), terms, max_batch=3)
    net.calls.clear()
    torch.testing.assert_close(chunked(x, s), out, rtol=1e-5, atol=1e-5)
    assert max(net.calls) <= 3


def test_d_space_equals_score_and_eps_space():
    net = TinyNet()
    x, s = _x(), torch.full((4,), 1.5)
    terms = [Term(net, 0, 1.0), Term(net, 2, 0.7)]
    comp = compose(Term(net, None), terms)
    outs = comp.evaluate_terms(x, s)
    w = [1.0, 0.7]
    score = score_of(outs[0], x, s) + sum(wi * (score_of(o, x, s) - score_of(outs[0], x, s)) for wi, o in zip(w, outs[1:]))
    eps = eps_of(outs[0], x, s) + sum(wi * (eps_of(o, x, s) - eps_of(outs[0], x, s)) for wi, o in zip(w, outs[1:]))
    D = comp(x, s)
    torch.testing.assert_close(score_of(D, x, s), score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eps_of(D, x, s), eps, rtol=1e-4, atol=1e-4)


def test_one_term_is_classifier_free_guidance():
    net = TinyNet()
    x, s = _x(), torch.full((4,), 3.0)
    for w in (1.0, 3.5, -1.0):
        comp = compose(Term(net, None), [Term(net, 1, w)])
        u, c = net(x, s), net(x, s, net.encode_cond(1).expand(4, -1))
        torch.testing.assert_close(comp(x, s), u + w * (c - u), rtol=1e-5, atol=1e-5)


def test_eps_and_v_adapters_compose_like_cfg():
    """An ε-model and a v-model of the same clean-data predictor compose identically to CFG in ε."""
    net = TinyNet()
    x, s = _x(), torch.full((4,), 0.9)
    # Define an ε-model from the net's D, then go back through the adapter: D must be recovered.
    sig_b = s.reshape(-1, 1, 1, 1)
    def eps_fn(x_vp, t, cond):
        x_ve = x_vp * torch.sqrt(1 + t.reshape(-1, 1, 1, 1) ** 2)
        return (x_ve - net(x_ve, t, cond)) / t.reshape(-1, 1, 1, 1)
    def v_fn(z, t, cond):
        tb = t.reshape(-1, 1, 1, 1)
        a = 1 / torch.sqrt(1 + tb**2)
        x_ve = z / a
        D = net(x_ve, t, cond)
        eps = (x_ve - D) / tb
        return a * eps - tb * a * D
    De, Dv = denoiser_from_eps(eps_fn), denoiser_from_v(v_fn)
    c = net.encode_cond(2).expand(4, -1)
    torch.testing.assert_close(De(x, s, c), net(x, s, c), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(Dv(x, s, c), net(x, s, c), rtol=1e-4, atol=1e-4)
    w = 2.0
    comp = compose(Term(De, None), [Term(De, c[0], w)])
    eu, ec = eps_fn(x / torch.sqrt(1 + sig_b**2), s, None), eps_fn(x / torch.sqrt(1 + sig_b**2), s, c)
    torch.testing.assert_close(eps_of(comp(x, s), x, s), eu + w * (ec - eu), rtol=1e-4, atol=1e-4)


def test_sample_is_the_same_alone_or_in_a_batch():
    net = TinyNet()
    comp = compose(Term(net, None), [Term(net, 0), Term(net, 1)])
    batch = sample(comp, [3, 7, 11], (3, 8, 8), num_steps=6)
    alone = sample(comp, [7], (3, 8, 8), num_steps=6)
    # The noise is bit-identical; the result only to float round-off: oneDNN's AVX-512 convolution
    # picks its kernel from the batch size (≈4e-7 per call here), which σ_max = 80 amplifies.
    tol = dict(rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(batch[1:2], alone, **tol)
    # Stochastic settings (churn, Langevin) are per-seed too.
    b2 = sample(comp, [3, 7], (3, 8, 8), num_steps=5, S_churn=10, langevin_steps=1)
    a2 = sample(comp, [7], (3, 8, 8), num_steps=5, S_churn=10, langevin_steps=1)
    torch.testing.assert_close(b2[1:2], a2, **tol)
    assert (batch[0] - batch[1]).abs().max() > 100 * tol["atol"]  # other seeds are far outside it


def test_noise_and_schedule():
    n = noise_for_seeds([5, 6], (2, 3))
    torch.testing.assert_close(n[1], noise_for_seeds([6], (2, 3))[0])
    t = sigma_schedule(32)
    assert t.shape == (33,) and float(t[0]) == pytest.approx(80) and float(t[31]) == pytest.approx(0.002) and t[32] == 0
    assert bool((t[:-1] > t[1:]).all())
    assert num_network_calls(SamplerConfig(num_steps=32)) == 63
    assert num_network_calls(SamplerConfig(num_steps=32, solver="euler")) == 32


def test_heun_counts_its_network_calls():
    net = TinyNet()
    sample(lambda x, s, c=None: net(x, s, c), [0, 1], (3, 8, 8), num_steps=5)
    assert len(net.calls) == num_network_calls(SamplerConfig(num_steps=5)) == 9


@pytest.mark.parametrize("bad,field", [
    (dict(terms=[]), "terms"),
    (dict(weights=[float("nan")]), "weights[0]"),
    (dict(weights=[1.0, 2.0]), "weights"),
    (dict(weights=[float("inf")]), "weights[0]"),
])
def test_bad_compositions_name_the_field(bad, field):
    net = TinyNet()
    terms = bad.get("terms", [Term(net, 0)])
    with pytest.raises(CompositionError, match=field.replace("[", r"\[").replace("]", r"\]")):
        compose(Term(net), terms, weights=bad.get("weights"))


def test_spec_roundtrip_and_errors():
    net, bg = TinyNet(), TinyNet(seed=3)
    d = {"background": {"model": "empty"}, "terms": [{"model": "loc", "cond": 1, "weight": 1.5}],
         "sampler": {"num_steps": 4}, "seeds": [0, 1]}
    spec = CompositionSpec.from_dict(d)
    spec2 = CompositionSpec.from_json(spec.to_json())
    assert spec2.to_dict() == spec.to_dict()
    comp = spec.build({"empty": bg, "loc": net})
    x, s = _x(), torch.full((4,), 1.0)
    torch.testing.assert_close(comp(x, s), bg(x, s) + 1.5 * (net(x, s, net.encode_cond(1).expand(4, -1)) - bg(x, s)))
    with pytest.raises(CompositionError, match="terms"):
        CompositionSpec.from_dict({**d, "terms": []})
    with pytest.raises(CompositionError, match=r"terms\[0\]\.weight"):
        CompositionSpec.from_json('{"background": {"model": "empty"}, "terms": [{"model": "loc", "weight": NaN}]}')
    with pytest.raises(CompositionError, match=r"terms\[0\]\.model: unknown network 'nope'"):
        CompositionSpec.from_dict({**d, "terms": [{"model": "nope"}]}).build({"empty": bg, "loc": net})
    with pytest.raises(CompositionError, match="sampler.num_steps"):
        CompositionSpec.from_dict({**d, "sampler": {"num_steps": 0}})
    with pytest.raises(CompositionError, match="seeds"):
        CompositionSpec.from_dict({**d, "seeds": [-1]})


def _gaussian_ode_error(solver, steps, mu=0.3, s=0.5):
    """Max error of a sampler against the exact probability-flow ODE for data N(mu, s^2) per pixel,
    whose denoiser is exact: D = mu + s^2 / (s^2 + sigma^2) (x - mu) and x_0 = mu + (x_T - mu) s / sqrt(s^2 + sigma_T^2)."""
    calls = []

    def D(x, sigma, cond=None):
        calls.append(1)
        sig = sigma.view(-1, 1, 1, 1).to(torch.float64)
        return (mu + s**2 / (s**2 + sig**2) * (x.to(torch.float64) - mu)).to(torch.float32)

    cfg = SamplerConfig(num_steps=steps, solver=solver)
    out = sample(D, [0, 1], (1, 4, 4), config=cfg).to(torch.float64)
    xT = noise_for_seeds([0, 1], (1, 4, 4), dtype=torch.float64) * cfg.sigma_max
    exact = mu + (xT - mu) * s / math.sqrt(s**2 + cfg.sigma_max**2)
    assert len(calls) == num_network_calls(cfg)
    return float((out - exact).abs().max())


def test_dpm_solver_2m_is_second_order_with_one_call_per_step():
    assert num_network_calls(SamplerConfig(num_steps=16, solver="dpm2m")) == 16
    assert SamplerConfig(num_steps=16, solver="dpm2m").describe() == "16 DPM-Solver++(2M) steps, 16 network calls"
    e16, e32 = _gaussian_ode_error("dpm2m", 16), _gaussian_ode_error("dpm2m", 32)
    assert e16 / e32 > 3                   # halving the step cuts the error ~4x: second order (first order: ~2x)
    assert e16 < _gaussian_ode_error("euler", 16) / 1.5     # the same calls as Euler, closer
    assert e32 < _gaussian_ode_error("heun", 16) / 2        # 32 calls vs Heun's 31, closer
    with pytest.raises(SamplingError, match="dpm2m"):
        SamplerConfig(solver="dpm2m", S_churn=10).validate()


def test_sampler_config_errors():
    with pytest.raises(SamplingError, match="solver"):
        SamplerConfig(solver="rk4").validate()
    with pytest.raises(SamplingError, match="num_steps"):
        SamplerConfig(num_steps=0).validate()


def test_bf16_default_follows_the_cpu():
    """bf16 autocast is only offered as the default where the CPU has native bf16 instructions."""
    from projcomp.sampling import bf16_is_fast
    assert bf16_is_fast("cuda")
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("needs /proc/cpuinfo")
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert bf16_is_fast("cpu") == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_benchmark_baselines_compute_the_same_composition():
    """benchmarks/bench_compose.py times compose against two loops; they must be the same function
    (and make the calls they claim: k+1 per step, or B·(k+1) at batch 1 for the anchors' loop)."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_compose.py")
    spec = importlib.util.spec_from_file_location("bench_compose", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    net = TinyNet()
    conds = [torch.eye(3)[i] for i in range(3)]
    comp = compose(Term(net, None), [Term(net, c) for c in conds])
    x, s = torch.randn(4, 3, 8, 8), torch.full((4,), 1.3)
    with torch.no_grad():
        ref = comp(x, s)
        net.calls.clear()
        loop = bench.PerTermLoop(net, conds)(x, s)
        loop_calls = list(net.calls)
        net.calls.clear()
        anchor = bench.AnchorLoop(net, conds)(x, s)
        anchor_calls = list(net.calls)
    torch.testing.assert_close(loop, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(anchor, ref, rtol=1e-5, atol=1e-5)
    assert loop_calls == [4] * 4 and anchor_calls == [1] * 16
