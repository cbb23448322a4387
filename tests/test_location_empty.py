"""The location-empty net: one network for p_i, the empty background p_b and (null label) p_u."""

import json
import zipfile

import pytest
import torch

from projcomp.clevr.datasets import ClevrZipDataset, make_dataset
from projcomp.experiments import Zoo, setting_spec
from projcomp.nn.conditions import ConditionError, make_condition_encoder


def test_empty_label_encoding():
    enc = make_condition_encoder({"type": "location", "dim": 2, "empty": True})
    plain = make_condition_encoder({"type": "location", "dim": 2})
    assert enc.label_dim == plain.label_dim + 1
    e = enc.encode("empty")
    v = enc.encode([0.3, 0.7])
    assert e[-1] == 1 and e[:-1].abs().sum() == 0                      # its own direction
    torch.testing.assert_close(v[:-1], plain.encode([0.3, 0.7]))        # locations unchanged
    assert v[-1] == 0 and float(v.norm()) == pytest.approx(1.0)
    assert enc.encode(None).abs().sum() == 0                            # null label stays zeros
    with pytest.raises(ConditionError, match="empty"):
        plain.encode("empty")
    with pytest.raises(ConditionError):
        enc.encode("full")


def test_location_empty_dataset(tmp_path):
    out = tmp_path / "le.zip"
    make_dataset("location-empty", 48, 16, str(out), seed=3, workers=1, progress=False)
    doc = json.loads(zipfile.ZipFile(out).read("dataset.json"))
    assert doc["projcomp"]["condition"] == {"type": "location", "dim": 2, "empty": True}
    labels = [l for _, l in doc["labels"]]
    n_empty = sum(l == "empty" for l in labels)
    assert 4 <= n_empty <= 24                                           # ~25 % of 48
    ds = ClevrZipDataset(str(out))
    for i, l in enumerate(labels):
        scene = ds.scene(i)
        assert (len(scene["objects"]) == 0) == (l == "empty")
        if l != "empty":
            assert len(l) == 2 and all(0 <= c <= 1 for c in l)
    i_empty = labels.index("empty")
    assert torch.isnan(ds[i_empty][1]).all()


def test_setting_a_uses_the_empty_label_of_a_location_empty_net(tmp_path):
    from projcomp.checkpoint import save
    from projcomp.nn import Precond

    schema = {"type": "location", "dim": 2, "empty": True}
    net = Precond(img_resolution=16, img_channels=3, label_dim=make_condition_encoder(schema).label_dim, condition=schema,
                  logvar_channels=16, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
                  channels_per_head=16)
    save(str(tmp_path / "loc"), net, {"dataset": {"preset": "location-empty"}})
    zoo = Zoo(str(tmp_path))
    a = setting_spec(zoo, "A", [[0.2, 0.5], [0.8, 0.5]], [0])
    b = setting_spec(zoo, "B", [[0.2, 0.5], [0.8, 0.5]], [0])
    assert (a.background.model, a.background.cond) == ("loc", "empty")
    assert (b.background.model, b.background.cond) == ("loc", None)
    # Background and terms share the network: one batched call per step for everything.
    comp = a.build(zoo.registry(["loc"]))
    assert len(comp._groups) == 1


def test_init_from_widens_the_label_embedding(tmp_path):
    """Warm start from a plain location net: old weights kept, the new label column added."""
    import subprocess, sys
    from projcomp.checkpoint import read_safetensors

    make_dataset("location", 32, 16, str(tmp_path / "l.zip"), seed=1, workers=1, progress=False)
    make_dataset("location-empty", 32, 16, str(tmp_path / "le.zip"), seed=1, workers=1, progress=False)
    run = lambda *a: subprocess.run([sys.executable, "-m", "projcomp.train", "--preset", "tiny", "--no-progress", *a],
                                    capture_output=True, text=True, timeout=300)
    r = run("--data", str(tmp_path / "l.zip"), "--outdir", str(tmp_path / "r1"), "--duration", "64")
    assert r.returncode == 0, r.stderr
    r = run("--data", str(tmp_path / "le.zip"), "--outdir", str(tmp_path / "r2"), "--duration", "16",
            "--init-from", str(tmp_path / "r1" / "checkpoint"), "--lr", "1e-9", "--rampup", "0")
    assert r.returncode == 0, r.stderr
    assert "1 widened" in r.stderr + r.stdout
    w1, _ = read_safetensors(str(tmp_path / "r1" / "checkpoint" / "model.safetensors"))
    w2, _ = read_safetensors(str(tmp_path / "r2" / "checkpoint" / "model.safetensors"))
    old, new = w1["unet.emb_label.weight"], w2["unet.emb_label.weight"]
    assert new.shape[1] == old.shape[1] + 1
    # With a vanishing learning rate the copied weights survive (up to re-normalisation of the row).
    cos = torch.nn.functional.cosine_similarity(new[:, : old.shape[1]].flatten(), old.flatten(), dim=0)
    assert cos > 0.9
