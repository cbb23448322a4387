"""Fig 5 (issue 13): colour statistics of renders, the exact-score colour toy, color_spec over an
object-empty net and `python -m projcomp.evaluate fig5` end to end on tiny random nets."""

import json
import os

import numpy as np
import pytest
import torch

from projcomp.clevr import colorstats as cs
from projcomp.theory.colours import classify_strips, colour_toy, strip_distributions, target_rates

COLOURS = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]
OBJECT_SCHEMA = {"type": "location", "dim": 2, "empty": True, "colors": COLOURS, "encoding": "map", "map_sigma": 0.046875}


# --- exact-score toy -----------------------------------------------------------------------------

FLOOR = np.zeros(3)
YELLOW = np.array([0.0, 0.0, -0.6])         # differs from the floor only in B
BLUE = np.array([-0.6, -0.6, 0.0])          # only in R, G: Def 5.2 in RGB with yellow
BROWN = np.array([-0.5, -0.4, -0.6])        # shares B with yellow: aligned mean differences


def test_target_is_independent_placement_iff_mean_differences_are_orthogonal():
    P = 8
    t = target_rates(FLOOR, YELLOW, BLUE, pixels=P, width=1, noise=0.1)
    assert t["dot"] == pytest.approx(0.0) and t["cos"] == pytest.approx(0.0)
    assert t["two_objects"] == pytest.approx((P - 1) / P)          # i != j with uniform weights
    aligned = target_rates(FLOOR, YELLOW, BROWN, pixels=P, width=1, noise=0.1)
    assert aligned["two_objects"] < 1e-6 and aligned["mean_overlap"] > 0.999
    opposed = target_rates(FLOOR, YELLOW, -BROWN, pixels=P, width=1, noise=0.1)
    assert opposed["two_objects"] > 0.999                            # pushed apart
    wide = target_rates(FLOOR, YELLOW, BLUE, pixels=P, width=2, noise=0.1)
    K = P - 1
    assert wide["two_objects"] == pytest.approx((K * K - K - 2 * (K - 1)) / (K * K))


def test_target_matches_the_composed_density():
    """C[p] ∝ p_a p_b / p_bg is a mixture over placements (i, j) with masses ∫ N_a^i N_b^j / N_bg:
    estimate each by Monte Carlo under N_a^i and compare with the closed form."""
    from projcomp.theory import GaussianMixture

    a, b, f, s, P = np.array([0.3, -0.2, 0.1]), np.array([0.1, 0.25, -0.3]), np.array([0.05, 0.0, 0.1]), 0.3, 3
    p_bg, ps = strip_distributions(f, {"a": a, "b": b}, pixels=P, width=1, noise=s)
    g = torch.Generator().manual_seed(0)
    mass = np.zeros((P, P))
    for i in range(P):
        Na = GaussianMixture([1.0], ps["a"].means[i:i + 1], s * s)
        x = Na.sample(100000, g)
        for j in range(P):
            Nb = GaussianMixture([1.0], ps["b"].means[j:j + 1], s * s)
            mass[i, j] = float(torch.exp(Nb.log_prob(x) - p_bg.log_prob(x)).mean())
    mass /= mass.sum()
    t = target_rates(f, a, b, pixels=P, width=1, noise=s)
    assert t["two_objects"] == pytest.approx(1 - np.trace(mass), abs=0.01)
    assert t["dot"] < 0 and 1 - t["two_objects"] < 1 / P   # opposed differences: fewer shared pixels than chance


def test_classify_strips_reads_objects():
    P = 6
    def strip(cols):
        x = np.tile(FLOOR[:, None], (1, P))
        for j, c in cols.items():
            x[:, j] = c
        return torch.tensor(x).reshape(1, 3, 1, P)
    xs = torch.cat([strip({1: YELLOW, 4: BLUE}), strip({2: YELLOW + BLUE}), strip({3: YELLOW}), strip({}),
                    strip({1: YELLOW, 2: YELLOW + BLUE, 3: BLUE})])
    got = [r["outcome"] for r in classify_strips(xs, FLOOR, YELLOW, BLUE)]
    assert got == ["two_objects", "one_blended", "one_object", "none", "other"]


def test_sampled_toy_composes_orthogonal_colours_and_blends_aligned_ones():
    r = colour_toy(FLOOR, {"yellow": YELLOW, "blue": BLUE, "brown": BROWN}, num_seeds=24, pixels=8, num_steps=16)
    by = {p["pair"]: p for p in r["pairs"]}
    assert by["yellow+blue"]["two_objects"]["rate"] >= 0.75
    assert by["yellow+brown"]["one_blended"]["rate"] >= 0.75
    lo, hi = by["yellow+blue"]["two_objects"]["ci95"]
    assert lo <= by["yellow+blue"]["two_objects"]["rate"] <= hi
    assert r["samples"]["yellow+blue"].shape == (16, 3, 1, 8)


