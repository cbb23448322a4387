"""The location map encoding and the colour per object (projcomp/nn/conditions.py, issue 15)."""

import math

import numpy as np
import pytest
import torch

from projcomp.nn import ConditionEncoder, ConditionError, Precond

COLORS = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]
SCHEMA = {"type": "location", "dim": 2, "empty": True, "colors": COLORS, "encoding": "map", "map_sigma": 1.5 / 32}


def test_old_location_schema_encodes_as_before():
    # The shipped global-embedding nets must see exactly the vectors they were trained on.
    enc = ConditionEncoder({"type": "location", "dim": 2, "empty": True})
    x, y = 0.3, 0.8
    feats = []
    for c in (x, y):
        for k in range(4):
            feats += [math.cos(math.pi * 2 ** k * c), math.sin(math.pi * 2 ** k * c)]
    want = torch.tensor(feats + [1.0, 0.0]) / 3.0
    assert torch.equal(enc.encode((x, y)), want)
    assert enc.label_dim == 18 and enc.map_channels == 0


def test_every_conditional_has_unit_norm_and_its_own_vector():
    enc = ConditionEncoder(SCHEMA)
    vals = [(0.3, 0.6), {"xy": (0.3, 0.6), "color": "red"}, {"xy": (0.3, 0.6), "color": "blue"},
            {"color": "red"}, "empty"]
    L = enc.encode_batch(vals)
    assert torch.allclose(L.norm(dim=1), torch.ones(len(vals)))
    # all distinct, none the null label
    assert torch.cdist(L, L).add(torch.eye(len(vals))).min() > 0.1
    assert torch.equal(enc.encode(None), torch.zeros(enc.label_dim))


@pytest.mark.parametrize("xy", [(0.0, 0.0), (0.5, 0.25), (0.97, 0.61), (0.12, 0.99)])
def test_map_peaks_at_the_requested_pixel(xy):
    enc = ConditionEncoder(SCHEMA)
    R = 32
    m = enc.location_map(enc.encode_batch([xy, {"xy": xy, "color": "cyan"}]), R)
    assert m.shape == (2, 1, R, R)
    for row in m:
        iy, ix = divmod(int(row.argmax()), R)
        # the pixel whose centre (i + 0.5) / R is nearest the requested point
        assert ix == min(int(xy[0] * R), R - 1) or abs((ix + 0.5) / R - xy[0]) <= 0.5 / R + 1e-6
        assert iy == min(int(xy[1] * R), R - 1) or abs((iy + 0.5) / R - xy[1]) <= 0.5 / R + 1e-6
    assert torch.allclose(m[0], m[1])  # the colour does not move the map


def test_map_is_zero_where_the_label_has_no_place():
    enc = ConditionEncoder(SCHEMA)
    L = torch.cat([enc.encode_batch([{"color": "yellow"}, "empty"]), torch.zeros(1, enc.label_dim)])
    assert enc.location_map(L, 16).abs().max() == 0


def test_part_dropout_keeps_the_other_part_and_never_makes_a_null_label():
    enc = ConditionEncoder(SCHEMA)
    full = enc.encode_batch([{"xy": (0.2, 0.7), "color": "green"}, "empty", {"color": "red"}, (0.4, 0.4)])
    no_col = enc.without(full, "color")
    assert torch.allclose(no_col[0], enc.encode((0.2, 0.7)))
    assert torch.equal(no_col[1], full[1])            # the empty scene stays the empty scene
    assert torch.equal(no_col[2], full[2])            # colour only: nothing would be left, unchanged
    no_loc = enc.without(full, "location")
    assert torch.allclose(no_loc[0], enc.encode({"color": "green"}))
    assert torch.equal(no_loc[3], full[3])
    assert (no_col.norm(dim=1) > 0.99).all() and (no_loc.norm(dim=1) > 0.99).all()


def test_bad_values_name_the_problem():
    enc = ConditionEncoder(SCHEMA)
    with pytest.raises(ConditionError, match="'mauve'"):
        enc.encode({"xy": (0.5, 0.5), "color": "mauve"})
    with pytest.raises(ConditionError, match="unknown key 'size'"):
        enc.encode({"xy": (0.5, 0.5), "size": "large"})
    with pytest.raises(ConditionError, match="no colour per object"):
        ConditionEncoder({"type": "location", "dim": 2}).encode({"xy": (0.5, 0.5), "color": "red"})
    with pytest.raises(ConditionError, match="encoding"):
        ConditionEncoder({**SCHEMA, "encoding": "fourier"})


