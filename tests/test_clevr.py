"""CLEVR world: sampler, renderer, datasets, importer, detector (issue 3 acceptance)."""

import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from projcomp.clevr import CLEVR_COLORS, render, render_frame, render_ids, sample_scene
from projcomp.clevr.datasets import (ClevrZipDataset, DatasetError, ZipWriter, load_dataset,
                                     make_dataset)
from projcomp.clevr.detect import detect, evaluate_scenes, match
from projcomp.clevr.importer import import_clevr


def test_same_seed_same_bytes_and_rerender(tmp_path):
    a, b = tmp_path / 'a.zip', tmp_path / 'b.zip'
    make_dataset('clutter-location', 6, 32, a, seed=3, workers=1, progress=False, command='x')
    make_dataset('clutter-location', 6, 32, b, seed=3, workers=2, progress=False, command='x')
    assert a.read_bytes() == b.read_bytes()          # independent of worker count
    ds = ClevrZipDataset(a)
    for i in range(len(ds)):
        scene = ds.scene(i)
        assert 'jitter' in scene and any(v != 0 for v in scene['jitter']['camera'])
        assert np.array_equal(render(scene, 32), ds.image(i))    # re-render from the JSON
    make_dataset('clutter-location', 6, 32, b, seed=4, workers=1, progress=False, command='x')
    assert a.read_bytes() != b.read_bytes()


def test_pixel_coords_inside_object():
    for i in range(25):
        for R in (32, 64):
            s = sample_scene([7, i], (1, 9), resolution=R)
            ids = render_ids(s, R)
            for k, o in enumerate(s['objects']):
                u, v = o['pixel_coords'][:2]
                assert ids[int(v), int(u)] == k, (i, R, k)


def test_sampler_properties():
    s = sample_scene(5, 6, forced={'color': 'yellow', 'shape': 'sphere'})
    assert len(s['objects']) == 6 and s['objects'][0]['color'] == 'yellow'
    assert s == sample_scene(5, 6, forced={'color': 'yellow', 'shape': 'sphere'})
    for o in s['objects']:
        assert -3 <= o['3d_coords'][0] <= 3 and -3 <= o['3d_coords'][1] <= 3
        assert {'shape', 'size', 'material', '3d_coords', 'rotation', 'pixel_coords', 'color'} <= set(o)
    pos = [o['3d_coords'] for o in s['objects']]
    for i in range(len(pos)):
        for j in range(i):
            assert np.hypot(pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]) - pos[i][2] - pos[j][2] >= 0.25
    with pytest.raises(ValueError, match='pink'):
        sample_scene(0, 1, forced={'color': 'pink'})


def test_presets_labels_and_reader(tmp_path):
    for preset, cond in [('empty', None), ('location', 'location'), ('color', 'color'),
                         ('clutter-background', None)]:
        p = tmp_path / f'{preset}.zip'
        make_dataset(preset, 4, 32, p, seed=1, workers=1, progress=False)
        imgs, labels, meta = load_dataset(p)
        assert imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8
        assert meta['preset'] == preset and meta['num_images'] == 4 and 'command' in meta
        assert (meta['condition'] or {}).get('type') == cond
        ds = ClevrZipDataset(p)
        x, y = ds[0]
        assert tuple(x.shape) == (3, 32, 32)
        n_obj = [len(ds.scene(i)['objects']) for i in range(4)]
        if preset == 'empty':
            assert labels is None and n_obj == [0] * 4 and y.numel() == 0
        if preset == 'clutter-background':
            assert all(1 <= n <= 5 for n in n_obj)
        if preset == 'location':
            assert labels.shape == (4, 2) and ((labels >= 0) & (labels <= 1)).all()
            for i in range(4):   # the label is the object's centre: the detector finds it there
                d = detect(ds.image(i))
                assert match(d, [labels[i] * 32], 2.5)['all_hit']
        if preset == 'color':
            assert labels.dtype == np.int64 and int(y) == labels[0]
            assert [CLEVR_COLORS[c] for c in labels] == [ds.scene(i)['objects'][0]['color'] for i in range(4)]