# --- colour statistics of renders --------------------------------------------------------------

@pytest.fixture(scope="module")
def stats():
    return cs.colour_statistics(resolution=16, n=2, seed=3)


def test_colour_statistics_measure_renders(stats):
    from projcomp.clevr.render import render, render_ids
    from projcomp.clevr.scene import sample_scene

    assert stats["image_mean"].shape == (8, 16, 16, 3) and stats["background_mean"].shape == (16, 16, 3)
    # Recompute yellow's numbers from the same scenes.
    i = COLOURS.index("yellow")
    imgs, px = [], []
    for k in range(2):
        sc = sample_scene([3, 7, i, k], num_objects=1, forced={"color": "yellow"}, resolution=16)
        img = render(sc, 16)
        imgs.append(img)
        px.append(img[render_ids(sc, 16) >= 0])
    np.testing.assert_allclose(stats["image_mean"][i], np.mean(imgs, 0))
    np.testing.assert_allclose(stats["object_mean"][i], np.concatenate(px).mean(0))
    for h in stats["object_hist"][i]:
        assert np.sum(h * np.diff(stats["bins"])) == pytest.approx(1.0)
    assert stats["object_mean"][i][2] < stats["object_mean"][i][0]      # yellow: low B


def test_lemma81_uses_whole_image_means_against_the_background(stats, tmp_path):
    L = cs.lemma81(stats, ["yellow", "blue", "red"], background="empty")
    u = (stats["image_mean"][COLOURS.index("yellow")] - stats["background_mean"]).ravel()
    v = (stats["image_mean"][COLOURS.index("blue")] - stats["background_mean"]).ravel()
    assert float(L["matrix"][0, 1]) == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    assert torch.allclose(L["matrix"], L["matrix"].T) and torch.allclose(L["matrix"].diagonal(), torch.ones(3, dtype=torch.float64))
    mu_u = stats["image_mean"].mean(0)
    La = cs.lemma81(stats, ["yellow", "blue"], background="any")
    u, v = (stats["image_mean"][7] - mu_u).ravel(), (stats["image_mean"][2] - mu_u).ravel()
    assert float(La["matrix"][0, 1]) == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    rows = cs.pair_verdicts(stats, "yellow", ["blue", "red"], "empty")
    assert [r["composes"] for r in rows] == [r["cos"] <= cs.DEFAULT_THRESHOLD for r in rows]
    assert not any(r["composes"] for r in cs.pair_verdicts(stats, "yellow", ["blue", "red"], "any"))
    with pytest.raises(ValueError, match="background"):
        cs.lemma81(stats, ["yellow", "blue"], background="clutter")
    with pytest.raises(ValueError, match="magenta"):
        cs.lemma81(stats, ["yellow", "magenta"])
    # Cached: the same numbers come back from disk.
    a = cs.colour_statistics(resolution=16, n=1, seed=5, cache_dir=str(tmp_path))
    b = cs.colour_statistics(resolution=16, n=1, seed=5, cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) and np.array_equal(a["image_mean"], b["image_mean"]) and b["colors"] == COLOURS
    f, cols = cs.toy_colours(stats)
    np.testing.assert_allclose((cols["blue"] - f) * 127.5, stats["object_mean"][2] - stats["floor_under"][2])


# --- color_spec and the evaluation over an object-empty net ----------------------------------

@pytest.fixture(scope="module")
def object_zoo(tmp_path_factory):
    from projcomp.checkpoint import save
    from projcomp.nn import Precond
    from projcomp.nn.conditions import ConditionEncoder

    root = str(tmp_path_factory.mktemp("objzoo"))
    torch.manual_seed(0)
    net = Precond(img_resolution=16, img_channels=3, label_dim=ConditionEncoder(OBJECT_SCHEMA).label_dim, condition=OBJECT_SCHEMA,
                  logvar_channels=16, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], channels_per_head=16)
    with torch.no_grad():
        for pname, p in net.named_parameters():
            if pname.endswith("gain"):
                p.fill_(1.0)
    save(os.path.join(root, "clevr-object-16"), net, {"dataset": {"preset": "object-empty", "resolution": 16}})
    return root


def test_color_spec_uses_the_object_nets_empty_label(object_zoo, tiny_zoo_dir):
    from projcomp.experiments import Zoo, color_spec

    zoo = Zoo(object_zoo)
    s = color_spec(zoo, ["yellow", "blue"], [0])
    assert s.background.model == "clevr-object-16" and s.background.cond == "empty"
    assert [t.cond for t in s.terms] == [{"color": "yellow"}, {"color": "blue"}]
    assert color_spec(zoo, ["yellow"], [0], background="null").background.cond is None
    old = Zoo(tiny_zoo_dir)
    assert color_spec(old, ["yellow", "blue"], [0], background="empty").background.model == "clevr-empty-16"