def _net(schema, seed=0):
    torch.manual_seed(seed)
    net = Precond(img_resolution=16, img_channels=3, label_dim=ConditionEncoder(schema).label_dim, condition=schema,
                  logvar_channels=16, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
                  channels_per_head=16)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith("gain"):
                p.fill_(1.0)
    return net.eval()


def test_the_map_reaches_the_network_as_an_input_channel():
    net = _net(SCHEMA)
    first = net.unet.enc["16x16_conv"]
    assert first.weight.shape[1] == 3 + 1 + 1  # image + ones + the location map
    glob = _net({k: v for k, v in SCHEMA.items() if k not in ("encoding", "map_sigma")})
    assert glob.unet.enc["16x16_conv"].weight.shape[1] == 3 + 1
    # With the label embedding switched off, only the map carries the place: moving it moves D.
    with torch.no_grad():
        net.unet.emb_label.weight.zero_()
    x = torch.randn(1, 3, 16, 16)
    c = net.encoder.encode_batch([(0.2, 0.2), (0.8, 0.8)])
    with torch.no_grad():
        d = net(x.expand(2, -1, -1, -1), torch.tensor([1.0, 1.0]), c)
    assert (d[0] - d[1]).abs().max() > 1e-3
    # and the map enters locally: the change is largest near the two places, not uniform
    diff = (d[0] - d[1]).abs().sum(0).numpy()
    near = diff[1:6, 1:6].mean() + diff[10:15, 10:15].mean()
    far = diff[1:6, 10:15].mean() + diff[10:15, 1:6].mean()
    assert near > far


def test_training_part_dropout_gives_every_conditional(tmp_path):
    from projcomp.clevr.datasets import make_dataset
    from projcomp.train import Trainer, resolve_config

    data = str(tmp_path / "obj.zip")
    make_dataset("object-empty", 48, 16, data, seed=2, workers=1, progress=False)
    cfg = resolve_config("tiny", {"cond_encoding": "map", "color_dropout": 0.4, "location_dropout": 0.5,
                                  "label_dropout": 0.1, "duration": 64})
    tr = Trainer(cfg, data, str(tmp_path / "run"), progress=False)
    assert tr.net.unet.map_channels == 1 and tr.condition["encoding"] == "map"
    _, labels, _, _ = tr._micro_batch(0, 400)
    enc = tr.encoder
    has_loc = labels[:, 4 * enc.num_freqs] > 0
    has_col = labels[:, enc.loc_dim:enc.loc_dim + len(enc.colors)].abs().sum(1) > 0
    is_empty = labels[:, -1] > 0
    null = labels.abs().sum(1) == 0
    kinds = {"both": (has_loc & has_col).float().mean(), "loc": (has_loc & ~has_col).float().mean(),
             "col": (~has_loc & has_col).float().mean(), "empty": is_empty.float().mean(), "null": null.float().mean()}
    assert all(v > 0.02 for v in kinds.values()), kinds
    assert abs(float(kinds["null"]) - 0.1) < 0.06
    # Runs without part dropout keep their random streams (the shipped nets' recipe is unchanged).
    cfg0 = resolve_config("tiny", {"duration": 64})
    tr0 = Trainer(cfg0, data, str(tmp_path / "run0"), progress=False)
    cfg1 = resolve_config("tiny", {"duration": 64, "color_dropout": 0.3})
    tr1 = Trainer(cfg1, data, str(tmp_path / "run1"), progress=False)
    a, b = tr0._micro_batch(0, 8), tr1._micro_batch(0, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])


def test_setting_spec_asks_each_place_for_its_colour(tmp_path):
    from conftest import COLOR_LOCATION_SCHEMA, build_tiny_zoo

    from projcomp.compose import CompositionError
    from projcomp.experiments import setting_spec
    from projcomp.zoo import Zoo

    zoo = Zoo(build_tiny_zoo(str(tmp_path / "zoo"), location_schema=COLOR_LOCATION_SCHEMA))
    spec = setting_spec(zoo, "A", [(0.3, 0.6), (0.7, 0.6)], [0], colors=["red", None])
    assert spec.terms[0].cond == {"xy": [0.3, 0.6], "color": "red"}
    assert spec.terms[1].cond == [0.7, 0.6]
    assert spec.background.cond == "empty"
    with pytest.raises(CompositionError, match=r"colors\[1\]: 'mauve'"):
        setting_spec(zoo, "A", [(0.3, 0.6), (0.7, 0.6)], [0], colors=["red", "mauve"])
    plain = Zoo(build_tiny_zoo(str(tmp_path / "zoo2")))
    with pytest.raises(CompositionError, match="no colour per object"):
        setting_spec(plain, "A", [(0.3, 0.6)], [0], colors=["red"])