def test_detector_accuracy_64():
    scenes = [sample_scene([2024, i], (0, 9), resolution=64) for i in range(100)]
    images = [render(s, 64) for s in scenes]
    r = evaluate_scenes(scenes, images)
    print(r)
    # Measured (notes/clevr.md, 500 held-out scenes): count 0.998 on 0-9 objects, centre
    # 0.12 px, colour 1.0 (the targets: >= 0.95, <= 2 px, >= 0.9). Guarded with margin.
    assert r['count_acc'] >= 0.97
    assert r['center_err'] <= 0.5
    assert r['color_acc'] >= 0.97
    assert r['recall'] >= 0.98
    # shadows and highlights are never objects: empty scenes give no detections
    assert all(detect(render(sample_scene([9, i], 0, resolution=64), 64)) == [] for i in range(10))


def test_detector_accepts_float_chw():
    s = sample_scene(11, 3, resolution=64)
    img = render(s, 64)
    chw = img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
    assert [d['center'] for d in detect(chw)] == [d['center'] for d in detect(img)]


def _fake_clevr_dir(root, n=3):
    os.makedirs(root / 'images'); os.makedirs(root / 'scenes')
    scenes = []
    for i in range(n):
        s = sample_scene([77, i], 1, split='train', image_index=i)     # 320x240 pixel_coords
        s['image_filename'] = f'CLEVR_train_{i:06d}.png'
        Image.fromarray(render_frame(s, 1)).save(root / 'images' / s['image_filename'])
        (root / 'scenes' / f'CLEVR_train_{i:06d}.json').write_text(json.dumps(s))
        scenes.append(s)
    return scenes


def test_importer(tmp_path):
    src = tmp_path / 'clevr'
    scenes = _fake_clevr_dir(src)
    out = tmp_path / 'imp.zip'
    import_clevr(src, out, labels='location', resolution=64, progress=False)
    imgs, labels, meta = load_dataset(out)
    assert imgs.shape == (3, 64, 64, 3) and meta['preset'] == 'import'
    for i, s in enumerate(scenes):
        want = sample_scene([77, i], 1, split='train', image_index=i, resolution=64)['objects'][0]['pixel_coords']
        assert np.allclose(labels[i] * 64, want[:2], atol=1e-3)
        assert match(detect(imgs[i]), [want[:2]], 2.5)['all_hit']
    # merged CLEVR_scenes.json layout
    src2 = tmp_path / 'clevr2'
    os.makedirs(src2 / 'images')
    for s in scenes:
        os.link(src / 'images' / s['image_filename'], src2 / 'images' / s['image_filename'])
    (src2 / 'CLEVR_scenes.json').write_text(json.dumps({'info': {}, 'scenes': scenes}))
    import_clevr(src2, tmp_path / 'imp2.zip', labels='color', resolution=32, progress=False)
    assert load_dataset(tmp_path / 'imp2.zip')[1].tolist() == [CLEVR_COLORS.index(s['objects'][0]['color']) for s in scenes]


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def test_errors_are_one_line_and_no_half_written_zip(tmp_path, capsys):
    from projcomp.clevr.__main__ import main

    def run(*a):
        try:
            rc = main(list(a))
        except SystemExit as e:
            rc = e.code
        return _Result(rc, capsys.readouterr().err)

    r = run('make', 'bogus', '--n', '2', '--out', str(tmp_path / 'x.zip'))
    assert r.returncode != 0 and r.stderr.strip().count('\n') == 0 and 'bogus' in r.stderr
    r = run('make', 'location', '--out', str(tmp_path / 'x.zip'))      # argparse error, one line too
    assert r.returncode != 0 and r.stderr.strip().count('\n') == 0 and '--n' in r.stderr
    (tmp_path / 'notclevr').mkdir()
    r = run('import', str(tmp_path / 'notclevr'), '--out', str(tmp_path / 'y.zip'))
    assert r.returncode != 0 and r.stderr.strip().count('\n') == 0 and 'clevr-dataset-gen' in r.stderr
    src = tmp_path / 'clevr'
    scenes = _fake_clevr_dir(src, 2)
    os.remove(src / 'images' / scenes[1]['image_filename'])
    r = run('import', str(src), '--out', str(tmp_path / 'z.zip'))
    assert r.returncode != 0 and r.stderr.strip().count('\n') == 0 and scenes[1]['image_filename'] in r.stderr
    assert not (tmp_path / 'z.zip').exists() and not (tmp_path / 'y.zip').exists()
    # an interrupted write leaves neither F nor F.tmp behind
    w = ZipWriter(tmp_path / 'w.zip')
    w.write('a.png', b'123')
    w.abort()
    assert not (tmp_path / 'w.zip').exists() and not (tmp_path / 'w.zip.tmp').exists()
    with pytest.raises(DatasetError, match='does not exist'):
        load_dataset(tmp_path / 'w.zip')
