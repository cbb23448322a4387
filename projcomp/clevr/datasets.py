"""The paper's CLEVR datasets (§6.1, §6.2) as EDM2-style zips, plus the reader used by training.

Zip layout (docs/design.md): `00000/img00000000.png` ... (RGB PNG, R x R), `dataset.json`
  {"labels": [[name, LABEL], ...] | null,
   "projcomp": {"preset", "resolution", "num_images", "seed", "condition", "command", "version",
                "framing" (absent: 'centre'), "crop"}}
and `scenes/00000000.json` (clevr-dataset-gen schema + "jitter"; pixel_coords in the R x R image).

Image i is drawn from the seed sequence (seed, i), so the output does not depend on the number of
workers, and the zip bytes depend only on (preset, n, resolution, seed, framing): entries carry a fixed
timestamp. The zip is written to F + '.tmp' and renamed to F only once complete.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from ..errors import ProjcompError
from ..files import AtomicFile

from .render import render
from .scene import CLEVR_COLORS, sample_scene
from .world import FRAMINGS, framing_crop

VERSION = 1
_ZIP_DATE = (2025, 1, 1, 0, 0, 0)


class DatasetError(ProjcompError, ValueError):
    """Bad preset, bad dataset file or bad import directory (message names the culprit)."""


@dataclass(frozen=True)
class Preset:
    num_objects: object          # int or (min, max) inclusive
    label: str | None            # 'location' | 'color' | 'object' | None: what object 0 is labelled
                                 # with ('object': its (x, y) and its colour)
    description: str = ''
    empty_fraction: float = 0.0  # this share of images (drawn per index) are empty scenes labelled 'empty'


PRESETS = {
    'empty': Preset(0, None, 'background p_b: empty scenes (Fig 3A/B background; paper: 50 000)'),
    'location': Preset(1, 'location', 'one object, label = its (x, y) in [0,1] (Fig 2, Fig 3A/B)'),
    'clutter-location': Preset((1, 5), 'location',
                               'object 0 labelled with its (x, y) + 0-4 random others (Fig 3C)'),
    'clutter-background': Preset((1, 5), None, 'background for Fig 3C: 1-5 random objects'),
    'color': Preset(1, 'color', 'one object, label = its colour index in CLEVR_COLORS (Fig 5)'),
    'location-empty': Preset(1, 'location', 'one object labelled (x, y), or (25%) an empty scene labelled '
                             '"empty": one net gives p_i, p_b and, by its null label, p_u (Fig 3A/B)',
                             empty_fraction=0.25),
    'object-empty': Preset(1, 'object', 'one object labelled {"xy": (x, y), "color": c}, or (25%) an empty '
                           'scene labelled "empty": with part dropout one net gives p(object of colour c at '
                           'xy), p(any object at xy), p(object of colour c anywhere), p_b and p_u (Fig 3A/B, Fig 5)',
                           empty_fraction=0.25),
}


def condition_schema(label, empty=False):
    if label == 'object':
        return {'type': 'location', 'dim': 2, 'empty': bool(empty), 'colors': list(CLEVR_COLORS)}
    if label == 'location':
        return {'type': 'location', 'dim': 2, 'empty': True} if empty else {'type': 'location', 'dim': 2}
    if label == 'color':
        return {'type': 'color', 'classes': list(CLEVR_COLORS)}
    return None


def get_preset(name) -> Preset:
    if name not in PRESETS:
        raise DatasetError(f'unknown preset {name!r}; choose one of {", ".join(PRESETS)}')
    return PRESETS[name]


def image_name(i: int) -> str:
    return f'{i // 1000:05d}/img{i:08d}.png'


def label_of(scene, label, resolution):
    """The dataset label of a scene (object 0), with pixel_coords already in the R x R image."""
    if label is None:
        return None
    if not scene['objects'] and label in ('location', 'object'):
        return 'empty'  # presets '*-empty': the empty scene is a label of its own
    obj = scene['objects'][0]
    if label == 'object':
        u, v = obj['pixel_coords'][:2]
        return {'xy': [float(u) / resolution, float(v) / resolution], 'color': obj['color']}
    if label == 'location':
        u, v = obj['pixel_coords'][:2]
        return [float(u) / resolution, float(v) / resolution]
    if label == 'color':
        return CLEVR_COLORS.index(obj['color'])
    raise DatasetError(f'unknown label type {label!r}; expected location, color or none')


def make_scene(preset: str, index: int, seed: int, resolution: int, framing: str = 'centre'):
    p = get_preset(preset)
    num_objects = p.num_objects
    if p.empty_fraction > 0:
        # Decided per index by its own stream, so the choice is independent of workers and order.
        if np.random.default_rng([int(seed), int(index), 0xE]).random() < p.empty_fraction:
            num_objects = 0
    scene = sample_scene([int(seed), int(index)], num_objects, image_index=index,
                         split=preset, resolution=resolution, framing=framing)
    scene['image_filename'] = image_name(index)
    return scene


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='png', compress_level=6)
    return buf.getvalue()


def _work(args):
    preset, index, seed, resolution, framing = args
    scene = make_scene(preset, index, seed, resolution, framing)
    img = render(scene, resolution)
    return index, png_bytes(img), scene, label_of(scene, get_preset(preset).label, resolution)


def _zinfo(name):
    zi = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    zi.compress_type = zipfile.ZIP_STORED
    zi.external_attr = 0o644 << 16
    return zi


class ZipWriter:
    """Writes F + '.tmp', renames to F in `close()`; on error the .tmp is removed (projcomp.files)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.tmp = self.path + '.tmp'
        self.out = AtomicFile(self.path, tmp=self.tmp)
        self.zf = zipfile.ZipFile(self.out.file, 'w', zipfile.ZIP_STORED)

    def write(self, name, data: bytes):
        self.zf.writestr(_zinfo(name), data)

    def close(self):
        self.zf.close()
        self.out.commit()

    def abort(self):
        try:
            self.zf.close()
        finally:
            self.out.abort()


