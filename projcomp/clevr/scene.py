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

import numpy as np

from ..errors import ProjcompError
from .render import check_visibility
# The world (properties, camera, geometry) lives in world.py; re-exported for `from .scene import ...`.
from .world import (BACK_LIGHT, CAMERA_JITTER, CAMERA_LOCATION, CAMERA_LOOK_AT, CLEVR_COLORS, CLEVR_RGB,  # noqa: F401
                    FILL_LIGHT, FOCAL_MM, KEY_LIGHT, LIGHT_JITTER, MATERIALS, SENSOR_MM, SHAPES, SIZES, Camera,
                    camera_directions, compute_relationships, framing_crop, object_radius, scene_camera,
                    set_resolution)


class SceneError(ProjcompError, ValueError):
    """A scene request that cannot be satisfied (bad property value, impossible placement)."""


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
    framing='centre',            # the square of the frame the image keeps (world.FRAMINGS)
):
    """Draw one scene; the same arguments always return the same dict."""
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
             'render': {'width': 320, 'height': 240, 'crop': list(framing_crop(framing))}}
    if framing != 'centre':     # older scenes (and 'centre' ones) carry no name: their crop says it
        scene['render']['framing'] = framing
    if n == 0:
        scene['relationships'] = compute_relationships(scene)
        return set_resolution(scene, resolution)

    # A framing narrower than the frame ('floor') re-draws each object whose centre would fall
    # outside it (as clevr-dataset-gen re-draws objects placed too close), instead of re-drawing
    # the whole scene: only 0.83^9 of 9-object scenes would fit. 'centre' keeps re-drawing whole
    # scenes, which there is rare, so that its datasets stay byte-identical to before framings.
    cam = scene_camera(scene) if framing != 'centre' else None
    for _attempt in range(10000):
        objects = _place_objects(rng, n, forced, directions, min_dist, margin, max_retries, cam)
        if objects is None:
            continue
        scene['objects'] = objects
        if check_visibility(scene, min_pixels):
            break
    else:
        raise SceneError(f'could not place {n} visible objects (forced={forced})')
    scene['relationships'] = compute_relationships(scene)
    return set_resolution(scene, resolution)


def _place_objects(rng, n, forced, directions, min_dist, margin, max_retries, cam=None, probe=5.5):
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
            if cam is not None:     # the centre and check_visibility's probe ring inside the crop
                u, v, _ = cam.project([x, y, r])
                x0, y0, side = cam.crop
                good = x0 + probe <= u < x0 + side - probe and y0 + probe <= v < y0 + side - probe
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
