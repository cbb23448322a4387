"""CLEVR detector internals: digital hull, splitting touching same-colour objects, tiny objects."""

import numpy as np
from scipy.spatial import ConvexHull

from projcomp.clevr import render, sample_scene
from projcomp.clevr.detect import _hull_mask, _solidity, _split_convex, detect, match


def test_hull_mask_equals_qhull_lattice_points():
    rng = np.random.default_rng(0)
    gy, gx = np.mgrid[0:12, 0:14]
    g = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], -1)
    checked = 0
    for _ in range(100):
        m = rng.random((12, 14)) < 0.3
        ys, xs = np.nonzero(m)
        if len(ys) < 4 or len(set(xs)) < 2 or len(set(ys)) < 2:
            continue
        hull = ConvexHull(np.stack([xs, ys], -1).astype(float))
        ref = (g @ hull.equations.T <= 1e-6).all(-1).reshape(12, 14)
        assert (ref == _hull_mask(m)).all()
        checked += 1
    assert checked > 50


def _disc(shape, cx, cy, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_overlapping_discs_split_at_the_chord_and_one_disc_is_not():
    front, back = _disc((40, 50), 18, 22, 10), _disc((40, 50), 35, 18, 8)
    union = front | back                              # one disc partly hiding another
    assert _solidity(union) < 0.92 and _solidity(front) == 1.0
    parts = _split_convex(union, 4)
    assert len(parts) == 2
    centres = sorted((np.nonzero(p)[1].mean(), np.nonzero(p)[0].mean()) for p in parts)
    assert abs(centres[0][0] - 18) < 1.5 and abs(centres[1][0] - 35) < 1.5
    assert len(_split_convex(front, 4)) == 1


def test_far_small_objects_found_at_32_and_empty_scenes_stay_empty():
    hits = total = 0
    for i in range(12):
        s = sample_scene([31, i], (1, 6), resolution=32)
        m = match(detect(render(s, 32)), [o['pixel_coords'][:2] for o in s['objects']], 2.56)
        hits += sum(m['hits'])
        total += len(m['hits'])
        assert detect(render(sample_scene([32, i], 0, resolution=32), 32)) == []
    assert hits / total >= 0.9
