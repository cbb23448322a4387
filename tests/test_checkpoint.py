"""Checkpoints: safetensors + config.json round trip, and one clear error per broken file."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from projcomp.checkpoint import CheckpointError, load, save
from projcomp.nn import Precond


def tiny_net(**kw):
    torch.manual_seed(0)
    args = dict(img_resolution=16, img_channels=3, label_dim=3, condition={"type": "color", "classes": ["a", "b", "c"]},
                logvar_channels=16, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
                channels_per_head=16)
    args.update(kw)
    net = Precond(**args)
    with torch.no_grad():  # non-trivial output (gains start at 0)
        for n, p in net.named_parameters():
            if n.endswith("gain"):
                p.fill_(0.7)
    return net


def test_round_trip_gives_the_same_denoiser(tmp_path):
    net = tiny_net().eval()
    folder = save(str(tmp_path / "ck"), net, {"images_seen": 1234, "dataset": {"resolution": 16}})
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    loaded = load(folder, channels_last=False)
    assert not loaded.training and loaded.config["images_seen"] == 1234
    assert loaded.label_dim == 3 and loaded.image_shape == (3, 16, 16)
    assert loaded.config["condition"] == {"type": "color", "classes": ["a", "b", "c"]}
    x, s = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 3.0])
    c = loaded.encode_cond("b")
    assert torch.equal(loaded(x, s, c), net(x, s, c))
    # The CPU default stores conv weights NHWC (faster): the same denoiser to float rounding, and a
    # sample's output does not depend on the batch it is evaluated in (beyond oneDNN's ~1e-6, which
    # the default layout shows too).
    fast = load(folder)
    assert fast.unet.enc["16x16_conv"].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x, s, c), net(x, s, c), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast(x[1:], s[1:], c), fast(x, s, c)[1:], rtol=1e-5, atol=1e-5)
    # A file inside the folder works too; fp16 storage loads back as float32, close to the original.
    save(str(tmp_path / "half"), net, fp16=True)
    half = load(str(tmp_path / "half" / "config.json"))
    assert half.unet.out_gain.dtype == torch.float32 and half.config["dtype"] == "float16"
    assert torch.allclose(half(x, s, c), net(x, s, c), atol=2e-2)


def test_truncated_safetensors_names_the_file(tmp_path):
    folder = save(str(tmp_path / "ck"), tiny_net())
    path = os.path.join(folder, "model.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated or corrupt"):
        load(folder)
    open(path, "wb").write(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load(folder)


def test_foreign_safetensors_names_the_file(tmp_path):
    folder = save(str(tmp_path / "ck"), tiny_net())
    save_file({"text_model.embeddings.weight": torch.zeros(4, 4)}, os.path.join(folder, "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.safetensors: weights do not match .*config.json"):
        load(folder)


def test_config_that_does_not_match_the_weights(tmp_path):
    folder = save(str(tmp_path / "ck"), tiny_net())
    cfg_path = os.path.join(folder, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["network"]["kwargs"]["model_channels"] = 32
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="shape .*config.json"):
        load(folder)
    cfg["network"]["kwargs"]["model_channels"] = 16
    cfg["network"]["kwargs"]["label_dim"] = 5  # contradicts its own condition schema
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="config.json: network kwargs are invalid"):
        load(folder)
    open(cfg_path, "w").write("{ broken")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load(folder)
    json.dump({"_class_name": "UNet2DModel"}, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="not a projcomp checkpoint"):
        load(folder)


def test_missing_folder_and_offline_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load(str(tmp_path / "nope"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    with pytest.raises(CheckpointError, match="someone/model.*Hub"):
        load("someone/model")