def test_colour_guidance_is_cfg_of_the_colour_inside_each_term(tmp_path):
    """color_guidance g: the coloured term becomes D_xy + g (D_xyc - D_xy); Def 5.1 over the spec's
    terms must equal that, computed here from the net's own outputs; uncoloured places unchanged."""
    from conftest import COLOR_LOCATION_SCHEMA, build_tiny_zoo

    from projcomp.compose import CompositionError
    from projcomp.experiments import setting_spec
    from projcomp.zoo import Zoo

    zoo = Zoo(build_tiny_zoo(str(tmp_path / "zoo"), location_schema=COLOR_LOCATION_SCHEMA))
    places = [(0.3, 0.6), (0.7, 0.6)]
    plain = setting_spec(zoo, "A", places, [0], colors=["red", None])
    spec = setting_spec(zoo, "A", places, [0], colors=["red", None], weights=[1.5, 1.0], color_guidance=3.0)
    assert [t.cond for t in spec.terms] == [{"xy": [0.3, 0.6], "color": "red"}, [0.3, 0.6], [0.7, 0.6]]
    assert [t.weight for t in spec.terms] == [4.5, -3.0, 1.0]
    assert len(setting_spec(zoo, "A", places, [0], colors=["red", None], color_guidance=1.0).terms) == 2
    with pytest.raises(CompositionError, match="color_guidance"):
        setting_spec(zoo, "A", places, [0], colors=["red", None], color_guidance=float("nan"))

    name = spec.terms[0].model
    net = zoo.get(name)
    models = {name: net, spec.background.model: zoo.get(spec.background.model)}
    torch.manual_seed(0)
    x, sigma = torch.randn(2, *net.image_shape), torch.tensor([0.7, 0.7])
    with torch.no_grad():
        got = spec.build(models)(x, sigma)
        D = lambda c: net(x, sigma, torch.stack([net.encode_cond(c)] * 2))
        Db, Dxy, Dxyc, D2 = D("empty"), D([0.3, 0.6]), D({"xy": [0.3, 0.6], "color": "red"}), D([0.7, 0.6])
        want = Db + 1.5 * (Dxy + 3.0 * (Dxyc - Dxy) - Db) + (D2 - Db)
        unguided = plain.build(models)(x, sigma)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, unguided, atol=1e-3)   # the guidance changes the composition


def test_judge_scores_colour_and_contrast_on_a_rendered_scene():
    from projcomp.clevr.render import render
    from projcomp.clevr.scene import sample_scene
    from projcomp.evaluate import judge_locations

    R = 32
    scene = sample_scene([5, 1], 2, resolution=R)
    img = render(scene, R)
    objs = scene["objects"]
    places = [[o["pixel_coords"][0] / R, o["pixel_coords"][1] / R] for o in objs]
    empty_place = [0.5, 0.95] if all(abs(p[1] - 0.95) > 0.15 for p in places) else [0.5, 0.05]
    v = judge_locations(img, places + [empty_place], colors=[o["color"] for o in objs] + ["red"])
    assert v["hits"][:2] == [True, True] and v["color_match"][:2] == [True, True]
    assert v["color_match"][2] is None  # nothing there to match
    assert min(v["contrast"][:2]) > 2 * v["contrast"][2]
    wrong = judge_locations(img, places, colors=[c for c in ("cyan", "yellow")])
    assert wrong["color_match"] != [True, True] or {o["color"] for o in objs} == {"cyan", "yellow"}


