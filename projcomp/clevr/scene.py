"""CLEVR scene sampler (facebookresearch/clevr-dataset-gen `render_images.py`, without Blender).

A scene is a JSON-able dict in clevr-dataset-gen's schema (`objects[]` with shape, size, material,
3d_coords, rotation, pixel_coords, color; `directions`; `relationships`) plus:

- `"jitter"`: the camera and lamp offsets drawn for this scene. clevr-dataset-gen draws them too
  (camera +-0.5 per axis, each lamp +-1.0 per axis) but never saves them (its issue #1), so its
  scenes cannot be re-rendered; ours are saved, and `render(scene)` reproduces the image exactly.
- `"render"`: the image geometry the pixel coordinates refer to (see `Camera`).

Sampling follows `render_images.py`: shape/colour/material/size uniform, position uniform on
[-3, 3]^2, rotation uniform in [0, 360), an object is rejected when it is closer than `min_dist`
(0.25) to another or when its offset from another along the camera's left/right/front/behind
directions is in (0, `margin` = 0.4); after `max_retries` (50) rejections the whole scene is
re-drawn; finally every object must show at least `min_pixels` (200 at 320x240 scale) visible
pixels, else the scene is re-drawn. Two deliberate differences, both needed for square crops:
visibility is counted inside the square crop the datasets keep, and each object's projected
centre must itself be visible (not occluded, inside the crop), so `pixel_coords` always lies on
the object it names.

Everything is drawn from one `numpy.random.Generator` seeded by the scene seed, so an integer
seed always gives the same scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --- CLEVR properties (clevr-dataset-gen data/properties.json) ---------------------------------

CLEVR_COLORS = ['gray', 'red', 'blue', 'green', 'brown', 'purple', 'cyan', 'yellow']
CLEVR_RGB = {
    'gray': (87, 87, 87), 'red': (173, 35, 35), 'blue': (42, 75, 215), 'green': (29, 105, 20),
    'brown': (129, 74, 25), 'purple': (129, 38, 192), 'cyan': (41, 208, 208), 'yellow': (255, 238, 51),
}
SHAPES = ['cube', 'sphere', 'cylinder']
SIZES = {'large': 0.7, 'small': 0.35}
MATERIALS = ['rubber', 'metal']

# --- Camera and lamps of data/base_scene.blend (approximate values read from the .blend) ---------

CAMERA_LOCATION = (7.358891, -6.925791, 4.958309)   # Blender camera, 35 mm lens, 32 mm sensor width
CAMERA_LOOK_AT = (0.0, 0.0, 0.0)                     # its fixed rotation (63.6, 0, 46.7) deg looks at ~origin
FOCAL_MM, SENSOR_MM = 35.0, 32.0
KEY_LIGHT = (6.44671, -2.90517, 4.2584)
FILL_LIGHT = (-4.67112, -4.0136, 3.01122)
BACK_LIGHT = (-1.16852, 2.64605, 5.81506)
CAMERA_JITTER = 0.5                                  # render_images.py --camera_jitter
LIGHT_JITTER = 1.0                                   # --key/fill/back_light_jitter


class SceneError(ValueError):
    """A scene request that cannot be satisfied (bad property value, impossible placement)."""


@dataclass(frozen=True)
class Camera:
    """Pinhole camera of base_scene.blend at CLEVR's 320x240 render size.

    The orientation is fixed (as in Blender, jitter moves only the camera location). The datasets
    keep the centred 240x240 square, columns [40, 280) of the 320x240 frame, and resample it to
    R x R; `to_square` maps 320x240 pixel coordinates to that R x R image. Pixel coordinates are
    continuous: pixel (i, j) covers [i, i+1) x [j, j+1), so the pixel containing (u, v) is
    (floor(u), floor(v)) and the image centre is (R/2, R/2).
    """
    location: tuple = CAMERA_LOCATION
    width: int = 320
    height: int = 240

    @property
    def focal_px(self) -> float:
        return self.width * FOCAL_MM / SENSOR_MM

    @property
    def crop(self) -> tuple:
        """(x0, y0, side) of the centred square crop in 320x240 pixels."""
        side = min(self.width, self.height)
        return ((self.width - side) / 2, (self.height - side) / 2, side)

    def basis(self):
        """Forward, right, up unit vectors (world frame, z up); independent of the jitter."""
        f = np.subtract(CAMERA_LOOK_AT, CAMERA_LOCATION).astype(np.float64)
        f /= np.linalg.norm(f)
        r = np.cross(f, [0.0, 0.0, 1.0]); r /= np.linalg.norm(r)
        u = np.cross(r, f)
        return f, r, u

    def rays(self, px, py):
        """Unit ray directions through 320x240-frame points (px, py) (arrays), shape [..., 3]."""
        f, r, u = self.basis()
        fx = self.focal_px
        a = (np.asarray(px, np.float64) - self.width / 2) / fx
        b = (np.asarray(py, np.float64) - self.height / 2) / fx
        d = f + a[..., None] * r - b[..., None] * u
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def project(self, xyz):
        """World point -> (px, py, depth) in the 320x240 frame (depth along the view axis)."""
        f, r, u = self.basis()
        p = np.asarray(xyz, np.float64) - np.asarray(self.location, np.float64)
        z = p @ f
        fx = self.focal_px
        return (self.width / 2 + fx * (p @ r) / z, self.height / 2 - fx * (p @ u) / z, z)

    def to_square(self, px, py, resolution):
        x0, y0, side = self.crop
        s = resolution / side
        return (px - x0) * s, (py - y0) * s

    def from_square(self, u, v, resolution):
        x0, y0, side = self.crop
        s = side / resolution
        return u * s + x0, v * s + y0


def scene_camera(scene) -> Camera:
    r = scene.get('render', {})
    jit = scene.get('jitter', {}).get('camera', [0.0, 0.0, 0.0])
    loc = tuple(float(c + j) for c, j in zip(CAMERA_LOCATION, jit))
    return Camera(location=loc, width=int(r.get('width', 320)), height=int(r.get('height', 240)))


def object_radius(obj) -> float:
    """clevr-dataset-gen's placement radius r: SIZES value, divided by sqrt(2) for cubes."""
    r = SIZES[obj['size']]
    return r / math.sqrt(2) if obj['shape'] == 'cube' else r


