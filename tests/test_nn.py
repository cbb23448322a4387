"""EDM2 network: magnitude preservation, forced weight normalisation, preconditioning, conditions."""

import math

import pytest
import torch

from projcomp.nn import (ConditionError, MPConv, MPFourier, Precond, make_condition_encoder, mp_cat, mp_silu,
                         mp_sum, normalize, normalize_weights_, set_fold_at_inference, set_force_wn_in_forward)


def tiny_net(label_dim=17, condition={"type": "location", "dim": 2}, **kw):
    torch.manual_seed(0)
    args = dict(img_resolution=16, img_channels=3, label_dim=label_dim, condition=condition, logvar_channels=16,
                model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], channels_per_head=16)
    args.update(kw)
    return Precond(**args)


def rms(x):
    return float(x.detach().pow(2).mean().sqrt())


def test_mp_primitives_preserve_unit_magnitude():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 64, generator=g)
    b = torch.randn(256, 32, generator=g)
    assert rms(normalize(3.7 * a)) == pytest.approx(1.0, abs=1e-3)
    # Pixel norm: unit RMS over channels at every position.
    x = normalize(5 * torch.randn(2, 8, 4, 4, generator=g), dim=1)
    assert torch.allclose(x.pow(2).mean(dim=1), torch.ones(2, 4, 4), atol=1e-3)
    assert rms(mp_silu(a)) == pytest.approx(1.0, abs=0.05)
    for t in (0.3, 0.5, 0.8):
        assert rms(mp_sum(a, torch.randn(256, 64, generator=g), t)) == pytest.approx(1.0, abs=0.03)
        c = mp_cat(a, b, t=t)
        assert c.shape == (256, 96) and rms(c) == pytest.approx(1.0, abs=0.03)
        # The balance t sets the share of energy of each part independently of channel counts.
        ea, eb = c[:, :64].pow(2).sum(), c[:, 64:].pow(2).sum()
        assert float(eb / ea) == pytest.approx(t ** 2 / (1 - t) ** 2, rel=0.1)
    f = MPFourier(512)(torch.randn(1000, generator=g))
    assert rms(f) == pytest.approx(1.0, abs=0.05)


def test_mpconv_unit_gain_and_forced_weight_normalisation():
    conv = MPConv(32, 64, [3, 3])
    with torch.no_grad():
        conv.weight.mul_(7.0)
    x = torch.randn(8, 32, 16, 16)
    y = conv(x)
    assert rms(y[:, :, 2:-2, 2:-2]) == pytest.approx(1.0, abs=0.1)  # unit weights -> unit output
    assert torch.allclose(conv(x, gain=0.0), torch.zeros_like(y))
    # 'after' mode: the stored weight changes only when normalize_weights_ is called.
    conv.train()
    conv(x)
    assert rms(conv.weight[0]) == pytest.approx(7.0, rel=0.2)
    normalize_weights_(conv)
    per_row = conv.weight.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(per_row, torch.ones(64), atol=1e-3)
    # 'before' mode (EDM2): normalised inside forward in training mode, not in eval mode.
    lin = MPConv(10, 4, [])
    with torch.no_grad():
        lin.weight.mul_(3.0)
    set_force_wn_in_forward(lin, True)
    lin.eval()(torch.randn(2, 10))
    assert not torch.allclose(lin.weight.pow(2).mean(dim=1).sqrt(), torch.ones(4), atol=1e-2)
    lin.train()(torch.randn(2, 10))
    assert torch.allclose(lin.weight.pow(2).mean(dim=1).sqrt(), torch.ones(4), atol=1e-3)


def test_inference_folds_weight_normalisation_once_and_follows_updates():
    net = tiny_net().eval()
    with torch.no_grad():  # open the zero-initialised output gain so F(x) is not 0
        for n, p in net.named_parameters():
            if n.endswith("gain"):
                p.fill_(0.7)
    g = torch.Generator().manual_seed(1)
    x, s = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0.3, 1.0, 5.0])
    c = torch.stack([net.encode_cond((0.2, 0.4)), net.encode_cond((0.8, 0.1)), torch.zeros(17)])
    with torch.no_grad():
        folded = net(x, s, c)
        set_fold_at_inference(net, False)
        reference = net(x, s, c)  # EDM2's per-call normalisation
        set_fold_at_inference(net, True)
    assert torch.equal(folded, reference)  # same ops in the same order: bit-identical
    assert any("_fold" in m.__dict__ for m in net.modules())  # the fold was really used
    # A weight update invalidates the folded copy (version counter): outputs follow the new weights.
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()
    loss = net(x, s, c).square().mean()
    loss.backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if n.endswith("weight") and "unet" in n)
    opt.step()
    net.eval()
    with torch.no_grad():
        after = net(x, s, c)
        set_fold_at_inference(net, False)
        after_ref = net(x, s, c)
    assert torch.equal(after, after_ref)
    assert (after - folded).abs().max() > 1e-3


