"""CLEVR detector: digital hull, splitting touching same-colour objects, tiny objects, the centre net."""

import copy
import json
import os

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull

from projcomp.clevr import centernet, render, sample_scene, set_resolution
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


def _two_spheres(offset_behind, offset_right, color='red', R=64):
    """Two large rubber spheres of one colour, the second `offset_behind` behind and
    `offset_right` right of the first (world units along the camera's directions)."""
    s = sample_scene(5, 1, forced={'color': color, 'size': 'large', 'shape': 'sphere', 'material': 'rubber'})
    d = s['directions']
    a = s['objects'][0]
    a['3d_coords'] = [0.0, 0.0, 0.7]
    b = copy.deepcopy(a)
    b['3d_coords'] = [offset_behind * d['behind'][0] + offset_right * d['right'][0],
                      offset_behind * d['behind'][1] + offset_right * d['right'][1], 0.7]
    s['objects'] = [a, b]
    set_resolution(s, R)
    return s


def test_touching_same_colour_objects_with_nearly_convex_union_are_two():
    # the second sphere sits behind-right of the first: their union has only a shallow neck,
    # which the convexity splitter alone (centers='classical') does not cut
    for R in (32, 64, 128):
        s = _two_spheres(1.6, 0.8, R=R)
        img = render(s, R)
        gt = [o['pixel_coords'][:2] for o in s['objects']]
        dets = detect(img)
        m = match(dets, gt, max(2.0, 0.08 * R))
        assert m['all_hit'], (R, [d['center'] for d in dets], gt)
        assert [d['color'] for d in dets] == ['red', 'red']
        assert max(np.hypot(*(np.subtract(dets[a]['center'], g))) for a, g in zip(m['assignment'], gt)) < 0.05 * R
    assert len(detect(render(_two_spheres(1.6, 0.8), 64), centers='classical')) == 1


def test_centre_net_weights_are_small_safetensors_with_their_training_command():
    folder = os.path.dirname(centernet.WEIGHTS + '/')
    files = sorted(os.listdir(folder))
    assert files == ['config.json', 'model.safetensors']
    assert os.path.getsize(os.path.join(folder, 'model.safetensors')) < 2 * 2 ** 20
    cfg = json.load(open(os.path.join(folder, 'config.json')))
    assert cfg['command'].startswith('python -m projcomp.clevr.centernet train')
    assert all(c.startswith('python -m projcomp.clevr.centernet data') for c in cfg['train']['data_commands'])
    assert 0 < cfg['threshold'] < 1 and cfg['input'] == 64
    net, _ = centernet.load()
    assert not net.training and sum(p.numel() for p in net.parameters()) < 200_000


def test_centre_net_finds_every_object_alone_and_nothing_on_empty_floors():
    hits = total = extra = 0
    for i in range(10):
        s = sample_scene([41, i], (1, 8), resolution=64)
        img = render(s, 64).astype(np.float32) / 255
        xy, score = centernet.predict(img)
        m = match([{'center': c} for c in xy], [o['pixel_coords'][:2] for o in s['objects']], 2.0)
        hits += sum(m['hits'])
        total += len(m['hits'])
        extra += len(xy) - sum(m['hits'])
        e = render(sample_scene([42, i], 0, resolution=64), 64).astype(np.float32) / 255
        assert len(centernet.predict(e)[0]) == 0
    assert hits / total >= 0.95 and extra <= 2


