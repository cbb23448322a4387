"""Training: the tiny preset learns, resumes bit-identically after SIGKILL, and DDP (gloo) matches
a single process with the same global batch."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from projcomp import train as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_dataset(path, n=48, resolution=16, seed=0):
    """A dataset zip in the format of docs/design.md: one red square per image, labelled by its centre."""
    rng = np.random.default_rng(seed)
    labels = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img = np.full((resolution, resolution, 3), 60, np.uint8)
            x, y = rng.uniform(0.2, 0.8, 2)
            cx, cy = int(x * resolution), int(y * resolution)
            img[cy - 2:cy + 2, cx - 2:cx + 2] = [200, 40, 40]
            name = f"00000/img{i:08d}.png"
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="png")
            zf.writestr(name, buf.getvalue())
            labels.append([name, [float(x), float(y)]])
        meta = {"preset": "test-squares", "resolution": resolution, "num_images": n, "seed": seed,
                "condition": {"type": "location", "dim": 2}, "command": "tests/test_train.py", "version": 1}
        zf.writestr("dataset.json", json.dumps({"labels": labels, "projcomp": meta}))
    return str(path)


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "squares-16.zip")


def run_cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "projcomp.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))

#----------------------------------------------------------------------------


def test_schedules_and_config():
    # EDM2 lr: linear warm-up, then alpha_ref / sqrt(t / t_ref) after t_ref updates.
    assert T.learning_rate(0, 64, 0.01, 100, 640) == 0.0
    assert T.learning_rate(320, 64, 0.01, 100, 640) == pytest.approx(0.005)
    assert T.learning_rate(64 * 100, 64, 0.01, 100, 640) == pytest.approx(0.01)
    assert T.learning_rate(64 * 400, 64, 0.01, 100, 640) == pytest.approx(0.005)
    # Power-function EMA: exp_to_std(std_to_exp(s)) = s (EDM2 Eq. 3).
    for s in (0.05, 0.1, 0.2):
        g = T.std_to_exp(s)
        assert math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))) == pytest.approx(s, rel=1e-6)
    assert T.parse_nimg("2Mi") == 2 * 2 ** 20 and T.parse_nimg("500k") == 500_000 and T.parse_nimg(4096) == 4096
    with pytest.raises(T.TrainError, match="--duration"):
        T.parse_nimg("lots", "duration")


def test_paper_preset_and_dry_run(capsys):
    assert T.main(["--preset", "paper-xs", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    expected = dict(resolution=128, model_channels=128, channel_mult=[1, 2, 3, 4], num_blocks=3,
                    attn_resolutions=[16, 8], batch=2048, duration=128 * 2 ** 20, lr=0.012, t_ref=35000,
                    rampup=10 * 2 ** 20, P_mean=-0.8, P_std=1.6, avg_last=4096, force_wn="after", dropout=0.0,
                    beta1=0.9, beta2=0.99, sigma_data=0.5, ema_stds=[])
    assert {k: cfg[k] for k in expected} == expected
    assert T.main(["--preset", "cpu-32", "--dry-run", "--lr", "0.5", "--duration", "2Mi", "--ema-stds", "0.05,0.1",
                   "--bf16", "--force-wn", "before", "--batch-gpu", "16"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["lr"], cfg["duration"], cfg["ema_stds"], cfg["bf16"], cfg["force_wn"], cfg["batch_gpu"]) == \
        (0.5, 2 * 2 ** 20, [0.05, 0.1], True, "before", 16)
    assert T.main(["--preset", "cpu-32", "--dry-run", "--force-wn", "sometimes"]) == 2
    assert "--force-wn 'sometimes'" in capsys.readouterr().err


def test_wrong_resolution_dataset_names_the_file(data16, tmp_path, capsys):
    rc = T.main(["--preset", "tiny", "--resolution", "32", "--data", data16, "--outdir", str(tmp_path / "r"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "squares-16.zip: images are 16x16" in err and "32x32" in err
    assert T.main(["--preset", "tiny", "--data", str(tmp_path / "missing.zip"), "--outdir", str(tmp_path / "r")]) == 2
    assert "missing.zip" in capsys.readouterr().err


def test_tiny_preset_trains_and_samples(data16, tmp_path):
    cfg = T.resolve_config("tiny", {"duration": "1536", "avg_last": 8, "ema_stds": [0.1]})
    final = T.training_loop(cfg, data16, str(tmp_path / "run"), progress=False)
    stats = [json.loads(l) for l in open(tmp_path / "run" / "stats.jsonl")]
    assert stats[-1]["cur_nimg"] == 1536 and len(stats) == 1536 // 128
    # The loss falls: the weighted denoising error and the full (uncertainty) loss.
    assert stats[-1]["loss_raw"] < 0.6 * stats[0]["loss_raw"]
    assert stats[-1]["loss"] < stats[0]["loss"] - 0.5

    # Forced weight normalisation after each update: stored MPConv weights have unit RMS rows.
    state = sorted(p for p in os.listdir(tmp_path / "run") if p.endswith(".safetensors"))[-1]
    st = load_file(str(tmp_path / "run" / state))
    w = st["net.unet.enc.16x16_block0.conv_res0.weight"]
    assert torch.allclose(w.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.ones(w.shape[0]), atol=1e-4)
    # The final weights are the running mean of the last 8 updates (not the last iterate).
    assert not torch.equal(weights(final)["unet.out_gain"], st["net.unet.out_gain"])

    import projcomp
    from projcomp.compose import Term, compose
    from projcomp.sampling import sample

    net = projcomp.load(final)
    assert net.config["averaging"] == {"kind": "mean-of-last-updates", "updates": 8, "first_update": 89}
    assert net.config["images_seen"] == 1536 and net.config["final"] is True
    ema = projcomp.load(str(tmp_path / "run" / "checkpoint-ema-0.100"))
    assert ema.config["averaging"]["kind"] == "power-ema"
    # Bayes composition of two locations through the shared operator and sampler.
    den = compose(Term(net, None), [Term(net, net.encode_cond((0.3, 0.3))), Term(net, net.encode_cond((0.7, 0.7)))])
    x = sample(den, [0, 1], net.image_shape, num_steps=6)
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    # Re-running a finished run does nothing and keeps the checkpoint.
    before = weights(final)
    T.training_loop(cfg, data16, str(tmp_path / "run"), progress=False)
    after = weights(final)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sigkill_then_resume_is_bit_identical(data16, tmp_path):
    args = ["--preset", "tiny", "--data", data16, "--duration", "384", "--state-every", "64", "--status-every", "64",
            "--avg-last", "16", "--no-progress"]
    ref = run_cli(args + ["--outdir", str(tmp_path / "ref")])
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err

    victim_dir = tmp_path / "victim"
    victim = run_cli(args + ["--outdir", str(victim_dir)])
    deadline = time.time() + 600
    while time.time() < deadline and victim.poll() is None:
        if T.find_latest_state(str(victim_dir)) is not None:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    # The state's own metadata (its .json twin is written just after it and may be missing when
    # the kill lands between the two writes; resuming reads only the .safetensors).
    from safetensors import safe_open
    with safe_open(T.find_latest_state(str(victim_dir)), "pt") as f:
        killed_at = json.loads(f.metadata()["projcomp_state"])
    assert 0 < killed_at["cur_nimg"] < 384
    assert not os.path.exists(victim_dir / "checkpoint" / "model.safetensors")

    again = run_cli(args + ["--outdir", str(victim_dir)])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "resuming from" in err
    a, b = weights(tmp_path / "ref" / "checkpoint"), weights(victim_dir / "checkpoint")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The training state (weights, Adam moments, averaging buffers) is identical too.
    sa = load_file(T.find_latest_state(str(tmp_path / "ref")))
    sb = load_file(T.find_latest_state(str(victim_dir)))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    stats = [json.loads(l)["cur_nimg"] for l in open(victim_dir / "stats.jsonl")]
    assert stats == sorted(set(stats)) and stats[-1] == 384  # no duplicated lines after the resume


def test_torchrun_gloo_matches_single_process(data16, tmp_path):
    common = ["--preset", "tiny", "--data", data16, "--duration", "160", "--batch", "16", "--rampup", "0",
              "--avg-last", "4", "--state-every", "1Ki", "--no-progress", "--label-dropout", "0.25"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "projcomp.train", *common, "--batch-gpu", "4", "--outdir", str(tmp_path / "ddp")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    opts = json.load(open(tmp_path / "ddp" / "training_options.json"))
    assert opts["world"] == 2
    # Single process, same global batch, different micro-batching (16 = 1 x 16).
    cfg = T.resolve_config("tiny", dict(duration="160", batch=16, rampup=0, avg_last=4, state_every="1Ki",
                                        label_dropout=0.25, batch_gpu=16))
    single = T.training_loop(cfg, data16, str(tmp_path / "single"), progress=False)
    a, b = weights(single), weights(tmp_path / "ddp" / "checkpoint")
    init = T.Trainer(cfg, data16, str(tmp_path / "unused"), progress=False).net.state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in a)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"DDP vs single-process: max |diff| {diff:.2e}, max weight change {moved:.2e}")
    assert moved > 1e-2  # it trained
    assert diff < 1e-4 * max(moved, 1.0), (diff, moved)


def test_edm2_options_before_wn_bf16_and_accumulation(data16, tmp_path):
    # EDM2's original forced-WN placement, bf16 autocast and 4 accumulation rounds all run.
    cfg = T.resolve_config("tiny", dict(duration="64", force_wn="before", bf16=True, batch_gpu=4, rampup=0,
                                        ema_stds=[0.05], status_every=16))
    final = T.training_loop(cfg, data16, str(tmp_path / "run"), progress=False)
    stats = [json.loads(l) for l in open(tmp_path / "run" / "stats.jsonl")]
    assert len(stats) == 4 and all(math.isfinite(s["loss"]) for s in stats)
    import projcomp
    net = projcomp.load(final)
    x = torch.randn(2, 3, 16, 16)
    assert torch.isfinite(net(x, torch.tensor([0.1, 10.0]), None)).all()


def test_a_run_can_be_shortened_midway_before_averaging(data16, tmp_path):
    """duration / avg_last fix only where a run ends: resuming a 384-image run's state at 128
    images as a 256-image run equals a run started at 256; once averaging has begun it is refused."""
    base = ["--preset", "tiny", "--data", data16, "--state-every", "64", "--status-every", "64", "--avg-last", "4",
            "--keep-states", "8", "--no-progress"]

    def run_ok(args):
        p = run_cli(args)
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        return err

    def state_at_128(run: str, into: str):
        """A folder holding only `run`'s training state at 128 images (before any averaging)."""
        cut = tmp_path / into
        cut.mkdir()
        for ext in (".safetensors", ".json"):
            src = tmp_path / run / f"training-state-{128:012d}{ext}"
            (cut / src.name).write_bytes(src.read_bytes())
        return cut

    run_ok(base + ["--duration", "256", "--outdir", str(tmp_path / "ref")])
    run_ok(base + ["--duration", "384", "--outdir", str(tmp_path / "long")])
    cut = state_at_128("long", "cut")
    err = run_ok(base + ["--duration", "256", "--outdir", str(cut)])
    assert "resuming from" in err
    a, b = weights(tmp_path / "ref" / "checkpoint"), weights(cut / "checkpoint")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The finished long run has averaged: it cannot become a shorter run any more.
    again = run_cli(base + ["--duration", "320", "--outdir", str(tmp_path / "long")])
    _, err = again.communicate(timeout=600)
    assert again.returncode != 0 and "duration" in err
    # A run started without averaging (--avg-last 0) may go on, before its end, as an averaging
    # run: its state at 128 images resumed with --avg-last 4 equals `ref` (which averaged from the start).
    i = base.index("--avg-last")
    run_ok(base[:i] + ["--avg-last", "0"] + base[i + 2:] + ["--duration", "384", "--outdir", str(tmp_path / "plain")])
    cut0 = state_at_128("plain", "cut0")
    run_ok(base + ["--duration", "256", "--outdir", str(cut0)])
    c = weights(cut0 / "checkpoint")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_place_weight_is_the_labels_bump_and_reaches_the_gradient(data16, tmp_path):
    """--place-weight: the per-pixel loss weight is 1 + w * bump at the label's place (mean 1 per
    image, exactly 1 for labels without a place), it changes the update, and states written before
    the option existed still resume (they ran with its default, 0)."""
    from projcomp.clevr.datasets import make_dataset
    from projcomp.training import state as S

    cfg = T.resolve_config("tiny", {"place_weight": 20, "duration": 16, "label_dropout": 0.5, "avg_last": 0,
                                    "state_every": 16, "rampup": 0})
    tr = T.Trainer(cfg, data16, str(tmp_path / "pw"), progress=False)
    _, labels, _, _ = tr._micro_batch(0, 48)
    w = tr._pixel_weight(labels)
    assert w.shape == (48, 1, 16, 16) and torch.allclose(w.mean(dim=(2, 3)), torch.ones(48, 1))
    null = labels.abs().sum(1) == 0
    assert 5 < int(null.sum()) < 43
    assert torch.equal(w[null], torch.ones_like(w[null]))
    # placed rows peak where the network's own location map peaks, ~(1 + w) times the floor
    where = tr.encoder.location_map(labels[~null], 16)[:, 0].flatten(1).argmax(1)
    assert torch.equal(w[~null, 0].flatten(1).argmax(1), where)
    ratio = w[~null].flatten(1).max(1).values / w[~null].flatten(1).min(1).values
    assert bool((ratio > 8).all()) and bool((ratio < 21).all())
    # The weight reaches the loss: one update with and without it moves the weights differently.
    tr.run()
    same = {k: cfg[k] for k in ("duration", "label_dropout", "avg_last", "state_every", "rampup")}
    off = T.Trainer(T.resolve_config("tiny", same), data16, str(tmp_path / "off"), progress=False)
    off.run()
    a, b = weights(tmp_path / "pw" / "checkpoint"), weights(tmp_path / "off" / "checkpoint")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # A state from before the option resumes under the default, and is refused with a weight.
    path = str(tmp_path / "off" / f"training-state-{16:012d}.safetensors")
    tensors, info = S.read_state(path, off.cfg)
    for k in ("place_weight", "place_weight_sigma"):
        del info["config"][k]
    S.write_state(path, tensors, info)
    S.read_state(path, off.cfg)
    with pytest.raises(T.TrainError, match="place_weight"):
        S.read_state(path, cfg)
    # Bad values and data without places: one message naming the option.
    with pytest.raises(T.TrainError, match="--place-weight -1"):
        T.resolve_config("tiny", {"place_weight": "-1"})
    with pytest.raises(T.TrainError, match="--place-weight-sigma"):
        T.resolve_config("tiny", {"place_weight_sigma": "0"})
    empty = str(tmp_path / "empty.zip")
    make_dataset("empty", 4, 16, empty, seed=0, workers=1, progress=False)
    with pytest.raises(T.TrainError, match="--place-weight: .*no location labels"):
        T.Trainer(T.resolve_config("tiny", {"place_weight": 5}), empty, str(tmp_path / "e"), progress=False)


