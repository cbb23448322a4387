"""The faster CPU training step (issue 14) computes what the plain step computes: channels-last
weights and activations, a clip that is skipped when it clips nothing, and the constant scales of
mp_silu / mp_sum folded into the convolutions' weight scale give the same loss curve as the plain
layout and formulas within fp32 rounding, over 2 Ki images of the tiny preset."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import write_dataset

from projcomp import train as T
from projcomp.nn import Precond, normalize_weights_
from projcomp.nn import unet as unet_module
from projcomp.nn.mp import clip_activations
from projcomp.training import loop


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "squares-16.zip")


def test_clip_activations_matches_clip_in_value_and_gradient():
    for scale in (1.0, 300.0):  # nothing clipped / some values clipped
        x = (torch.randn(4, 8, 5, 5) * scale).requires_grad_()
        y = clip_activations(x, 256)
        ref_x = x.detach().clone().requires_grad_()
        ref = ref_x.clip(-256, 256)
        g = torch.randn_like(ref)
        (y * g).sum().backward()
        (ref * g).sum().backward()
        assert torch.equal(y, ref) and torch.equal(x.grad, ref_x.grad)
    x = torch.tensor([1.0, float("nan"), 2.0], requires_grad=True)  # NaN takes the ordinary clip
    clip_activations(x, 256).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 1.0]))


def test_fast_step_matches_plain_step(monkeypatch):
    cfg = T.resolve_config("cpu-32")
    torch.manual_seed(0)
    plain = Precond(**T.network_kwargs(cfg, 18, None)).train()
    normalize_weights_(plain)
    fast = Precond(**T.network_kwargs(cfg, 18, None)).train()
    fast.load_state_dict(plain.state_dict())
    loop.prepare_for_training(fast)
    assert fast.unet.enc["32x32_conv"].weight.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    labels = torch.nn.functional.normalize(torch.randn(4, 18, generator=g), dim=1)
    rnd, noise = torch.randn(4, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    loss_fn = T.EDM2Loss(cfg["P_mean"], cfg["P_std"], cfg["sigma_data"])
    with monkeypatch.context() as m:
        m.setattr(unet_module.Block, "fold_scales", False)
        la, _ = loop.forward_backward(plain, loss_fn, x, labels, rnd, noise, scale=0.25)
    lb, _ = loop.forward_backward(fast, loss_fn, x, labels, rnd, noise, scale=0.25)
    assert torch.allclose(la, lb, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6 * float(a.grad.abs().max()) + 1e-12), name


def test_fast_step_loss_curve_matches_plain_step(data16, tmp_path, monkeypatch):
    cfg = T.resolve_config("tiny", {"duration": "2Ki", "status_every": 128})
    fast = T.training_loop(cfg, data16, str(tmp_path / "fast"), progress=False)
    monkeypatch.setattr(loop, "prepare_for_training", lambda net: net)  # plain NCHW layout
    monkeypatch.setattr(unet_module, "clip_activations", lambda x, c: x.clip(-c, c))  # plain clip
    monkeypatch.setattr(unet_module.Block, "fold_scales", False)  # plain mp_silu / mp_sum
    plain = T.training_loop(cfg, data16, str(tmp_path / "plain"), progress=False)
    curve = {}
    for name in ("fast", "plain"):
        curve[name] = [json.loads(line) for line in open(tmp_path / name / "stats.jsonl")]
    assert [s["cur_nimg"] for s in curve["fast"]] == [s["cur_nimg"] for s in curve["plain"]]
    assert len(curve["fast"]) == 2048 // 128
    worst = 0.0
    for a, b in zip(curve["fast"], curve["plain"]):
        for k in ("loss", "loss_raw"):
            worst = max(worst, abs(a[k] - b[k]) / max(abs(b[k]), 1.0))
    print(f"loss curves over 2 Ki images: max relative difference {worst:.2e}")
    assert worst < 1e-4, worst
    # The final weights (mean of the last 16 updates) agree to rounding grown over 128 updates
    # (measured: max |diff| 2.4e-4 on unit-RMS weights, 5e-4 relative).
    wa, wb = load_file(f"{fast}/model.safetensors"), load_file(f"{plain}/model.safetensors")
    for k in wa:
        assert float((wa[k] - wb[k]).norm()) <= 5e-3 * float(wb[k].norm()) + 1e-6, k