def test_degraded_images_still_counted():
    # generated samples are blurrier and noisier than renders: mild blur + noise keeps the count
    rng = np.random.default_rng(0)
    ok = n = 0
    for i in range(12):
        s = sample_scene([43, i], (1, 6), resolution=64)
        img = render(s, 64).astype(np.float32)
        img = ndi.gaussian_filter(img, (0.7, 0.7, 0)) + rng.normal(0, 4, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        ok += match(detect(img), [o['pixel_coords'][:2] for o in s['objects']], 5.12)['all_hit']
        n += 1
    assert ok / n >= 0.8


def test_centre_net_retrains_exactly_from_its_cli(tmp_path):
    data = str(tmp_path / 'data')
    centernet.main(['data', '--out', data, '--scenes', '6', '--seed', '5'])
    centernet.make_data(data, 2, seed=8888, shard_size=2)            # validation shard
    imgs, objs = centernet.load_data(data, exclude=8888)
    assert imgs.shape == (6, 64, 64, 3) and objs.shape[1] == 5
    outs = []
    for k in range(2):
        out = str(tmp_path / f'w{k}')
        centernet.main(['train', '--data', data, '--out', out, '--steps', '3', '--batch', '4'])
        outs.append(open(os.path.join(out, 'model.safetensors'), 'rb').read())
        cfg = json.load(open(os.path.join(out, 'config.json')))
        assert cfg['command'] == f'python -m projcomp.clevr.centernet train --data {data} --out {out} --steps 3 --batch 4'
        assert cfg['train']['data_commands'] == [
            f'python -m projcomp.clevr.centernet data --out {data} --seed 5 --scenes 6',
            f'python -m projcomp.clevr.centernet data --out {data} --seed 8888 --scenes 2']
        xy, score = centernet.predict(imgs[0] / 255.0, folder=out)
        assert xy.shape[1] == 2 and len(xy) == len(score)
    assert outs[0] == outs[1]          # same data, same seed -> the same bytes


def test_faint_small_object_without_a_labelled_pixel_is_still_counted():
    """A small object drawn at half strength (as generated samples draw far objects) can leave
    foreground pixels none of which gets a colour label; the centre net still finds it, and the
    orphan rule counts a confident centre. (The detector used to return no object whenever no
    pixel had a label, before asking the centre net: k = 1 samples with a visible far object
    scored as misses.) The bare floor under the same blend stays empty."""
    for key, alpha in (([41, 46], 0.5), ([41, 31], 0.35), ([41, 26], 0.5)):
        s = sample_scene(key, 1, resolution=32, forced={'size': 'small'})
        im = render(s, 32).astype(np.float64)
        bare = render({**s, 'objects': []}, 32)
        faint = np.clip(bare + alpha * (im - bare), 0, 255).round().astype(np.uint8)
        m = match(detect(faint), [s['objects'][0]['pixel_coords'][:2]], 2.56)
        assert m['num_detected'] == 1 and m['hits'] == [True], (key, m)
        assert detect(bare) == []


def _two_hue_cube(key, R):
    """A large rubber cube whose upper half is drawn in another hue (RGB rotated), as generated
    samples often draw one object: a fragment of another colour with no centre of its own."""
    s = sample_scene(key, 1, resolution=R, forced={'size': 'large', 'shape': 'cube', 'color': 'red',
                                                   'material': 'rubber'})
    im = render(s, R).astype(np.int16)
    bare = render({**s, 'objects': []}, R).astype(np.int16)
    obj = np.abs(im - bare).sum(-1) > 30
    ys, _ = np.nonzero(obj)
    top = obj & (np.arange(R)[:, None] < (ys.min() + ys.max()) / 2)
    im[top] = im[top][:, [2, 0, 1]]
    return s, im.clip(0, 255).astype(np.uint8)


def test_a_two_hue_object_is_one_object(monkeypatch):
    """A colour component without a centre that touches one with a centre is part of that object
    (detect._join_fragments): counted once, at the object. Without the rule the second hue was
    counted as a second object, the detector's main error on generated setting-A samples."""
    from projcomp.clevr import detect as D
    for R in (32, 64):
        for key in ([77, 1], [77, 2], [77, 4]):
            s, img = _two_hue_cube(key, R)
            m = match(detect(img), [s['objects'][0]['pixel_coords'][:2]], max(2.0, 0.08 * R))
            assert m['num_detected'] == 1 and m['hits'] == [True], (R, key, m)
            monkeypatch.setattr(D, '_JOIN_TOUCHING', False)
            assert len(detect(img)) == 2, (R, key)      # the fragment alone, counted before the rule
            monkeypatch.setattr(D, '_JOIN_TOUCHING', True)


def _front_and_back(back_color, R, behind=1.4, right=0.6):
    """A large blue rubber sphere with a large sphere of `back_color` partly hidden behind it."""
    s = _two_spheres(behind, right, color='blue', R=R)
    s['objects'][1]['color'] = back_color
    return s


def test_a_half_hidden_object_keeps_its_own_colour(monkeypatch):
    """A gray object half hidden behind a blue one: its visible pixels are too pale for a hue, take
    the blue component's label, and the centre net splits that component between the two centres.
    Each part's colour is read from the disc at its own centre (detect._PART_COLOUR), so the back
    object is gray; with the component's one colour for both parts it was blue (the colour target's
    k = 2 miss on the shipped net: a gray object asked 0.13 image widths behind a blue one)."""
    from projcomp.clevr import detect as D
    for R, back in ((32, 'gray'), (64, 'gray'), (64, 'cyan')):
        s = _front_and_back(back, R)
        img = render(s, R)
        gt = [o['pixel_coords'][:2] for o in s['objects']]
        dets = detect(img)
        m = match(dets, gt, max(2.0, 0.08 * R))
        assert m['all_hit'] and m['num_detected'] == 2, (R, back, m)
        assert [dets[a]['color'] for a in m['assignment']] == ['blue', back], (R, back)
        monkeypatch.setattr(D, '_PART_COLOUR', False)
        old = detect(img)
        assert [old[a]['color'] for a in match(old, gt, max(2.0, 0.08 * R))['assignment']] == ['blue', 'blue']
        monkeypatch.setattr(D, '_PART_COLOUR', True)
