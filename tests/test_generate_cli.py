"""`python -m projcomp.generate` (old name: `python -m projcomp.sample`) and `python -m projcomp.evaluate` over real (tiny, random) checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from projcomp.compose import CompositionError
from projcomp.experiments import Zoo, ZooError, color_spec, random_locations, setting_spec
from projcomp.generate import main as sample_main, run_spec
from projcomp.imageio import to_uint8


def test_settings_pick_the_right_backgrounds(tiny_zoo_dir):
    zoo = Zoo(tiny_zoo_dir)
    locs = [[0.3, 0.5], [0.7, 0.6]]
    a = setting_spec(zoo, "A", locs, [0])
    b = setting_spec(zoo, "B", locs, [0])
    c = setting_spec(zoo, "C", locs, [0])
    assert a.background.model == "clevr-empty-16" and a.background.cond is None
    assert b.background.model == "clevr-location-16" and b.background.cond is None  # Bayes: p_u = null label
    assert c.background.model == "clevr-clutter-16" and [t.model for t in c.terms] == ["clevr-clutter-16"] * 2
    assert [t.cond for t in a.terms] == locs == [t.cond for t in b.terms]
    col = color_spec(zoo, ["yellow", "blue"], [0])
    assert [t.cond for t in col.terms] == ["yellow", "blue"] and col.background.cond is None
    with pytest.raises(CompositionError, match=r"locations\[1\]"):
        setting_spec(zoo, "A", [[0.1, 0.2], [1.5, 0.2]], [0])
    with pytest.raises(CompositionError, match="setting"):
        setting_spec(zoo, "D", locs, [0])
    with pytest.raises(ZooError, match="no checkpoint for role 'location'"):
        setting_spec(Zoo(os.path.join(tiny_zoo_dir, "nowhere")), "A", locs, [0])


def test_a_and_b_share_seeds_and_differ_only_by_background(tiny_zoo_dir):
    zoo = Zoo(tiny_zoo_dir)
    locs = [[0.3, 0.5], [0.7, 0.6]]
    sa = setting_spec(zoo, "A", locs, [0, 1], sampler={"num_steps": 3})
    sb = setting_spec(zoo, "B", locs, [0, 1], sampler={"num_steps": 3})
    xa, xb = run_spec(sa, zoo), run_spec(sb, zoo)
    assert xa.shape == (2, 3, 16, 16)
    assert not torch.allclose(xa, xb)
    # Seed 1 alone equals seed 1 inside the batch (up to float rounding: conv kernels pick
    # batch-size-dependent algorithms, ~1e-6 per call, which the random nets amplify).
    single = run_spec(setting_spec(zoo, "A", locs, [1], sampler={"num_steps": 3}), zoo)
    torch.testing.assert_close(single[0], xa[1], rtol=0, atol=1e-4 * float(xa.abs().max()))
    assert (single[0] - xa[0]).abs().max() > 1e-2 * float(xa.abs().max())  # and differs from seed 0


def test_random_locations_are_valid_and_separated():
    for k in (1, 4, 9):
        locs = random_locations(k, seed=3)
        assert len(locs) == k
        xy = np.array(locs)
        assert ((xy >= 0) & (xy <= 1)).all()
        if k > 1:
            d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(k)
            assert d.min() >= 0.12
    assert random_locations(4, seed=3) == random_locations(4, seed=3)
    assert random_locations(4, seed=3) != random_locations(4, seed=4)


def test_sample_cli_writes_pngs_and_spec(tiny_zoo_dir, tmp_path):
    out = tmp_path / "A"
    rc = sample_main(["--checkpoints", tiny_zoo_dir, "--setting", "A", "--locations", "0.3,0.5", "0.6,0.4",
                      "--seeds", "0-2", "--steps", "2", "--outdir", str(out)])
    assert rc == 0
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert pngs == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert Image.open(out / pngs[0]).size == (16, 16)
    spec = json.loads((out / "spec.json").read_text())
    assert spec["seeds"] == [0, 1, 2] and len(spec["terms"]) == 2 and spec["sampler"]["num_steps"] == 2
    # The written spec regenerates the same images.
    rc = sample_main(["--checkpoints", tiny_zoo_dir, str(out / "spec.json"), "--outdir", str(tmp_path / "again")])
    assert rc == 0
    assert np.array_equal(np.asarray(Image.open(out / "seed0001.png")), np.asarray(Image.open(tmp_path / "again" / "seed0001.png")))


def test_dpm_solver_is_recorded_and_reproducible(tiny_zoo_dir, tmp_path):
    base = ["--checkpoints", tiny_zoo_dir, "--setting", "A", "--locations", "0.3,0.5", "--seeds", "0-1", "--steps", "4"]
    for name, extra in (("heun", []), ("dpm", ["--solver", "dpm2m"])):
        assert sample_main([*base, *extra, "--outdir", str(tmp_path / name)]) == 0
    assert json.loads((tmp_path / "dpm" / "spec.json").read_text())["sampler"]["solver"] == "dpm2m"
    assert sample_main(["--checkpoints", tiny_zoo_dir, str(tmp_path / "dpm" / "spec.json"), "--outdir", str(tmp_path / "again")]) == 0
    img = {n: np.asarray(Image.open(tmp_path / n / "seed0001.png")) for n in ("heun", "dpm", "again")}
    assert (img["heun"] != img["dpm"]).any() and np.array_equal(img["dpm"], img["again"])


def test_churn_runs_edms_stochastic_sampler_reproducibly(tiny_zoo_dir, tmp_path):
    base = ["--checkpoints", tiny_zoo_dir, "--setting", "A", "--locations", "0.3,0.5", "--seeds", "0-1", "--steps", "4"]
    for name, extra in (("ode", []), ("churn", ["--churn", "40"]), ("again", ["--churn", "40"])):
        assert sample_main([*base, *extra, "--outdir", str(tmp_path / name)]) == 0
    spec = json.loads((tmp_path / "churn" / "spec.json").read_text())["sampler"]
    assert spec["S_churn"] == 40 and spec["S_min"] == 0.05 and spec["S_max"] == 50 and spec["S_noise"] == 1.003
    assert json.loads((tmp_path / "ode" / "spec.json").read_text())["sampler"]["S_churn"] == 0
    img = {n: np.asarray(Image.open(tmp_path / n / "seed0001.png")) for n in ("ode", "churn", "again")}
    assert (img["ode"] != img["churn"]).any()             # fresh noise was injected
    assert np.array_equal(img["churn"], img["again"])      # from the seed's own generator: reproducible


@pytest.mark.parametrize("args,needle", [
    (["--setting", "A", "--locations", "0.3,nope"], "locations"),
    (["--setting", "A", "--k", "11"], "k: 11"),
    (["--setting", "A", "--k", "2", "--weights", "1", "nan"], "terms[1].weight: nan"),
    (["--setting", "A", "--k", "2", "--steps", "0"], "num_steps"),
    (["--colors", "yellow", "octarine"], "octarine"),
    (["--setting", "A"], "locations"),
    (["--setting", "A", "--k", "2", "--churn", "-1"], "churn: -1"),
    (["--setting", "A", "--k", "2", "--solver", "dpm2m", "--churn", "40"], "'dpm2m' is a deterministic"),
])
def test_sample_cli_bad_input_is_one_line(tiny_zoo_dir, tmp_path, args, needle):
    r = subprocess.run([sys.executable, "-m", "projcomp.generate", "--checkpoints", tiny_zoo_dir, "--outdir", str(tmp_path / "x"), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


def test_old_sample_command_runs_generate_with_a_one_line_notice(tiny_zoo_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "projcomp.sample", "--checkpoints", tiny_zoo_dir, "--setting", "A",
                        "--locations", "0.3,0.5", "--seeds", "0", "--steps", "1", "--outdir", str(tmp_path / "old")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0].startswith("note: `python -m projcomp.sample` is now `python -m projcomp.generate`")
    assert os.path.isfile(tmp_path / "old" / "seed0000.png")
    spec = json.loads((tmp_path / "old" / "spec.json").read_text())
    assert spec["meta"]["command"].startswith("python -m projcomp.generate ")
def test_evaluate_fig3_writes_tables_and_grids(tiny_zoo_dir, tmp_path):
    from projcomp.evaluate import main as eval_main

    out = tmp_path / "fig3"
    rc = eval_main(["fig3", "--checkpoints", tiny_zoo_dir, "--settings", "A", "B", "--k", "1-2", "--seeds", "0-1",
                    "--steps", "2", "--outdir", str(out)])
    assert rc == 0
    rows = list(__import__("csv").DictReader(open(out / "table1.csv")))
    assert [(r["setting"], r["k"]) for r in rows] == [("A", "1"), ("A", "2"), ("B", "1"), ("B", "2")]
    for r in rows:
        assert 0.0 <= float(r["exact_count_rate"]) <= 1.0 and int(r["images"]) == 2
    assert (out / "fig3_A.png").exists() and (out / "table1.md").exists() and (out / "config.json").exists()
    per = json.load(open(out / "per_image.json"))
    assert len(per) == 8 and all(len(p["hits"]) == p["k"] for p in per)
    # rejudge re-counts the saved samples: same table as the sampling run, config.json untouched.
    first = open(out / "table1.csv").read()
    cfg = open(out / "config.json").read()
    (out / "table1.csv").unlink()
    assert eval_main(["rejudge", "--outdir", str(out)]) == 0
    assert open(out / "table1.csv").read() == first and open(out / "config.json").read() == cfg
    with __import__("numpy").load(out / "samples.npz") as z:
        assert z["A/k2/set0"].shape == (2, 16, 16, 3) and z["A/k2/set0/locations"].shape == (2, 2)
    assert eval_main(["rejudge", "--outdir", str(tmp_path / "nowhere")]) == 2
    # --weight sets every term's w_i: a different composition (other pixels), and a bad one is refused.
    assert eval_main(["fig3", "--checkpoints", tiny_zoo_dir, "--settings", "A", "--k", "2", "--seeds", "0-1",
                      "--steps", "2", "--weight", "3", "--outdir", str(tmp_path / "w3")]) == 0
    with __import__("numpy").load(out / "samples.npz") as z1, __import__("numpy").load(tmp_path / "w3" / "samples.npz") as z3:
        assert (z1["A/k2/set0"] != z3["A/k2/set0"]).any()
    assert eval_main(["fig3", "--checkpoints", tiny_zoo_dir, "--settings", "A", "--k", "2", "--seeds", "0",
                      "--steps", "2", "--weight", "nan", "--outdir", str(tmp_path / "wnan")]) == 2


def test_judge_locations_on_rendered_scene():
    """The detector-based judge counts a rendered 3-object scene as a hit on its own pixel_coords."""
    from projcomp.clevr.render import render
    from projcomp.clevr.scene import sample_scene
    from projcomp.evaluate import judge_locations

    scene = sample_scene(11, num_objects=3, resolution=64)
    img = render(scene, resolution=64)
    locs = [[o["pixel_coords"][0] / 64, o["pixel_coords"][1] / 64] for o in scene["objects"]]
    v = judge_locations(img, locs)
    assert v["num_requested"] == 3 and v["exact_count"] and all(v["hits"])
    far = judge_locations(img, [[0.02, 0.02]])
    assert far["hits"] == [False] and not far["exact_count"]


def test_zoo_prefers_one_resolution_when_a_role_has_several(tmp_path):
    from conftest import build_tiny_zoo
    build_tiny_zoo(str(tmp_path), resolution=16)
    build_tiny_zoo(str(tmp_path), resolution=8)
    auto = Zoo(str(tmp_path))
    assert auto.resolutions() == [8, 16]
    assert auto.preferred_resolution() == 8 and auto.find("location") == "clevr-location-8"  # lowest = fastest
    for r in (8, 16):
        z = Zoo(str(tmp_path), resolution=r)
        assert z.find("location") == f"clevr-location-{r}"
        spec = setting_spec(z, "A", [[0.5, 0.5]], [0])
        assert spec.background.model == f"clevr-empty-{r}" and spec.terms[0].model == f"clevr-location-{r}"
    # An explicit resolution always wins over the preference; a missing one is named.
    assert Zoo(str(tmp_path), resolution=8).find("location", 16) == "clevr-location-16"
    with pytest.raises(ZooError, match="at 32px"):
        auto.find("location", 32)


def test_device_option_names_bad_devices_and_cpu_is_the_default(tiny_zoo_dir, tmp_path, capsys):
    from projcomp.evaluate import main as eval_main
    from projcomp.zoo import torch_device

    with pytest.raises(ZooError, match="device: 'gpu7' is not a torch device"):
        Zoo(tiny_zoo_dir, device="gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ZooError, match="no CUDA device"):
            torch_device("cuda")
        assert eval_main(["fig3", "--checkpoints", tiny_zoo_dir, "--settings", "A", "--k", "1", "--seeds", "0",
                          "--steps", "1", "--device", "cuda", "--outdir", str(tmp_path / "c")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    # An explicit --device cpu samples exactly what the default does (the zoo carries the device
    # to the sampler; the noise is per seed on the CPU either way).
    args = ["fig3", "--checkpoints", tiny_zoo_dir, "--settings", "A", "--k", "2", "--seeds", "0-1", "--steps", "2"]
    assert eval_main(args + ["--outdir", str(tmp_path / "d")]) == 0
    assert eval_main(args + ["--device", "cpu", "--outdir", str(tmp_path / "e")]) == 0
    with np.load(tmp_path / "d" / "samples.npz") as a, np.load(tmp_path / "e" / "samples.npz") as b:
        assert np.array_equal(a["A/k2/set0"], b["A/k2/set0"])


def test_evaluate_merge_equals_one_run_over_all_seeds(tiny_zoo_dir, tmp_path, capsys):
    """Table 1 merged from runs over seeds 0-1 and 2 (k split as well) is the table of one run over
    seeds 0-2, image for image (batch 1: in bigger batches oneDNN's round-off depends on the batch
    size, so images agree to float round-off only); runs sampled differently, a seed given twice, or parts that cover
    different seeds are refused with a message that names the problem."""
    import numpy as np
    from projcomp.evaluate import main as eval_main

    def run(name, seeds, k="1-2", *extra):
        assert eval_main(["fig3", "--checkpoints", tiny_zoo_dir, "--settings", "A", "--k", k, "--seeds", seeds,
                          "--location-sets", "2", "--steps", "2", "--batch", "1", *extra,
                          "--outdir", str(tmp_path / name)]) == 0
        return str(tmp_path / name)

    whole, a, b1, b2 = run("whole", "0-2"), run("a", "0-1"), run("b1", "2", "1"), run("b2", "2", "2")
    cfg = json.load(open(os.path.join(whole, "config.json")))
    assert set(cfg["nets"]) == {"A"} and len(cfg["nets"]["A"]["weights_sha256"]) == 64
    m = str(tmp_path / "merged")
    assert eval_main(["merge", "--inputs", b2, a, b1, "--outdir", m]) == 0
    assert open(os.path.join(m, "table1.csv")).read() == open(os.path.join(whole, "table1.csv")).read()
    with np.load(os.path.join(whole, "samples.npz")) as zw, np.load(os.path.join(m, "samples.npz")) as zm:
        assert sorted(zw.files) == sorted(zm.files) and zm["seeds"].tolist() == [0, 1, 2]
        for key in zw.files:
            assert np.array_equal(zw[key], zm[key]), key
    mc = json.load(open(os.path.join(m, "config.json")))
    assert mc["seeds"] == "0-2" and len(mc["inputs"]) == 3 and mc["steps"] == 2
    assert not any(os.path.isabs(tok) for i in mc["inputs"] for tok in [i["outdir"], *i["command"].split()])
    assert os.path.isfile(os.path.join(m, "fig3_A.png"))

    def refused(inputs, needle, out="bad"):
        capsys.readouterr()
        rc = eval_main(["merge", "--inputs", *inputs, "--outdir", str(tmp_path / out)])
        err = capsys.readouterr().err.strip().splitlines()
        return rc == 2 and len(err) == 1 and needle in err[0]

    assert refused([a, run("a_again", "1-2")], "seed 1")                  # seed 1 twice
    assert refused([a, b1], "covers seeds")                                # k = 2 has seeds 0-1 only
    assert refused([a, run("s3", "2", "1-2", "--steps", "3")], "steps")   # sampled differently
    assert refused([a, str(tmp_path / "nowhere")], "not a fig3")
    assert refused([a, b1, b2], "one of the inputs", out="a")              # would overwrite an input
    assert not os.path.exists(tmp_path / "bad" / "samples.npz")
