"""Framings: which square of CLEVR's 320x240 frame a dataset keeps ('centre' = every dataset before
framings; 'floor' = fitted to where objects stand, objects 1.5x larger), and that every reader of a
checkpoint's images (location sets, detector, contrast, fig3 / rejudge, the sample CLI) uses its own."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from projcomp.clevr import render, render_ids, sample_scene
from projcomp.clevr.datasets import DatasetError, make_dataset
from projcomp.clevr.detect import detect, match
from projcomp.clevr.world import FRAMINGS, framing_crop
from projcomp.experiments import Zoo, random_locations


def test_centre_is_the_framing_of_before():
    for seed in range(5):
        a = sample_scene([3, seed], (1, 4), resolution=32)
        assert a == sample_scene([3, seed], (1, 4), resolution=32, framing='centre')
        assert a['render']['crop'] == [40.0, 0.0, 240] and 'framing' not in a['render']
    assert framing_crop('centre') == (40.0, 0.0, 240) and set(FRAMINGS) >= {'centre', 'floor'}
    with pytest.raises(ValueError, match="unknown framing 'wide'"):
        sample_scene(0, 1, framing='wide')


def test_floor_framing_shows_larger_objects_inside_the_image():
    ratios = []
    for i in range(12):
        s = sample_scene([21, i], 1, resolution=32, framing='floor')
        assert s['render']['framing'] == 'floor' and s['render']['crop'] == [80.0, 40.0, 160.0]
        u, v = s['objects'][0]['pixel_coords'][:2]
        assert 0 < u < 32 and 0 < v < 32
        # the same scene in the centre framing: the object covers 1.5^2 fewer pixels
        centre = json.loads(json.dumps(s))
        centre['render'] = {k: v for k, v in centre['render'].items() if k != 'framing'}
        centre['render']['crop'] = [40.0, 0.0, 240]
        ratios.append((render_ids(s, 96) >= 0).sum() / max((render_ids(centre, 96) >= 0).sum(), 1))
    assert 1.9 < np.median(ratios) < 2.6, ratios
    # many objects still fit (each one re-drawn until it lies inside, not the whole scene)
    assert len(sample_scene(4, 8, resolution=32, framing='floor')['objects']) == 8


def test_dataset_records_its_framing(tmp_path):
    meta = make_dataset('object-empty', 6, 16, str(tmp_path / 'f.zip'), seed=2, workers=1, progress=False,
                        framing='floor')
    assert meta['framing'] == 'floor' and meta['crop'] == [80.0, 40.0, 160.0] and 'floor framing' in meta['renderer']
    with zipfile.ZipFile(tmp_path / 'f.zip') as z:
        doc = json.loads(z.read('dataset.json'))
        scenes = [json.loads(z.read(n)) for n in z.namelist() if n.startswith('scenes/')]
    assert doc['projcomp']['framing'] == 'floor' and all(s['render']['crop'] == [80.0, 40.0, 160.0] for s in scenes)
    centre = make_dataset('object-empty', 2, 16, str(tmp_path / 'c.zip'), seed=2, workers=1, progress=False)
    assert 'framing' not in centre and 'crop' not in centre      # centre datasets: the metadata of before
    with pytest.raises(DatasetError, match="--framing must be one of"):
        make_dataset('object-empty', 2, 16, str(tmp_path / 'x.zip'), framing='wide', progress=False)
    assert not os.path.exists(tmp_path / 'x.zip')


def test_detector_reads_floor_images_in_their_framing():
    exact_framed = exact_plain = 0
    n = 24
    for i in range(n):
        s = sample_scene([10042, i], (1, 6), resolution=32, framing='floor')
        img = render(s, 32)
        gt = [o['pixel_coords'][:2] for o in s['objects']]
        dets = detect(img, framing='floor')
        m = match(dets, gt, radius=2.56)
        exact_framed += m['exact_count'] and all(m['hits'])
        exact_plain += match(detect(img), gt, radius=2.56)['exact_count']
        assert all(0 <= d['center'][0] < 32 and 0 <= d['center'][1] < 32 for d in dets)
    assert exact_framed >= 0.9 * n and exact_framed > exact_plain, (exact_framed, exact_plain)
    dets, labels = detect(render(sample_scene([10042, 0], 2, resolution=32, framing='floor'), 32), framing='floor',
                          return_labels=True)
    assert labels.shape == (32, 32) and len(dets) == 2
    with pytest.raises(ValueError, match="whole pixels"):
        detect(np.zeros((30, 30, 3), np.uint8), framing='floor')


def test_location_sets_and_fig3_use_the_nets_framing(tiny_zoo_dir, tmp_path):
    from projcomp.evaluate import main as eval_main

    a, b = random_locations(3, 1), random_locations(3, 1, framing='floor')
    assert a != b and all(0 < c < 1 for xy in b for c in xy)
    zoo_dir = tmp_path / 'zoo'
    shutil.copytree(tiny_zoo_dir, zoo_dir)
    zoo = Zoo(str(zoo_dir))
    name = zoo.find('location')
    assert zoo.framing_of(name) == 'centre'
    cfg_path = zoo_dir / name / 'config.json'
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault('dataset', {})['framing'] = 'floor'
    cfg_path.write_text(json.dumps(cfg))
    assert Zoo(str(zoo_dir)).framing_of(name) == 'floor'
    out = tmp_path / 'fig3'
    assert eval_main(['fig3', '--checkpoints', str(zoo_dir), '--settings', 'A', '--k', '2', '--seeds', '0-1',
                      '--steps', '1', '--outdir', str(out)]) == 0
    with np.load(out / 'samples.npz') as z:
        assert str(z['A/framing']) == 'floor'
        assert np.allclose(z['A/k2/set0/locations'], random_locations(2, 0, framing='floor'))
    first = (out / 'table1.csv').read_text()
    assert eval_main(['rejudge', '--outdir', str(out)]) == 0 and (out / 'table1.csv').read_text() == first


def test_app_canvas_and_layouts_follow_the_location_nets_framing(tiny_zoo_dir, tmp_path):
    from projcomp.tabs import clevr as tc
    from projcomp.tabs.common import zoo_status

    zoo_dir = tmp_path / 'zoo'
    shutil.copytree(tiny_zoo_dir, zoo_dir)
    assert zoo_status(Zoo(str(zoo_dir)))['framing'] == 'centre'
    name = Zoo(str(zoo_dir)).find('location')
    cfg = json.loads((zoo_dir / name / 'config.json').read_text())
    cfg.setdefault('dataset', {})['framing'] = 'floor'
    (zoo_dir / name / 'config.json').write_text(json.dumps(cfg))
    assert zoo_status(Zoo(str(zoo_dir)))['framing'] == 'floor'
    # the canvas is the empty floor as that framing shows it (the horizon lies lower in 'floor')
    centre, floor = tc.empty_scene(64), tc.empty_scene(64, 'floor')
    assert np.abs(centre.astype(int) - floor.astype(int)).mean() > 2
    assert np.array_equal(tc.draw_scene([], framing='floor'), tc.draw_scene([], framing='floor'))
    objs = tc.random_objects(3, 1, 'floor')
    assert [[o.x, o.y] for o in objs] == random_locations(3, 1, framing='floor') != random_locations(3, 1)