def camera_directions():
    """clevr-dataset-gen `directions`: camera axes projected onto the ground plane."""
    f, r, _ = Camera().basis()
    behind = np.array([f[0], f[1], 0.0]); behind /= np.linalg.norm(behind)
    left = np.array([-r[0], -r[1], 0.0]); left /= np.linalg.norm(left)
    up = np.array([0.0, 0.0, 1.0])
    t = lambda v: [float(c) for c in v]  # noqa: E731
    return {'behind': t(behind), 'front': t(-behind), 'left': t(left), 'right': t(-left),
            'above': t(up), 'below': t(-up)}


def compute_relationships(scene, eps=0.2):
    """clevr-dataset-gen `compute_all_relationships` (eps 0.2)."""
    rel = {}
    for name, vec in scene['directions'].items():
        if name in ('above', 'below'):
            continue
        rel[name] = []
        for i, a in enumerate(scene['objects']):
            related = []
            for j, b in enumerate(scene['objects']):
                if i == j:
                    continue
                diff = np.subtract(b['3d_coords'], a['3d_coords'])
                if float(np.dot(diff, vec)) > eps:
                    related.append(j)
            rel[name].append(sorted(related))
    return rel


def _check_forced(forced):
    allowed = {'color': CLEVR_COLORS, 'shape': SHAPES, 'size': list(SIZES), 'material': MATERIALS}
    for key, value in forced.items():
        if key == '3d_coords' or key == 'xy':
            continue
        if key not in allowed:
            raise SceneError(f'unknown forced property {key!r}; expected one of {sorted(allowed)} or "xy"')
        if value not in allowed[key]:
            raise SceneError(f'forced {key}={value!r} is not a CLEVR {key}; expected one of {allowed[key]}')