def test_evaluate_fig5_end_to_end(object_zoo, tmp_path):
    from projcomp.evaluate import main

    out = tmp_path / "fig5"
    rc = main(["fig5", "--seeds", "0-1", "--steps", "2", "--toy-seeds", "4", "--stats-scenes", "1", "--grid-cols", "2",
               "--checkpoints", object_zoo, "--outdir", str(out)])
    assert rc == 0
    for f in ("fig5.csv", "fig5.md", "fig5_grid.png", "fig5_histograms.png", "fig5_toy.csv", "fig5_toy_grid.png", "results.json", "config.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "results.json").read_text())
    assert res["background"]["cond"] == "empty" and res["colour_model"] == "clevr-object-16"
    assert [r["pair"] for r in res["nets"]] == [f"yellow+{c}" for c in COLOURS if c != "yellow"]
    for r in res["nets"]:
        assert r["ci95_lo"] <= r["two_objects_rate"] <= r["ci95_hi"] and r["images"] == 2
    assert len(res["per_image"]) == 14 and set(res["toy"]) == {"renderer", "paper_floor"}
    assert res["lemma81_background"] == "empty scene"
    # The single-colour control: every colour alone, the base first; its rate recomputed directly.
    single = res["single_colour_control"]
    assert [r["color"] for r in single] == ["yellow"] + [c for c in COLOURS if c != "yellow"]
    assert (out / "fig5_single.md").is_file()
    from projcomp.clevr.detect import detect
    from projcomp.experiments import Zoo, color_spec
    from projcomp.generate import run_spec
    from projcomp.imageio import to_uint8
    zoo = Zoo(object_zoo)
    imgs = to_uint8(run_spec(color_spec(zoo, ["red"], [0, 1], sampler={"num_steps": 2}), zoo))
    want = sum("red" in [d["color"] for d in detect(img)] for img in imgs) / 2
    assert next(r for r in single if r["color"] == "red")["asked_colour_found_rate"] == want
    text = (out / "config.json").read_text() + (out / "results.json").read_text()
    assert str(tmp_path) not in text and object_zoo not in text


def test_preview_and_floor_control(stats):
    p = cs.preview(["yellow", "blue", "red"], resolution=16, n=2)
    assert [r["pair"] for r in p["pairs"]] == ["yellow+blue", "yellow+red", "blue+red"]
    assert p["matrix"].shape == (3, 3) and "| yellow+blue |" in p["markdown"]
    assert ("one object of each colour" in p["markdown"]) == all(r["composes"] for r in p["pairs"])
    assert "Pick two" in cs.preview(["yellow"], resolution=16, n=2)["markdown"]
    import importlib
    render_mod = importlib.import_module("projcomp.clevr.render")
    before = render_mod.GROUND_ALBEDO
    a = cs.albedo_matching(stats, "yellow")
    dark = cs.colour_statistics(resolution=16, n=2, seed=3, ground_albedo=a)
    assert render_mod.GROUND_ALBEDO == before                     # restored
    yellow_rg = dark["object_mean"][COLOURS.index("yellow")][:2].mean()
    # The floor now sits near yellow's R/G level (lighting of the object changes a little with it).
    assert abs(dark["floor_under"].mean() - yellow_rg) < 0.25 * abs(stats["floor_under"].mean() - yellow_rg) + 15
    assert dark["background_mean"].mean() < stats["background_mean"].mean()


def test_leak_on_cluttered_scenes_measures_the_other_objects(object_zoo):
    from projcomp.checkpoint import load
    from projcomp.evaluate import LEAK_SCENE_SEEDS, leak, rendered_scenes
    from projcomp.imageio import from_uint8

    imgs, places = rendered_scenes(16, 3, [5])
    assert imgs.shape == (3, 16, 16, 3) and all(3 <= len(p) <= 5 for p in places)
    assert all(0 <= v <= 1 for p in places for xy in p for v in xy)
    same, same_places, bare = rendered_scenes(16, 3, [5], floors=True)
    assert np.array_equal(same, imgs) and same_places == places and bare.shape == imgs.shape
    assert (np.abs(imgs.astype(int) - bare).sum(-1) > 30).any(axis=(1, 2)).all()  # objects gone, floor kept
    net = load(os.path.join(object_zoo, "clevr-object-16"), channels_last=False)
    rows = leak(net, location_sets=1, images=3, sigmas=[0.5, 2.0], scenes="clutter")
    assert [r["sigma"] for r in rows] == [0.5, 2.0]
    for r in rows:
        assert r["at_other_objects"] > 0 and r["leak_far"] > 0 and r["signal_near"] > 0
        assert r["others_ratio"] == pytest.approx(r["at_other_objects"] / r["signal_near"])
        assert r["term_minus_background"] == pytest.approx(r["kept_by_term"] - r["kept_by_background"])
    # "kept" is the share of the other objects a denoiser passes through: an identity denoiser
    # (D = x) keeps them (1, up to the noise), one that paints the floor keeps nothing (0).
    _, _, leak_floors = rendered_scenes(16, 3, [LEAK_SCENE_SEEDS["clutter"], 0], floors=True)  # leak()'s scenes
    class Fake(torch.nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.mode, self.img_resolution, self.encoder, self.w = mode, 16, net.encoder, torch.nn.Parameter(torch.zeros(1))
        def encode_cond(self, c):
            return net.encode_cond(c)
        def forward(self, x, sigma, c):
            return x if self.mode == "identity" else self.floors.repeat(2, 1, 1, 1)
    ident = Fake("identity")
    r = leak(ident, location_sets=1, images=3, sigmas=[0.05], scenes="clutter")[0]
    assert r["kept_by_term"] == pytest.approx(1, abs=0.05) and r["kept_by_background"] == r["kept_by_term"]
    painter = Fake("floor")
    painter.floors = from_uint8(leak_floors)
    r = leak(painter, location_sets=1, images=3, sigmas=[0.5], scenes="clutter")[0]
    assert r["kept_by_term"] == pytest.approx(0, abs=1e-5) and r["kept_by_background"] == pytest.approx(0, abs=1e-5)
    # A net that cannot hear its label (label embedding and map inputs zeroed) has D_i == D_b:
    # every leak is zero, on empty and on cluttered scenes (up to fp32 rounding: with 2 threads
    # oneDNN may block the batch's rows differently).
    from conftest import deafen_to_maps
    with torch.no_grad():
        net.unet.emb_label.weight.zero_()
    deafen_to_maps(net)
    for scenes in ("clutter", "empty"):
        for r in leak(net, k=2, location_sets=1, images=2, sigmas=[1.0], scenes=scenes):
            assert r["leak_far"] < 1e-5 and r["signal_near"] < 1e-5 and r.get("at_other_objects", 0) < 1e-5
            assert abs(r.get("term_minus_background", 0)) < 1e-5
    with pytest.raises(ValueError, match="scenes"):
        leak(net, scenes="beach")


def test_colour_response_tells_a_net_that_hears_the_colour_from_one_that_does_not(object_zoo):
    from projcomp.checkpoint import load
    from projcomp.clevr.world import CLEVR_COLORS, CLEVR_RGB
    from projcomp.evaluate import colour_response

    net = load(os.path.join(object_zoo, "clevr-object-16"), channels_last=False)
    enc, R = net.encoder, 16

    class Fake(torch.nn.Module):
        """'painter' draws a disc of the asked palette colour at the asked place on a grey floor;
        'deaf' returns its input whatever the label (it cannot hear the colour)."""
        def __init__(self, mode):
            super().__init__()
            self.mode, self.img_resolution, self.encoder, self.w = mode, R, enc, torch.nn.Parameter(torch.zeros(1))
        def encode_cond(self, c):
            return enc.encode(c)
        def forward(self, x, sigma, c):
            if self.mode == "deaf":
                return x
            bump = enc.location_map(c, R)[:, :1]                                  # [B, 1, R, R]
            disc = (bump >= bump.amax((2, 3), keepdim=True) * 0.3).float()
            rgb = torch.tensor([CLEVR_RGB[name] for name in CLEVR_COLORS], dtype=torch.float32) / 127.5 - 1
            col = rgb[c[:, enc.loc_dim:enc.loc_dim + len(CLEVR_COLORS)].argmax(1)]  # [B, 3]
            return 0.2 * (1 - disc) + col[:, :, None, None] * disc

    painter = colour_response(Fake("painter"), scenes=4, sigmas=[1.0, 5.0])
    assert [r["sigma"] for r in painter] == [1.0, 5.0]
    for r in painter:
        assert r["recovered"] == 1.0 and r["gain"] > 0.5 and r["data"] > 0.05
        assert r["gain"] == pytest.approx(r["response"] / r["data"])
    deaf = colour_response(Fake("deaf"), scenes=4, sigmas=[1.0])[0]
    assert deaf["response"] == 0 and deaf["gain"] == 0 and deaf["recovered"] <= 1 / len(CLEVR_COLORS)
    assert deaf["data"] == painter[0]["data"]          # the same renders, whatever the net
    real = colour_response(net, scenes=2, sigmas=[2.0])[0]
    assert 0 < real["response"] and 0 <= real["recovered"] <= 1
    blind = Fake("deaf")
    blind.encoder = type("E", (), {"colors": None})()
    with pytest.raises(ValueError, match="no colour per object"):
        colour_response(blind, scenes=2)