def _write_all(path, items, n, meta, progress=True, desc='render'):
    """items yields (index, png, scene, label) in index order."""
    from tqdm import tqdm
    w = ZipWriter(path)
    labels = []
    try:
        for index, png, scene, label in tqdm(items, total=n, disable=not progress, desc=desc,
                                             unit='img', smoothing=0.05):
            name = image_name(index)
            w.write(name, png)
            w.write(f'scenes/{index:08d}.json', json.dumps(scene, sort_keys=True).encode())
            labels.append([name, label])
        has_labels = meta['condition'] is not None
        doc = {'labels': labels if has_labels else None, 'projcomp': meta}
        w.write('dataset.json', json.dumps(doc, indent=1).encode())
        w.close()
    except BaseException:
        w.abort()
        raise


def make_dataset(preset, n, resolution, out, seed=0, workers=None, command=None, progress=True, framing='centre'):
    """Render `n` scenes of `preset` at R x R into the zip `out`; returns the metadata dict.

    framing: which square of CLEVR's 320x240 frame the images keep (world.FRAMINGS); 'floor'
    makes objects 1.5x larger at the same R. Recorded in the metadata, hence in every checkpoint
    trained on it, so that evaluation, the detector and the app render and read the same frame."""
    p = get_preset(preset)
    n, resolution = int(n), int(resolution)
    if n <= 0:
        raise DatasetError(f'--n must be positive, got {n}')
    if resolution < 8 or resolution > 512:
        raise DatasetError(f'--resolution must be in [8, 512], got {resolution}')
    if framing not in FRAMINGS:
        raise DatasetError(f'--framing must be one of {sorted(FRAMINGS)}, got {framing!r}')
    workers = workers or min(2, os.cpu_count() or 1)
    crop = list(framing_crop(framing))
    meta = {'preset': preset, 'resolution': resolution, 'num_images': n, 'seed': int(seed),
            'condition': condition_schema(p.label, empty=p.empty_fraction > 0), 'command': command or
            f'python -m projcomp.clevr make {preset} --n {n} --resolution {resolution} --out {out} --seed {seed}',
            'version': VERSION, 'description': p.description,
            'renderer': 'projcomp.clevr.render (numpy ray caster), 320x240 frame, centre 240x240 crop'}
    if framing != 'centre':     # 'centre' datasets keep their metadata (and bytes) of before framings
        meta.update(framing=framing, crop=crop, renderer='projcomp.clevr.render (numpy ray caster), 320x240 frame, '
                    f'{framing} framing: the {crop[2]:g}x{crop[2]:g} square at ({crop[0]:g}, {crop[1]:g})')
    jobs = ((preset, i, int(seed), resolution, framing) for i in range(n))
    if workers <= 1:
        _write_all(out, map(_work, jobs), n, meta, progress, preset)
    else:
        import multiprocessing as mp
        ctx = mp.get_context('fork') if hasattr(os, 'fork') else mp.get_context()
        with ctx.Pool(workers) as pool:
            _write_all(out, pool.imap(_work, jobs, chunksize=16), n, meta, progress, preset)
    return meta


