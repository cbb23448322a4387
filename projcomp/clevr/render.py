"""Blender-free CLEVR renderer: vectorised numpy ray casting of spheres, rotated cubes and cylinders
on a grey ground plane, lit by CLEVR's key/fill/back lamps.

Shading model (linear RGB, then the sRGB transfer curve like Blender's default view):
- colours are clevr-dataset-gen's RGB / 255 used as linear albedo, as Blender does with node colours;
- Lambert diffuse from the three lamps with a soft distance falloff plus a sky/ambient term;
- soft shadows from the key lamp (an area light): every supersample casts its shadow ray to its
  own point of the lamp, so the box-filtered pixel integrates the penumbra;
- contact darkening (ambient occlusion) of the ground around each object;
- rubber: matte with a faint broad highlight; metal: dark diffuse, tinted mirror reflection of the
  ground/sky environment and a sharp tinted highlight of the key lamp.

Geometry and crop. The camera is CLEVR's 320x240 frame (`world.Camera`). The datasets keep the
centred 240x240 square (columns 40..280) and resample it to R x R. Instead of rendering 320x240
and downsampling, `render(scene, R)` casts rays directly through an (R*ss) x (R*ss) grid of
sub-pixel centres covering exactly that square and box-filters each ss x ss block: the result
equals the 320x240 render's crop, area-resampled to R x R, up to the antialiasing filter (box
over ss x ss samples instead of a resampling of an already-sampled image). `render_frame` renders
the full 320x240 frame for display and for the importer tests.
"""

from __future__ import annotations

import numpy as np

from .world import (BACK_LIGHT, CLEVR_RGB, FILL_LIGHT, KEY_LIGHT, SIZES, object_radius,
                    scene_camera)

GROUND_ALBEDO = 0.80          # linear grey of the floor (lighter than CLEVR's gray objects, 0.34)
SKY_COLOR = 0.16              # dim environment above the horizon (seen in metal reflections)
KEY_POWER, FILL_POWER, BACK_POWER = 0.62, 0.30, 0.22
AMBIENT = 0.32                # hemispherical sky light
KEY_LAMP_SIZE = 1.4           # side of the key lamp's square area (world units) -> soft shadows
EXPOSURE = 0.75
EPS = 1e-3

_SHAPE_CODE = {'sphere': 0, 'cube': 1, 'cylinder': 2}