def test_map_color_puts_the_bump_in_the_asked_colours_channel():
    enc = ConditionEncoder({**SCHEMA, "encoding": "map-color"})
    assert enc.map_channels == 1 + len(COLORS)
    vals = [{"xy": (0.3, 0.6), "color": "red"}, (0.3, 0.6), {"color": "red"}, "empty", None]
    m = enc.location_map(enc.encode_batch(vals), 32)
    assert m.shape == (5, 1 + len(COLORS), 32, 32)
    bump = m[1, 0]
    assert torch.equal(m[0, 0], bump) and bump.max() > 0.5
    red = 1 + COLORS.index("red")
    assert torch.equal(m[0, red], bump)                     # the place, in red's channel
    assert m[0, 1:].sum(0).sub(bump).abs().max() == 0       # and in no other colour's
    assert m[1, 1:].abs().max() == 0                        # any colour at xy: no colour channel
    assert m[2:].abs().max() == 0                           # colour anywhere, empty, null: no place
    # The plain map's channel is the same bump (the colour channels are added after it).
    assert torch.equal(ConditionEncoder(SCHEMA).location_map(enc.encode_batch(vals[:1]), 32)[0, 0], bump)
    with pytest.raises(ConditionError, match="map-color.*needs 'colors'"):
        ConditionEncoder({"type": "location", "dim": 2, "encoding": "map-color"})


def test_training_with_map_color_runs_and_the_checkpoint_reloads(tmp_path):
    from projcomp.checkpoint import load
    from projcomp.clevr.datasets import make_dataset
    from projcomp.train import Trainer, TrainError, resolve_config

    data = str(tmp_path / "obj.zip")
    make_dataset("object-empty", 32, 16, data, seed=3, workers=1, progress=False)
    cfg = resolve_config("tiny", {"cond_encoding": "map-color", "color_dropout": 0.4, "duration": 32})
    tr = Trainer(cfg, data, str(tmp_path / "run"), progress=False)
    assert tr.net.unet.map_channels == 1 + 8 and tr.condition["encoding"] == "map-color"
    tr.run()
    net = load(str(tmp_path / "run" / "checkpoint"))
    assert net.unet.map_channels == 9 and net.encoder.encoding == "map-color"
    c = net.encoder.encode_batch([{"xy": (0.5, 0.5), "color": "red"}, {"xy": (0.5, 0.5), "color": "blue"}])
    with torch.no_grad():
        d = net(torch.zeros(2, 3, 16, 16), torch.tensor([1.0, 1.0]), c)
    assert (d[0] - d[1]).abs().max() > 0  # the colour changes the output
    make_dataset("location-empty", 16, 16, str(tmp_path / "loc.zip"), seed=3, workers=1, progress=False)
    with pytest.raises(TrainError, match="map-color.*no colour per object"):
        Trainer(resolve_config("tiny", {"cond_encoding": "map-color", "duration": 32}), str(tmp_path / "loc.zip"),
                str(tmp_path / "run2"), progress=False)


def test_map_only_hides_the_place_from_the_global_embedding():
    enc = ConditionEncoder({**SCHEMA, "encoding": "map-only"})
    assert enc.map_channels == 1
    L = enc.encode_batch([(0.2, 0.3), {"xy": (0.7, 0.6), "color": "red"}, "empty", None])
    G = enc.global_part(L)
    K = enc.num_freqs
    assert G[:, :4 * K].abs().max() == 0 and torch.equal(G[:, 4 * K:], L[:, 4 * K:])  # flag, colour, empty kept
    assert torch.equal(ConditionEncoder(SCHEMA).global_part(L), L)                    # "map" is unchanged
    from conftest import deafen_to_maps
    x = torch.randn(1, 3, 16, 16).expand(2, -1, -1, -1)
    two_places = enc.encode_batch([(0.2, 0.2), (0.8, 0.8)])
    with torch.no_grad():
        net = deafen_to_maps(_net({**SCHEMA, "encoding": "map-only"}))  # deaf to the map: the place cannot matter
        d = net(x, torch.tensor([1.0, 1.0]), two_places)
        assert torch.equal(d[0], d[1])
        glob = deafen_to_maps(_net(SCHEMA))  # while "map" still hears the place through the embedding
        d = glob(x, torch.tensor([1.0, 1.0]), two_places)
        assert not torch.equal(d[0], d[1])


