"""The CLEVR world of facebookresearch/clevr-dataset-gen: object properties, the camera and lamps
of its base_scene.blend, and the scene geometry shared by the sampler (scene.py), the renderer
(render.py) and the detector: projection to pixels, placement radii, directions, relationships.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ['CLEVR_COLORS', 'CLEVR_RGB', 'SHAPES', 'SIZES', 'MATERIALS', 'CAMERA_LOCATION', 'CAMERA_LOOK_AT',
           'FOCAL_MM', 'SENSOR_MM', 'KEY_LIGHT', 'FILL_LIGHT', 'BACK_LIGHT', 'CAMERA_JITTER', 'LIGHT_JITTER',
           'FRAMINGS', 'Camera', 'framing_crop', 'framing_camera', 'scene_camera', 'object_radius',
           'camera_directions', 'compute_relationships', 'set_resolution']

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
# The square crops of the 320x240 frame that a dataset can keep, (x0, y0, side) in frame pixels.
# 'centre' (None: the centred square, 240x240 at 320x240) is every dataset made before framings;
# 'floor' is fitted to where object centres project (u in [29, 294], v in [66, 188] for positions
# uniform on [-3, 3]^2): objects are 1.5x larger at the same resolution, and the 17 % of ground
# positions whose centre falls outside it are re-drawn by the scene sampler.
FRAMINGS = {
    'centre': None,
    'floor': (80.0, 40.0, 160.0),
}
CAMERA_JITTER = 0.5                                  # render_images.py --camera_jitter
LIGHT_JITTER = 1.0                                   # --key/fill/back_light_jitter


@dataclass(frozen=True)
class Camera:
    """Pinhole camera of base_scene.blend at CLEVR's 320x240 render size.

    The orientation is fixed (as in Blender, jitter moves only the camera location). The datasets
    keep a square of it, `square` = (x0, y0, side) (default: the centred 240x240 square, columns
    [40, 280); see FRAMINGS), and resample it to R x R; `to_square` maps 320x240 pixel coordinates
    to that R x R image. Pixel coordinates are
    continuous: pixel (i, j) covers [i, i+1) x [j, j+1), so the pixel containing (u, v) is
    (floor(u), floor(v)) and the image centre is (R/2, R/2).
    """
    location: tuple = CAMERA_LOCATION
    width: int = 320
    height: int = 240
    square: tuple | None = None         # (x0, y0, side) kept of the frame; None: its centred square

    @property
    def focal_px(self) -> float:
        return self.width * FOCAL_MM / SENSOR_MM

    @property
    def crop(self) -> tuple:
        """(x0, y0, side) of the square crop in 320x240 pixels."""
        if self.square is not None:
            return tuple(float(c) for c in self.square)
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


def framing_camera(framing='centre') -> Camera:
    """The un-jittered camera of a framing name (FRAMINGS)."""
    if framing not in FRAMINGS:
        raise ValueError(f'unknown framing {framing!r}; expected one of {sorted(FRAMINGS)}')
    return Camera(square=FRAMINGS[framing])


def framing_crop(framing='centre') -> tuple:
    """(x0, y0, side) in 320x240 pixels of a framing name (FRAMINGS)."""
    return framing_camera(framing).crop


def scene_camera(scene) -> Camera:
    r = scene.get('render', {})
    jit = scene.get('jitter', {}).get('camera', [0.0, 0.0, 0.0])
    loc = tuple(float(c + j) for c, j in zip(CAMERA_LOCATION, jit))
    crop = r.get('crop')
    return Camera(location=loc, width=int(r.get('width', 320)), height=int(r.get('height', 240)),
                  square=None if crop is None else tuple(float(c) for c in crop))


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
