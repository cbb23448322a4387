"""The shipped checkpoints in checkpoints/: they load offline, record how they were made, fit the
size budget, and show the paper's central contrast (Fig 3A vs 3B) with the same seeds."""

import glob
import json
import os

import numpy as np
import pytest

import projcomp
from projcomp.evaluate import judge_locations
from projcomp.experiments import Zoo, setting_framing, setting_spec
from projcomp.generate import run_spec
from projcomp.imageio import to_uint8

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, "checkpoints")
FOLDERS = sorted(d for d in glob.glob(os.path.join(ROOT, "clevr-*")) if os.path.isdir(d))


def test_every_shipped_checkpoint_loads_and_records_its_commands():
    assert {os.path.basename(d) for d in FOLDERS} >= {"clevr-object-32", "clevr-clutter-32"}
    total = 0
    for d in FOLDERS:
        cfg = json.load(open(os.path.join(d, "config.json")))
        # Trained by this repo's own pipeline, from a dataset made by its own renderer.
        assert cfg["command"].startswith("python -m projcomp.train ")
        assert cfg["dataset"]["command"].startswith("python -m projcomp.clevr make ")
        assert cfg["final"] and cfg["images_seen"] > 0 and cfg["dtype"] == "float16"
        # No machine path: the dataset is named as given on the command line, plus its hash.
        assert not os.path.isabs(cfg["dataset"]["path"]) and cfg["dataset"]["path"].startswith("data/")
        net = projcomp.load(d)
        assert tuple(net.image_shape) == tuple(cfg["image_shape"])
        assert sum(p.numel() for p in net.parameters()) == cfg["num_parameters"]
        total += sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    assert total < 60 * 2**20  # the budget for checkpoints/


@pytest.mark.parametrize("resolution", [32])
def test_shipped_location_model_composes_over_empty_but_not_bayes(resolution):
    """Fig 3A vs 3B on the shipped net, same seeds: the empty background places objects at the
    requested places; the Bayes background (null label = one object anywhere) loses them."""
    zoo = Zoo(ROOT, resolution=resolution)
    locs = [[0.3, 0.55], [0.7, 0.55], [0.5, 0.75]]
    seeds = [0, 1, 2, 3]
    found = {}
    for setting in ("A", "B"):
        spec = setting_spec(zoo, setting, locs, seeds, sampler={"num_steps": 12})
        imgs = to_uint8(run_spec(spec, zoo, batch=16))
        verdicts = [judge_locations(im, locs, framing=setting_framing(zoo, setting)) for im in imgs]
        found[setting] = (sum(sum(v["hits"]) for v in verdicts), sum(v["num_detected"] for v in verdicts))
        assert np.isfinite(imgs.astype(np.float64)).all() and imgs.std() > 2  # real images, not flat
    hits_a, det_a = found["A"]
    hits_b, det_b = found["B"]
    assert hits_a >= 4, found          # of 12 requested places (4 seeds x 3 objects)
    assert hits_a >= hits_b + 3 and det_a > det_b, found


def test_shipped_object_net_places_objects_and_hears_the_colour():
    """The object net (issue 15): over the empty background, places asked for a colour get their
    objects, the colour asked for changes what is drawn there, and the detector finds the asked
    colour at most hit places (README: 0.6-0.84 at k = 1..4; a net deaf to its colour label finds
    it at chance, 1/8, and the previous map net at 0.19-0.42)."""
    zoo = Zoo(ROOT, resolution=32)
    name = zoo.find("location")
    assert (zoo.entries[name].get("condition") or {}).get("encoding") in ("map", "map-local")
    locs = [[0.3, 0.55], [0.7, 0.55], [0.5, 0.75]]
    out = {}
    matched = at_hits = 0
    for colors in (("red", "blue", "yellow"), ("yellow", "red", "blue")):
        spec = setting_spec(zoo, "A", locs, [0, 1, 2, 3], sampler={"num_steps": 12}, colors=list(colors))
        imgs = to_uint8(run_spec(spec, zoo, batch=16))
        verdicts = [judge_locations(im, locs, colors=colors, framing=zoo.framing_of(name)) for im in imgs]
        hits = sum(sum(v["hits"]) for v in verdicts)
        assert hits >= 8, (colors, hits)  # of 12 requested places
        oks = [ok for v in verdicts for ok in v["color_match"] if ok is not None]
        matched, at_hits = matched + sum(oks), at_hits + len(oks)
        out[colors] = imgs.astype(np.float64)
    a, b = out.values()
    assert np.abs(a - b).mean() > 2.0  # same seeds and places, other colours: other images
    assert matched >= 0.5 * at_hits, (matched, at_hits)


def test_shipped_clutter_net_places_six_objects_among_its_clutter():
    """Setting C (Fig 3C) on the shipped clutter net: six places asked over the cluttered
    background (the net's null label, 1-5 objects anywhere). Measured at 12 steps, 4 seeds: every
    one of the 24 places hit and 28 detections (by eye 28-29 objects; 39 before the detector's
    fragment join counted each hue of a multi-hue object); the GPU-trained net it replaced hit 19
    with 24 detections (judged before the join), so a net that loses places, or draws nothing
    but the places, fails."""
    zoo = Zoo(ROOT, resolution=32)
    name = zoo.find("clutter")
    assert (zoo.entries[name].get("condition") or {}).get("encoding") == "map-local"
    locs = [[0.25, 0.5], [0.5, 0.5], [0.75, 0.5], [0.3, 0.75], [0.7, 0.75], [0.5, 0.3]]
    spec = setting_spec(zoo, "C", locs, [0, 1, 2, 3], sampler={"num_steps": 12})
    imgs = to_uint8(run_spec(spec, zoo, batch=28))
    verdicts = [judge_locations(im, locs, framing=setting_framing(zoo, "C")) for im in imgs]
    hits = sum(sum(v["hits"]) for v in verdicts)
    detected = sum(v["num_detected"] for v in verdicts)
    assert hits >= 21, (hits, detected)                      # of 24 requested places
    assert detected > len(imgs) * len(locs), (hits, detected)  # the places plus some clutter