def test_map_local_term_and_empty_scene_differ_only_through_the_maps():
    # "map-local": a placed label (with or without a colour) hears the empty scene's global
    # embedding; the place and the colour come only as maps. A net deaf to the maps must then
    # give the term and the empty scene the same output everywhere (D_i - D_b = 0), while the
    # null label (p_u) and a colour without a place keep their own embeddings.
    enc = ConditionEncoder({**SCHEMA, "encoding": "map-local"})
    assert enc.map_channels == 1 + len(COLORS)
    vals = [(0.2, 0.3), {"xy": (0.7, 0.6), "color": "red"}, "empty", None, {"color": "blue"}]
    L = enc.encode_batch(vals)
    G = enc.global_part(L)
    assert torch.equal(G[0], L[2]) and torch.equal(G[1], L[2]) and torch.equal(G[2], L[2])
    assert torch.equal(G[3:], L[3:])
    m = enc.location_map(L, 32)
    assert m[1, 1 + COLORS.index("red")].max() > 0.5 and m[0, 1:].abs().max() == 0  # colour as a map
    from conftest import deafen_to_maps
    x = torch.randn(1, 3, 16, 16).expand(4, -1, -1, -1)
    labels = enc.encode_batch([(0.2, 0.2), {"xy": (0.8, 0.8), "color": "red"}, "empty", None])
    with torch.no_grad():
        d = deafen_to_maps(_net({**SCHEMA, "encoding": "map-local"}))(x, torch.ones(4), labels)
    assert torch.equal(d[0], d[2]) and torch.equal(d[1], d[2])   # no global difference from the empty scene
    assert not torch.equal(d[3], d[2])                           # the null label stays distinct
    with torch.no_grad():  # with the maps heard, the place matters
        d = _net({**SCHEMA, "encoding": "map-local"})(x[:2], torch.ones(2), labels[:2])
    assert not torch.equal(d[0], d[1])
    # Without "empty" (setting C: the background is the null label) placed rows hear the null
    # label's global embedding, so term and background again differ only through the map.
    clutter = {"type": "location", "dim": 2, "encoding": "map-local"}
    e2 = ConditionEncoder(clutter)
    L2 = e2.encode_batch([(0.1, 0.1), (0.9, 0.4), None])
    G2 = e2.global_part(L2)
    assert torch.equal(G2, torch.zeros_like(G2)) and L2[:2].abs().sum() > 0
    assert e2.location_map(L2, 16)[:2].amax() > 0.5 and e2.location_map(L2, 16)[2].abs().max() == 0
    with torch.no_grad():
        d = deafen_to_maps(_net(clutter))(x[:3], torch.ones(3), L2)
        assert torch.equal(d[0], d[2]) and torch.equal(d[1], d[2])   # deaf to the map: all the null label
        d = _net(clutter)(x[:3], torch.ones(3), L2)
        assert not torch.equal(d[0], d[2]) and not torch.equal(d[0], d[1])


def test_color_only_map_fills_the_colour_channel_for_colour_anywhere_only(tmp_path):
    """"color_only": "map": an object of colour c anywhere sets c's channel to 1 over the image;
    placed labels, any-colour labels, the empty scene and the null label map as before (so old
    checkpoints, whose schema lacks the key, are unchanged)."""
    base = {**SCHEMA, "encoding": "map-local"}
    enc, old = ConditionEncoder({**base, "color_only": "map"}), ConditionEncoder(base)
    vals = [{"xy": (0.3, 0.6), "color": "red"}, (0.3, 0.6), {"color": "red"}, "empty", None]
    labels = enc.encode_batch(vals)
    m, m0 = enc.location_map(labels, 16), old.location_map(labels, 16)
    red = 1 + COLORS.index("red")
    assert torch.equal(m[2, red], torch.ones(16, 16))                  # red, anywhere
    assert m[2, :red].abs().max() == 0 and m[2, red + 1:].abs().max() == 0   # no bump, no other colour
    assert m0[2].abs().max() == 0                                      # before the key: nothing
    keep = [0, 1, 3, 4]
    assert torch.equal(m[keep], m0[keep])
    assert torch.equal(enc.global_part(labels), old.global_part(labels))  # the global route is kept
    with pytest.raises(ConditionError, match="color_only='map' needs colour maps"):
        ConditionEncoder({**SCHEMA, "color_only": "map"})               # 'map' has no colour channels
    with pytest.raises(ConditionError, match="color_only='anywhere'"):
        ConditionEncoder({**base, "color_only": "anywhere"})
    from projcomp.clevr.datasets import make_dataset
    from projcomp.train import Trainer, TrainError, resolve_config
    data = str(tmp_path / "loc.zip")
    make_dataset("location-empty", 16, 16, data, seed=3, workers=1, progress=False)
    with pytest.raises(TrainError, match="--color-only-map: needs colour maps"):
        Trainer(resolve_config("tiny", {"cond_encoding": "map", "color_only_map": True, "duration": 32}), data,
                str(tmp_path / "run"), progress=False)