def _srgb_encode(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_to_linear(x):
    x = np.asarray(x, np.float32)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


def default_supersample(resolution: int) -> int:
    """ss so that at least 128 x 128 rays are cast (4 at 32 px, 2 at 64 px and up)."""
    return max(2, -(-128 // int(resolution)))


# --- geometry ---------------------------------------------------------------------------------

class _Obj:
    __slots__ = ('code', 'c', 'r', 'h', 'cos', 'sin', 'albedo', 'metal')

    def __init__(self, o):
        self.code = _SHAPE_CODE[o['shape']]
        self.r = float(object_radius(o))
        x, y = o['3d_coords'][:2]
        self.c = np.array([x, y, self.r], np.float32)     # objects rest on the ground (z = r)
        self.h = self.r                                    # cube half side / cylinder half height
        th = np.deg2rad(float(o.get('rotation', 0.0)))
        self.cos, self.sin = np.float32(np.cos(th)), np.float32(np.sin(th))
        self.albedo = np.array(CLEVR_RGB[o['color']], np.float32) / 255.0
        self.metal = o['material'] == 'metal'

    def to_local(self, v):    # rotate world vectors [...,3] by -theta about z
        x, y = v[..., 0], v[..., 1]
        return np.stack([self.cos * x + self.sin * y, -self.sin * x + self.cos * y, v[..., 2]], -1)

    def to_world(self, v):
        x, y = v[..., 0], v[..., 1]
        return np.stack([self.cos * x - self.sin * y, self.sin * x + self.cos * y, v[..., 2]], -1)


def _hit(ob: _Obj, o, d):
    """Ray parameter t of the first hit (inf on a miss); o: [3] or [M,3], d: [M,3] unit."""
    oc = o - ob.c
    if ob.code == 0:                                                    # sphere
        b = (oc * d).sum(-1) if oc.ndim == 2 else d @ oc
        cc = (oc * oc).sum(-1) - ob.r * ob.r
        disc = b * b - cc
        t = -b - np.sqrt(np.maximum(disc, 0))
        return np.where((disc > 0) & (t > EPS), t, np.inf)
    lo, ld = ob.to_local(oc), ob.to_local(d)
    with np.errstate(divide='ignore', invalid='ignore'):
        if ob.code == 1:                                                # cube: slab test
            inv = 1.0 / ld
            t1, t2 = (-ob.h - lo) * inv, (ob.h - lo) * inv
            tmin = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf).max(-1)
            tmax = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(-1)
            return np.where((tmax >= tmin) & (tmin > EPS), tmin, np.inf)
        # cylinder: side + both caps
        ox, oy, oz = lo[..., 0], lo[..., 1], lo[..., 2]
        dx, dy, dz = ld[..., 0], ld[..., 1], ld[..., 2]
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - ob.r * ob.r
        disc = b * b - a * c
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
        zs = oz + ts * dz
        ts = np.where((disc > 0) & (ts > EPS) & (np.abs(zs) <= ob.h), ts, np.inf)
        best = ts
        for zc in (ob.h, -ob.h):
            tc = (zc - oz) / dz
            xc, yc = ox + tc * dx, oy + tc * dy
            tc = np.where((tc > EPS) & (xc * xc + yc * yc <= ob.r * ob.r), tc, np.inf)
            best = np.minimum(best, tc)
        return np.nan_to_num(best, nan=np.inf)


def _normal(ob: _Obj, p):
    """Outward unit normals at surface points p [M,3]."""
    q = p - ob.c
    if ob.code == 0:
        return q / ob.r
    lq = ob.to_local(q)
    if ob.code == 1:
        ax = np.abs(lq).argmax(-1)
        n = np.zeros_like(lq)
        n[np.arange(len(lq)), ax] = np.sign(lq[np.arange(len(lq)), ax])
    else:
        side = np.abs(lq[:, 2]) < ob.h - 1e-3 * ob.h
        rad = np.sqrt(lq[:, 0] ** 2 + lq[:, 1] ** 2)
        side |= rad > ob.r * (1 - 1e-3)
        side &= ~(np.abs(lq[:, 2]) >= ob.h * (1 - 1e-4)) | (rad >= ob.r * (1 - 1e-4))
        n = np.zeros_like(lq)
        n[:, 0] = np.where(side, lq[:, 0] / np.maximum(rad, 1e-6), 0)
        n[:, 1] = np.where(side, lq[:, 1] / np.maximum(rad, 1e-6), 0)
        n[:, 2] = np.where(side, 0, np.sign(lq[:, 2]))
    return ob.to_world(n)


def _first_hit(objs, o, d):
    t_best = np.full(d.shape[0], np.inf, np.float32)
    idx = np.full(d.shape[0], -1, np.int16)
    for k, ob in enumerate(objs):
        t = _hit(ob, o, d)
        better = t < t_best
        t_best = np.where(better, t, t_best)
        idx[better] = k
    return t_best, idx


def _occluded(objs, o, d):
    occ = np.zeros(d.shape[0], bool)
    for ob in objs:
        occ |= np.isfinite(_hit(ob, o, d))
    return occ


def _primary(scene, px, py):
    """Camera rays through 320x240-frame points: (origin, dirs [M,3], t, object index / -1 ground)."""
    cam = scene_camera(scene)
    d = cam.rays(px.ravel(), py.ravel()).astype(np.float32)
    o = np.asarray(cam.location, np.float32)
    objs = [_Obj(x) for x in scene['objects']]
    t, idx = _first_hit(objs, o, d)
    with np.errstate(divide='ignore'):
        tg = np.where(d[:, 2] < 0, -o[2] / d[:, 2], np.inf).astype(np.float32)
    ground = tg < t
    idx[ground | ~np.isfinite(t)] = -1
    t = np.where(idx >= 0, t, tg)
    return o, d, t, idx, objs


# --- shading ----------------------------------------------------------------------------------

def _lights(scene):
    j = scene.get('jitter', {})
    add = lambda p, k: np.asarray(p, np.float32) + np.asarray(j.get(k, [0, 0, 0]), np.float32)  # noqa: E731
    return add(KEY_LIGHT, 'key_light'), add(FILL_LIGHT, 'fill_light'), add(BACK_LIGHT, 'back_light')


def _falloff(lp, p):
    """Soft distance falloff: 1 at the scene centre, ~1/d far away."""
    d0 = float(np.linalg.norm(lp))
    d = np.linalg.norm(p - lp, axis=-1)
    return (d0 + 6.0) / (d + 6.0)


def _lambert(lp, p, n, power):
    l = lp - p
    l /= np.linalg.norm(l, axis=-1, keepdims=True)
    return power * np.maximum((n * l).sum(-1), 0) * _falloff(lp, p), l


def _ground_ao(objs, p):
    ao = np.ones(p.shape[0], np.float32)
    for ob in objs:
        dist = np.hypot(p[:, 0] - ob.c[0], p[:, 1] - ob.c[1])
        foot = ob.r * (0.35 if ob.code == 0 else 1.0)
        ao *= 1.0 - 0.22 * np.exp(-np.maximum(dist - foot, 0) / (0.35 * ob.r))
    return ao


def _ground_color(p, lights):
    key, fill, back = lights
    n = np.zeros_like(p); n[:, 2] = 1
    e = AMBIENT + _lambert(key, p, n, KEY_POWER)[0] + _lambert(fill, p, n, FILL_POWER)[0] \
        + _lambert(back, p, n, BACK_POWER)[0]
    return GROUND_ALBEDO * e


def _shade(scene, o, d, t, idx, objs, sub, n_sub):
    """Linear RGB [M,3] for primary hits; `sub` in [0, n_sub^2) picks the key-lamp sample."""
    M = d.shape[0]
    p = o + d * t[:, None]
    lights = _lights(scene)
    key, fill, back = lights
    # Key lamp sample per supersample (stratified over the lamp's square, facing the origin).
    a = ((sub % n_sub) + 0.5) / n_sub - 0.5
    b = ((sub // n_sub) + 0.5) / n_sub - 0.5
    kd = key / np.linalg.norm(key)
    e1 = np.cross(kd, [0, 0, 1]); e1 /= np.linalg.norm(e1)
    e2 = np.cross(kd, e1)
    key_s = key[None] + KEY_LAMP_SIZE * (a[:, None] * e1[None] + b[:, None] * e2[None])
    key_s = key_s.astype(np.float32)

    rgb = np.zeros((M, 3), np.float32)
    n = np.zeros((M, 3), np.float32)
    ground = idx < 0
    n[ground, 2] = 1
    for k, ob in enumerate(objs):
        m = idx == k
        if m.any():
            n[m] = _normal(ob, p[m])
    # shadow rays toward the key lamp sample
    ld = key_s - p
    ld /= np.linalg.norm(ld, axis=-1, keepdims=True)
    lit = np.ones(M, np.float32)
    facing = (n * ld).sum(-1) > 0
    if objs and facing.any():
        lit[facing] = ~_occluded(objs, p[facing] + n[facing] * 2e-3, ld[facing])
    kdiff = KEY_POWER * np.maximum((n * ld).sum(-1), 0) * _falloff(key, p) * lit
    fdiff, _ = _lambert(fill, p, n, FILL_POWER)
    bdiff, _ = _lambert(back, p, n, BACK_POWER)
    amb = AMBIENT * (0.55 + 0.45 * n[:, 2])
    irr = amb + kdiff + fdiff + bdiff

    # ground
    if ground.any():
        g = GROUND_ALBEDO * irr[ground]
        if objs:
            g = g * _ground_ao(objs, p[ground])
        rgb[ground] = g[:, None]
    # objects
    view = -d
    h = ld + view
    h /= np.linalg.norm(h, axis=-1, keepdims=True)
    ndh = np.maximum((n * h).sum(-1), 0)
    for k, ob in enumerate(objs):
        m = idx == k
        if not m.any():
            continue
        nk, pk = n[m], p[m]
        occl = 1.0 - 0.25 * np.exp(-np.maximum(pk[:, 2], 0) / (0.25 * ob.r))   # contact darkening
        if not ob.metal:
            col = ob.albedo[None] * (irr[m] * occl)[:, None]
            col += (0.06 * kdiff[m] * ndh[m] ** 12)[:, None]
        else:
            dk = d[m]
            r = dk - 2 * (dk * nk).sum(-1, keepdims=True) * nk
            env = np.full(len(r), SKY_COLOR, np.float32) + 0.05 * np.clip(r[:, 2], 0, 1)
            down = r[:, 2] < -1e-3
            if down.any():
                tg = -pk[down, 2] / r[down, 2]
                gp = pk[down] + r[down] * tg[:, None]
                env_g = _ground_color(gp, lights)
                # fade the reflected floor into the dark sky towards the horizon
                fade = np.clip(-r[down, 2] * 4.0, 0, 1)
                env[down] = env_g * fade + env[down] * (1 - fade)
            fres = 0.6
            col = ob.albedo[None] * (0.08 * irr[m] * occl + fres * env * occl)[:, None]
            spec = kdiff[m] * ndh[m] ** 90 * 3.0
            col += spec[:, None] * (0.6 * ob.albedo[None] + 0.4)
        rgb[m] = col
    return rgb * EXPOSURE


def _grid(cam, resolution, ss):
    """Sub-pixel sample positions (320x240 frame) covering the square crop, and sub indices."""
    x0, y0, side = cam.crop
    S = resolution * ss
    c = (np.arange(S, dtype=np.float64) + 0.5) * side / S
    px, py = np.meshgrid(x0 + c, y0 + c)
    i = np.arange(S) % ss
    sub = (i[None, :] + ss * i[:, None]).astype(np.int32)
    return px, py, sub


def _box(x, ss):
    S = x.shape[0]
    R = S // ss
    return x.reshape(R, ss, R, ss, -1).mean((1, 3))


def render_linear(scene, resolution=64, supersample=None):
    """Linear-RGB float image [R,R,3] of the square crop (before the sRGB curve).

    An empty scene is a smooth field (floor shading only, no edges or shadows), so it is sampled
    once per pixel by default; supersampling it changes no pixel by more than 1/255.
    """
    if supersample is None:
        supersample = default_supersample(resolution) if scene['objects'] else 1
    ss = supersample
    cam = scene_camera(scene)
    px, py, sub = _grid(cam, resolution, ss)
    o, d, t, idx, objs = _primary(scene, px, py)
    rgb = _shade(scene, o, d, t, idx, objs, sub.ravel(), ss)
    return _box(rgb.reshape(px.shape + (3,)), ss)


def to_uint8(linear):
    return np.round(_srgb_encode(linear) * 255.0).astype(np.uint8)


def render(scene, resolution=64, supersample=None):
    """uint8 RGB image [R,R,3]: the scene's centred 240x240 crop, antialiased to R x R."""
    # Box-filter in linear light, then encode (as a camera/renderer would).
    return to_uint8(render_linear(scene, resolution, supersample))


def render_frame(scene, supersample=2):
    """The full 320x240 CLEVR frame, uint8 [240,320,3]."""
    cam = scene_camera(scene)
    ss = supersample
    xs = (np.arange(cam.width * ss) + 0.5) / ss
    ys = (np.arange(cam.height * ss) + 0.5) / ss
    px, py = np.meshgrid(xs, ys)
    sub = ((np.arange(cam.width * ss) % ss)[None, :] + ss * (np.arange(cam.height * ss) % ss)[:, None])
    o, d, t, idx, objs = _primary(scene, px, py)
    rgb = _shade(scene, o, d, t, idx, objs, sub.ravel(), ss).reshape(px.shape + (3,))
    rgb = rgb.reshape(cam.height, ss, cam.width, ss, 3).mean((1, 3))
    return to_uint8(rgb)


def render_ids(scene, resolution=64):
    """Object-id buffer [R,R] (int16, -1 = ground) sampled at the final pixels' centres."""
    cam = scene_camera(scene)
    px, py, _ = _grid(cam, resolution, 1)
    _, _, _, idx, _ = _primary(scene, px, py)
    return idx.reshape(px.shape)


def check_visibility(scene, min_pixels=200, probe=5.5):
    """clevr-dataset-gen's check_visibility, in the square crop (see scene.py).

    Every object must cover >= min_pixels pixels at 320x240 scale (counted on a third-resolution
    id buffer of the 240x240 crop), and the ray through its projected centre and 8 rays `probe`
    pixels around it must hit that object (so pixel_coords lands on it at any output size >= 32).
    """
    objs = scene['objects']
    if not objs:
        return True
    cam = scene_camera(scene)
    third = int(cam.crop[2]) // 3
    ids = render_ids(scene, third)
    counts = np.bincount(ids[ids >= 0].ravel().astype(np.int64), minlength=len(objs))
    if (counts * 9 < min_pixels).any():
        return False
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]
    offs = np.concatenate([[[0.0, 0.0]], probe * np.stack([np.cos(ang), np.sin(ang)], -1)])
    px, py, want = [], [], []
    x0, y0, side = cam.crop
    for k, ob in enumerate(objs):
        u, v, _ = cam.project(ob['3d_coords'])
        px.append(u + offs[:, 0]); py.append(v + offs[:, 1]); want.append(np.full(len(offs), k))
    px, py, want = np.concatenate(px), np.concatenate(py), np.concatenate(want)
    if ((px < x0) | (px >= x0 + side) | (py < y0) | (py >= y0 + side)).any():
        return False
    _, _, _, idx, _ = _primary(scene, px, py)
    return bool((idx == want).all())