def sample_scene(
    seed,                        # int (or sequence of ints) seeding one numpy Generator
    num_objects=(3, 10),         # int, or (min, max) inclusive like --min_objects/--max_objects
    forced=None,                 # dict of properties forced on object 0, e.g. {'color': 'red'}
    min_dist=0.25,               # --min_dist
    margin=0.4,                  # --margin
    min_pixels=200,              # --min_pixels_per_object, counted at 320x240 scale inside the crop
    max_retries=50,              # --max_retries
    jitter=True,                 # draw camera/lamp jitter like render_images.py
    image_index=0,               # written to the JSON like clevr-dataset-gen
    split='projcomp',            # written to the JSON
    resolution=None,             # R: pixel_coords in the final R x R image; None: the 320x240 frame
):
    """Draw one scene; the same arguments always return the same dict."""
    from .render import check_visibility  # local import: render depends on this module
    forced = dict(forced or {})
    _check_forced(forced)
    rng = np.random.default_rng(seed)
    if isinstance(num_objects, (tuple, list)):
        lo, hi = int(num_objects[0]), int(num_objects[1])
        if not 0 <= lo <= hi:
            raise SceneError(f'bad object count range {num_objects!r}')
        n = int(rng.integers(lo, hi + 1))
    else:
        n = int(num_objects)
        if n < 0:
            raise SceneError(f'bad object count {num_objects!r}')
    if forced and n == 0:
        raise SceneError('forced properties need at least one object')

    jit = {'camera': [0.0] * 3, 'key_light': [0.0] * 3, 'fill_light': [0.0] * 3, 'back_light': [0.0] * 3}
    if jitter:
        jit['camera'] = [float(v) for v in rng.uniform(-CAMERA_JITTER, CAMERA_JITTER, 3)]
        for k in ('key_light', 'fill_light', 'back_light'):
            jit[k] = [float(v) for v in rng.uniform(-LIGHT_JITTER, LIGHT_JITTER, 3)]
    directions = camera_directions()
    scene = {'split': split, 'image_index': int(image_index),
             'image_filename': f'CLEVR_{split}_{int(image_index):06d}.png',
             'objects': [], 'directions': directions, 'jitter': jit,
             'render': {'width': 320, 'height': 240, 'crop': list(Camera().crop)}}
    if n == 0:
        scene['relationships'] = compute_relationships(scene)
        return set_resolution(scene, resolution)

    for _attempt in range(10000):
        objects = _place_objects(rng, n, forced, directions, min_dist, margin, max_retries)
        if objects is None:
            continue
        scene['objects'] = objects
        if check_visibility(scene, min_pixels):
            break
    else:
        raise SceneError(f'could not place {n} visible objects (forced={forced})')
    scene['relationships'] = compute_relationships(scene)
    return set_resolution(scene, resolution)


def _place_objects(rng, n, forced, directions, min_dist, margin, max_retries):
    objects, positions = [], []
    for i in range(n):
        num_tries = 0
        while True:
            num_tries += 1
            if num_tries > max_retries:
                return None
            if i == 0 and 'xy' in forced:
                x, y = (float(c) for c in forced['xy'])
            else:
                x, y = (float(c) for c in rng.uniform(-3, 3, 2))
            # Draw all properties every try so the stream does not depend on branch outcomes.
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = CLEVR_COLORS[int(rng.integers(len(CLEVR_COLORS)))]
            material = MATERIALS[int(rng.integers(len(MATERIALS)))]
            size = list(SIZES)[int(rng.integers(len(SIZES)))]
            theta = float(rng.uniform(0, 360))
            if i == 0:
                shape = forced.get('shape', shape); color = forced.get('color', color)
                material = forced.get('material', material); size = forced.get('size', size)
            obj = {'shape': shape, 'size': size, 'material': material, 'color': color}
            r = object_radius(obj)
            good = True
            for (xx, yy, rr) in positions:
                dx, dy = x - xx, y - yy
                if math.hypot(dx, dy) - r - rr < min_dist:
                    good = False; break
                for name in ('left', 'right', 'front', 'behind'):
                    vec = directions[name]
                    m = dx * vec[0] + dy * vec[1]
                    if 0 < m < margin:
                        good = False; break
                if not good:
                    break
            if good:
                break
        obj['3d_coords'] = [x, y, float(r)]
        obj['rotation'] = theta
        obj['pixel_coords'] = [0.0, 0.0, 0.0]
        objects.append(obj)
        positions.append((x, y, r))
    return objects


def set_resolution(scene, resolution):
    """Set every object's `pixel_coords` = (u, v, depth) for the final R x R image (in place).

    resolution=None keeps the 320x240 frame (clevr-dataset-gen's convention). The choice is
    recorded in scene['render']['resolution'] so readers know which frame the numbers refer to.
    """
    cam = scene_camera(scene)
    scene['render']['resolution'] = None if resolution is None else int(resolution)
    for obj in scene['objects']:
        px, py, depth = cam.project(obj['3d_coords'])
        if resolution is not None:
            px, py = cam.to_square(px, py, resolution)
        obj['pixel_coords'] = [float(px), float(py), float(depth)]
    return scene