def test_a_warm_start_records_where_it_began_even_after_resume(data16, tmp_path):
    """--init-from: the new checkpoint's config.json names the source (path as given, weights'
    sha256, images seen, command), and keeps that record when the run is resumed after the
    source folder was replaced -- a two-stage recipe stays reproducible from its last checkpoint."""
    import hashlib
    import shutil

    base = ["--preset", "tiny", "--data", data16, "--status-every", "64", "--no-progress"]

    def run_ok(args):
        p = run_cli(args)
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err

    stage1 = tmp_path / "stage1"
    run_ok(base + ["--duration", "64", "--avg-last", "0", "--outdir", str(stage1)])
    src = stage1 / "checkpoint"
    sha = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    s1 = json.load(open(src / "config.json"))
    stage2 = base + ["--duration", "128", "--avg-last", "0", "--state-every", "64", "--keep-states", "4",
                     "--init-from", str(src), "--outdir", str(tmp_path / "stage2")]
    run_ok(stage2)
    rec = json.load(open(tmp_path / "stage2" / "checkpoint" / "config.json"))["warm_start"]
    assert rec["from"] == str(src) and rec["weights_sha256"] == sha
    assert rec["images_seen"] == 64 and rec["command"] == s1["command"] and "--duration 64" in rec["command"]

    # Resume stage 2 from its 64-image state after the source folder was replaced by other weights.
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("training_options.json", f"training-state-{64:012d}.safetensors", f"training-state-{64:012d}.json"):
        shutil.copy(tmp_path / "stage2" / name, cut / name)
    shutil.rmtree(src)
    shutil.copytree(tmp_path / "stage2" / "checkpoint", src)
    i = stage2.index("--outdir")
    run_ok(stage2[:i] + ["--outdir", str(cut)])
    assert json.load(open(cut / "checkpoint" / "config.json"))["warm_start"] == rec
    a, b = weights(tmp_path / "stage2" / "checkpoint"), weights(cut / "checkpoint")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run is the same run