# --- reading ----------------------------------------------------------------------------------

def _open_zip(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        if os.path.exists(path + '.tmp'):
            raise DatasetError(f'{path} is incomplete (only {path}.tmp exists: it is still being written or was interrupted)')
        raise DatasetError(f'dataset {path} does not exist')
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise DatasetError(f'{path} is not a zip file ({e})') from None
    return zf


def read_meta(zf, path='dataset'):
    try:
        doc = json.loads(zf.read('dataset.json'))
    except KeyError:
        raise DatasetError(f'{path} has no dataset.json') from None
    return doc


def load_dataset(path, lazy=False):
    """(images, labels, meta) of a dataset zip.

    images: uint8 [N,R,R,3] (or, with lazy=True, a `ClevrZipDataset` to index);
    labels: float32 [N,2] (location), int64 [N] (color) or None; meta: dataset.json["projcomp"].
    """
    ds = ClevrZipDataset(path)
    if lazy:
        return ds, ds.labels, ds.meta
    imgs = np.stack([ds.image(i) for i in range(len(ds))]) if len(ds) else np.zeros((0, 0, 0, 3), np.uint8)
    return imgs, ds.labels, ds.meta


def _torch_dataset_base():
    try:
        import torch.utils.data as tud
        return tud.Dataset
    except Exception:   # torch not installed: still usable as a plain sequence
        return object


class ClevrZipDataset(_torch_dataset_base()):
    """torch Dataset over a dataset zip: item i -> (uint8 CHW tensor, label tensor).

    Label tensor: float32 [2] (location, (x, y) in [0,1]), int64 scalar (colour index) or an
    empty float32 [0] tensor (no labels). `.meta` is dataset.json["projcomp"], `.condition` its
    schema, `.labels` the numpy label array (or None). The zip is (re)opened lazily per process,
    so the dataset is safe to use with DataLoader workers.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        with _open_zip(self.path) as zf:
            doc = read_meta(zf, self.path)
            names = set(zf.namelist())
        self.meta = doc.get('projcomp') or {}
        self.condition = self.meta.get('condition')
        raw = doc.get('labels')
        if raw is not None:
            self.names = [r[0] for r in raw]
            vals = [r[1] for r in raw]
            if self.condition and self.condition.get('type') == 'color':
                self.labels = np.asarray(vals, np.int64)
            elif self.condition and (self.condition.get('empty') or self.condition.get('colors')):
                # (x, y) / {"xy", "color"} labels mixed with the string 'empty': kept as a list of values.
                self.labels = list(vals)
            else:
                self.labels = np.asarray(vals, np.float32)
        else:
            self.names = sorted(n for n in names if n.endswith('.png') and not n.startswith('scenes/'))
            self.labels = None
        missing = [n for n in self.names[:1] + self.names[-1:] if n not in names]
        if missing:
            raise DatasetError(f'{self.path}: image {missing[0]} listed in dataset.json is missing')
        self._zf = None
        self._pid = None

    def __len__(self):
        return len(self.names)

    def _zip(self):
        if self._zf is None or self._pid != os.getpid():
            self._zf = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zf

    def image(self, i) -> np.ndarray:
        """uint8 HWC image i."""
        with self._zip().open(self.names[i]) as f:
            return np.asarray(Image.open(f).convert('RGB'))

    def scene(self, i):
        """The scene JSON of image i (None if the zip has none)."""
        try:
            return json.loads(self._zip().read(f'scenes/{i:08d}.json'))
        except KeyError:
            return None

    def __getitem__(self, i):
        import torch
        img = torch.from_numpy(self.image(i).transpose(2, 0, 1).copy())
        if self.labels is None:
            lab = torch.zeros(0, dtype=torch.float32)
        else:
            # 'empty' (preset location-empty) has no (x, y): it is returned as (nan, nan); an
            # {"xy", "color"} label as its (x, y) (the colour is in .labels and the scene JSON).
            val = self.labels[i]
            if isinstance(val, dict):
                val = val['xy']
            lab = torch.full((2,), float('nan')) if isinstance(val, str) else torch.as_tensor(val)
        return img, lab

    def __getstate__(self):
        s = dict(self.__dict__); s['_zf'] = None; s['_pid'] = None
        return s