def test_edm2_img64_xs_parameter_count():
    # anchors.md §1.3: edm2-img64-xs unconditional = 124.2 M parameters.
    with torch.device("meta"):
        net = Precond(img_resolution=64, img_channels=3, label_dim=0, model_channels=128, channel_mult=[1, 2, 3, 4],
                      num_blocks=3, attn_resolutions=[16, 8])
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 124.2e6) < 0.1e6
    names = [k for k in net.unet.enc.keys()] + [k for k in net.unet.dec.keys()]
    assert names[0] == "64x64_conv" and "8x8_down" in names and "8x8_in0" in names and names[-1] == "64x64_block3"
    assert net.unet.dec["8x8_in0"].num_heads == 8 and net.unet.enc["16x16_block0"].num_heads == 6


def test_precond_is_edm_preconditioning_at_init():
    net = tiny_net().eval()
    x = torch.randn(4, 3, 16, 16)
    sigma = torch.tensor([0.01, 0.5, 2.0, 80.0])
    D, logvar = net(x, sigma, None, return_logvar=True)
    # The U-Net's output gain starts at 0 (EDM2), so D = c_skip x exactly.
    c_skip = 0.25 / (sigma ** 2 + 0.25)
    assert torch.allclose(D, c_skip.view(-1, 1, 1, 1) * x, atol=1e-6)
    assert logvar.shape == (4, 1, 1, 1)
    # A trained-like net: null label (None) == all-zeros label, != a real label.
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith("gain"):
                p.fill_(1.0)
    c = net.encode_cond((0.25, 0.75))
    d_none = net(x, sigma, None)
    d_zero = net(x, sigma, torch.zeros(4, 17))
    d_real = net(x, sigma, c)  # one label row broadcasts to the batch
    assert torch.equal(d_none, d_zero)
    assert not torch.allclose(d_none, d_real)
    assert torch.allclose(d_real, net(x, sigma, c.expand(4, -1)))
    assert net.image_shape == (3, 16, 16) and net.label_dim == 17
    with pytest.raises(ValueError, match="label_dim=17"):
        net(x, sigma, torch.zeros(4, 5))


def test_location_encoding_unit_norm_injective_never_null():
    enc = make_condition_encoder({"type": "location", "dim": 2})
    assert enc.label_dim == 17
    pts = [(x / 10, y / 10) for x in range(11) for y in range(11)]
    v = enc.encode_batch(pts)
    assert torch.allclose(v.norm(dim=1), torch.ones(len(pts)), atol=1e-5)
    d = torch.cdist(v, v) + torch.eye(len(pts)) * 10
    assert float(d.min()) > 0.05  # distinct locations, distinct labels
    assert float(v.abs().sum(dim=1).min()) > 0.5  # never the null vector
    assert torch.equal(enc.encode(None), torch.zeros(17))
    with pytest.raises(ConditionError, match="location"):
        enc.encode((0.5,))
    with pytest.raises(ConditionError, match="\\[0, 1\\]"):
        enc.encode((3.0, 0.5))


def test_class_and_multihot_encoding():
    classes = ["gray", "red", "blue"]
    enc = make_condition_encoder({"type": "color", "classes": classes})
    assert torch.equal(enc.encode("blue"), torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(enc.encode(1), torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ConditionError, match="pink"):
        enc.encode("pink")
    with pytest.raises(ConditionError, match="out of range"):
        enc.encode(3)
    mh = make_condition_encoder({"type": "multihot", "classes": classes})
    v = mh.encode(["gray", "blue"])
    assert torch.allclose(v, torch.tensor([1.0, 0.0, 1.0]) / math.sqrt(2))
    with pytest.raises(ConditionError, match="schema type"):
        make_condition_encoder({"type": "weather"})
