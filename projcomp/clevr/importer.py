"""Import real clevr-dataset-gen output (Blender renders) into the projcomp dataset format.

Accepted layout (what `render_images.py` writes): DIR/images/*.png plus either per-image scene
JSONs in DIR/scenes/*.json or the merged DIR/CLEVR_scenes.json ({"info": ..., "scenes": [...]}).
Each image is centre-cropped to a square (320x240 -> the centred 240x240, like our renderer;
480x320 CLEVR v1.0 -> the centred 320x320) and resized with Lanczos to R x R; every object's
pixel_coords is mapped into that R x R image. Labels (location / color) describe object 0; scenes
whose object 0 centre falls outside the crop are skipped (counted in the metadata).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from PIL import Image

from .datasets import (VERSION, DatasetError, ZipWriter, condition_schema, image_name,
                       label_of, png_bytes)


def find_scenes(root):
    """The scene dicts of a clevr-dataset-gen output directory, sorted by image_index."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f'{root} is not a directory')
    if not os.path.isdir(os.path.join(root, 'images')):
        raise DatasetError(f'{root} is not clevr-dataset-gen output: no images/ folder')
    merged = sorted(glob.glob(os.path.join(root, '*scenes*.json')))
    per_image = sorted(glob.glob(os.path.join(root, 'scenes', '*.json')))
    scenes = []
    if per_image:
        for p in per_image:
            try:
                with open(p) as f:
                    scenes.append(json.load(f))
            except json.JSONDecodeError as e:
                raise DatasetError(f'{p} is not valid JSON ({e})') from None
    elif merged:
        with open(merged[0]) as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as e:
                raise DatasetError(f'{merged[0]} is not valid JSON ({e})') from None
        scenes = doc.get('scenes') if isinstance(doc, dict) else None
        if not isinstance(scenes, list):
            raise DatasetError(f'{merged[0]} has no "scenes" list')
    else:
        raise DatasetError(f'{root} is not clevr-dataset-gen output: no scenes/*.json or CLEVR_scenes.json')
    for s in scenes:
        if not isinstance(s, dict) or 'objects' not in s or 'image_filename' not in s:
            raise DatasetError(f'{root}: a scene lacks "objects"/"image_filename" (not clevr-dataset-gen schema)')
    return sorted(scenes, key=lambda s: (s.get('image_index', 0), s['image_filename']))


def import_clevr(root, out, labels='none', resolution=64, command=None, progress=True):
    """Write the zip `out` from clevr-dataset-gen output in `root`; returns the metadata dict."""
    from tqdm import tqdm
    label = None if labels in (None, 'none') else labels
    if label not in (None, 'location', 'color'):
        raise DatasetError(f'unknown --labels {labels!r}; expected location, color or none')
    resolution = int(resolution)
    scenes = find_scenes(root)
    for s in scenes:                     # fail before writing anything
        p = os.path.join(root, 'images', s['image_filename'])
        if not os.path.isfile(p):
            raise DatasetError(f'missing image {p} (named by scene {s.get("image_index")})')
    w = ZipWriter(out)
    out_labels, skipped, k = [], 0, 0
    try:
        for s in tqdm(scenes, disable=not progress, desc='import', unit='img'):
            with Image.open(os.path.join(root, 'images', s['image_filename'])) as im:
                im = im.convert('RGB')
                W, H = im.size
                side = min(W, H)
                x0, y0 = (W - side) // 2, (H - side) // 2
                im = im.crop((x0, y0, x0 + side, y0 + side)).resize((resolution, resolution), Image.LANCZOS)
                img = np.asarray(im)
            s = dict(s)
            s['source_image'] = s['image_filename']
            s['render'] = dict(s.get('render') or {}, width=W, height=H, crop=[x0, y0, side],
                               resolution=resolution)
            objs = []
            for o in s['objects']:
                o = dict(o)
                pc = list(o.get('pixel_coords') or [0, 0, 0])
                o['pixel_coords'] = [(pc[0] - x0) * resolution / side, (pc[1] - y0) * resolution / side] + pc[2:3]
                objs.append(o)
            s['objects'] = objs
            if label is not None:
                if not objs:
                    skipped += 1; continue
                u, v = objs[0]['pixel_coords'][:2]
                if not (0 <= u < resolution and 0 <= v < resolution):
                    skipped += 1; continue
            name = image_name(k)
            s['image_index'], s['image_filename'] = k, name
            w.write(name, png_bytes(img))
            w.write(f'scenes/{k:08d}.json', json.dumps(s, sort_keys=True).encode())
            out_labels.append([name, label_of(s, label, resolution)])
            k += 1
        if k == 0:
            raise DatasetError(f'{root}: no usable scenes (all {skipped} skipped)')
        meta = {'preset': 'import', 'resolution': resolution, 'num_images': k, 'seed': None,
                'condition': condition_schema(label), 'version': VERSION,
                'command': command or f'python -m projcomp.clevr import {root} --out {out} --labels {labels} --resolution {resolution}',
                'source': os.fspath(root), 'skipped': skipped}  # as given: no machine path
        doc = {'labels': out_labels if label is not None else None, 'projcomp': meta}
        w.write('dataset.json', json.dumps(doc, indent=1).encode())
        w.close()
    except BaseException:
        w.abort()
        raise
    return meta
