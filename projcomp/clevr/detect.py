"""CLEVR object detector: how evaluation, tests and the app judge compositions.

The paper counted objects by hand (Table 1); this replaces that with a judge that needs no
download (its one learned part, a 340 kB centre net, ships in the package). Pipeline (works on
renders and on blurrier generated samples):

1. Floor model. The floor is a smooth grey field, so log-luminance is fitted by a cubic surface in
   image coordinates with iterative outlier rejection (objects, shadows and highlights drop out).
2. Foreground = chroma (sRGB max-min) above `chroma_thr`, OR luminance below `dark_ratio` x floor
   (grey objects: darker than any key-lamp shadow, whose ratio stays above it), OR above
   `bright_ratio` x floor (highlights). Shadows are grey and only mildly darker, so they are not
   foreground; highlights are absorbed into the object they sit on.
3. Colour labels per pixel from the direction of the linear-RGB chromaticity offset from grey
   (shading scales linear RGB, tinting keeps the direction, blending with the floor shortens it),
   nearest of the 7 CLEVR hues by cosine; low-chroma dark pixels are 'gray'; uncertain pixels
   (edges, highlights) take the label of the nearest labelled pixel in their blob.
4. Connected components per label.
5. Objects = peaks of a tiny centre-heatmap CNN (`centernet.py`, ~85 k parameters shipped in
   projcomp/clevr/weights/centernet, trained on our own renders with blur/noise/colour
   augmentation): each peak is attached to the component under it; a component holding several
   peaks (touching objects of one colour, even when their union is convex) is split among them
   by a marker watershed, and each part's colour is read from the disc at its own centre (a pale
   object half hidden behind a coloured one took that one's label); a component holding none
   joins a touching component that holds one (a second hue of a generated object, a dark cube
   face, a metal reflection: `_join_fragments`), and is an object of its own only when it
   touches none and is object-sized. `centers='classical'` keeps the model-free path instead:
   same-colour blobs are split where they are clearly non-convex.
6. Centre = the net's sub-pixel peak (the projected 3D centre, also for occluded objects; the
   classical path uses the centroid), size = area against the area a large/small object would
   have at that image position under the CLEVR camera, colour = majority label (the mean
   chromaticity offset near the centre when the labels are fragmentary, as in noisy samples).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from .render import srgb_to_linear
from .world import CLEVR_COLORS, CLEVR_RGB, Camera, framing_camera, framing_crop

_HUES = [c for c in CLEVR_COLORS if c != 'gray']


def _palette_dirs():
    v = []
    for c in _HUES:
        lin = np.array(CLEVR_RGB[c], np.float64) / 255.0
        ch = lin / lin.sum() - 1 / 3
        v.append(ch / np.linalg.norm(ch))
    return np.array(v, np.float32)


_DIRS = _palette_dirs()


def to_srgb_hwc(image) -> np.ndarray:
    """uint8 HWC, float HWC in [0,1], or float CHW in [-1,1] (numpy or torch) -> float32 HWC [0,1]."""
    if hasattr(image, 'detach'):
        image = image.detach().cpu().float().numpy() if image.dtype.is_floating_point else image.detach().cpu().numpy()
    x = np.asarray(image)
    if x.ndim != 3:
        raise ValueError(f'detect expects one image (HWC uint8 or CHW float), got shape {x.shape}')
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.shape[0] == 3 and x.shape[-1] != 3:       # CHW in [-1, 1]
        return np.clip((x.transpose(1, 2, 0) + 1) / 2, 0, 1)
    return np.clip(x, 0, 1)


def floor_model(logy, usable, iters=4, tol=0.12):
    """Cubic-surface fit of the floor's log-luminance; returns (fit [H,W], inlier mask)."""
    H, W = logy.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    x = (xx + 0.5) / W * 2 - 1
    y = (yy + 0.5) / H * 2 - 1
    A = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y, x ** 3, x * x * y, x * y * y, y ** 3], -1).reshape(-1, 10)
    b = logy.reshape(-1)
    m = usable.reshape(-1).copy()
    fit = np.full(H * W, np.median(b[m]) if m.any() else np.median(b))
    for it in range(iters):
        if m.sum() < 20:
            break
        Am = A[m].astype(np.float64)        # normal equations: a 10x10 solve (lstsq is slow here)
        coef = np.linalg.solve(Am.T @ Am + 1e-6 * np.eye(10), Am.T @ b[m])
        fit = A @ coef
        res = b - fit
        t = tol if it else 2.5 * tol
        m = usable.reshape(-1) & (np.abs(res) < t)
    return fit.reshape(H, W), m.reshape(H, W)


def _expected_areas(cam: Camera, u, v, R):
    """Areas (px^2 at R) of a large and a small object whose centre projects to (u, v)."""
    px, py = cam.from_square(u, v, R)
    d = cam.rays(np.array([px]), np.array([py]))[0]
    o = np.asarray(cam.location)
    fR = cam.focal_px * R / cam.crop[2]
    out = []
    for r in (0.7, 0.35):
        t = (r - o[2]) / d[2]
        dist = np.linalg.norm(d * t)
        out.append(np.pi * (fR * r / dist) ** 2 * 0.9)
    return out


def detect(image, chroma_thr=0.09, dark_ratio=0.55, bright_ratio=1.3, min_area=None,
           return_labels=False, centers='net', framing='centre'):
    """Objects in one CLEVR-like image.

    Returns a list of dicts {center: (x, y) pixels (continuous coords, pixel (i,j) spans
    [i,i+1) x [j,j+1)), color: CLEVR colour name, size: 'large'|'small', area: pixels}; with
    return_labels=True also the [H,W] int label image (0 = floor, k = detection k-1).
    centers: 'net' (objects = the centre net's peaks, step 5) or 'classical' (no network).
    framing: the square of CLEVR's frame the image shows (world.FRAMINGS), for the size priors.
    """
    srgb = to_srgb_hwc(image)
    if framing != 'centre':
        return _detect_reframed(srgb, framing, dict(chroma_thr=chroma_thr, dark_ratio=dark_ratio,
                                bright_ratio=bright_ratio, min_area=min_area, return_labels=return_labels,
                                centers=centers))
    H, W, _ = srgb.shape
    R = W
    lin = srgb_to_linear(srgb)
    Y = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32) + 1e-4
    chroma = srgb.max(-1) - srgb.min(-1)
    logy = np.log(Y)
    fit, inl = floor_model(logy, chroma < chroma_thr * 0.7)
    ratio = np.exp(logy - fit)
    fg = (chroma > chroma_thr) | (ratio < dark_ratio) | (ratio > bright_ratio)
    fg = ndi.binary_fill_holes(fg)       # mirror-reflections / highlights inside metal objects
    if min_area is None:
        min_area = max(2, int(round(0.0016 * H * W)))

    # per-pixel colour labels: 1..7 hues, 8 gray, 0 unknown
    s = lin.sum(-1, keepdims=True) + 1e-6
    off = lin / s - 1 / 3
    mag = np.linalg.norm(off, axis=-1)
    cos = (off / (mag[..., None] + 1e-9)) @ _DIRS.T
    hue = cos.argmax(-1) + 1
    lab = np.zeros((H, W), np.int32)
    colourful = fg & (mag > 0.07) & (chroma > chroma_thr * 0.8)
    lab[colourful] = hue[colourful]
    grey = fg & (mag < 0.045) & (ratio < dark_ratio * 0.8)      # strictly darker than shadows
    lab[grey] = len(_HUES) + 1
    # one-pixel-thin runs of a label are edge blends (object/floor, object/object): re-assign them
    # ...but an isolated blob that is all edge (a far small object at 32 px) stays whole
    fgb, nfgb = ndi.label(fg, np.ones((3, 3)))
    lab0 = lab.copy()
    for k in np.unique(lab0[lab0 > 0]):
        m = lab0 == k
        core = ndi.binary_opening(m, np.ones((2, 2)))
        thin = m & ~core
        cc, ncc = ndi.label(m, np.ones((3, 3)))
        if ncc:
            has_core = np.bincount(cc[core], minlength=ncc + 1) > 0
            other = np.bincount(fgb[(lab0 > 0) & ~m], minlength=nfgb + 1) > 0
            thin &= has_core[cc] | other[fgb]
        lab[thin] = 0
    unknown = fg & (lab == 0)
    if unknown.any() and (lab > 0).any():
        _, (iy, ix) = ndi.distance_transform_edt(lab == 0, return_indices=True)
        near = lab[iy, ix]
        blobs, _ = ndi.label(fg, np.ones((3, 3)))
        same = blobs[iy, ix] == blobs
        lab[unknown & same] = near[unknown & same]
    lab[~fg] = 0

    # components per label; tiny ones merge into the neighbour with the longest shared border
    comps = np.zeros((H, W), np.int32)
    ncomp = 0
    for k in range(1, len(_HUES) + 2):
        c, n = ndi.label(lab == k, np.ones((3, 3)))
        comps[c > 0] = c[c > 0] + ncomp
        ncomp += n
    comps = _absorb_small(comps, ncomp, min_area)

    gy_, gx_ = np.gradient(logy)
    grad = np.hypot(gx_, gy_)
    cam = framing_camera(framing)
    dets, final = [], np.zeros((H, W), np.int32)
    if centers == 'net':
        if not fg.any():             # nothing differs from the floor: no object (and no net call)
            return (dets, final) if return_labels else dets
        # Foreground without a labelled component (a small far object whose few pixels are all
        # edge blends or too weakly tinted for a hue) still goes to the centre net: a confident
        # centre there is an object (the orphan rule below), as the eye sees it.
        return _detect_with_centres(srgb, comps, lab, off, grad, min_area, cam, return_labels, fg)
    if centers != 'classical':
        raise ValueError(f"detect: centers must be 'net' or 'classical', got {centers!r}")
    for ci, sl in enumerate(ndi.find_objects(comps), 1):
        if sl is None:
            continue
        sl = tuple(slice(max(a.start - 1, 0), a.stop + 1) for a in sl)     # 1-px margin
        mask = comps[sl] == ci
        area = int(mask.sum())
        if area < min_area:
            continue
        color = _majority_colour(lab[sl][mask])
        # area prior (idea of issue 3): a blob well above one large object's expected area at its
        # position is more likely two objects, so a milder non-convexity suffices; a blob the
        # size of a small object needs a clearer one (its outline is only a few pixels long)
        ys, xs = np.nonzero(mask)
        rel = area / _expected_areas(cam, xs.mean() + 0.5 + sl[1].start, ys.mean() + 0.5 + sl[0].start, R)[0]
        gate = 0.88 if rel < 0.45 else 0.94 if rel > 1.4 else 0.92
        for part in _split_convex(mask, min_area, grad[sl], gate=gate):
            a = int(part.sum())
            ys, xs = np.nonzero(part)
            cx, cy = float(xs.mean() + 0.5 + sl[1].start), float(ys.mean() + 0.5 + sl[0].start)
            aL, aS = _expected_areas(cam, cx, cy, R)
            size = 'large' if a > np.sqrt(aL * aS) else 'small'
            dets.append({'center': (cx, cy), 'color': color, 'size': size, 'area': a})
            final[sl][part] = len(dets)
    return (dets, final) if return_labels else dets


def _detect_reframed(srgb, framing, kwargs):
    """Detect in an image of a narrower framing by placing it where it lies in the centre framing.

    The detector's size priors, thresholds and centre net were tuned on centre-framed renders;
    objects in a 'floor' image are 1.5x larger. Placed at its position in the centre framing at
    the same scale (R' = 1.5 R: 48 px for 32), the objects have the sizes it was tuned on;
    detections are mapped back and those outside the image dropped."""
    R = srgb.shape[1]
    x0, y0, side = framing_crop(framing)
    cx0, cy0, cside = framing_crop('centre')
    s = R / side                                   # output px per 320x240-frame px
    R2, ox, oy = cside * s, (x0 - cx0) * s, (y0 - cy0) * s
    if max(abs(v - round(v)) for v in (R2, ox, oy)) > 1e-6 or not (0 <= ox and 0 <= oy and ox + R <= R2 and oy + R <= R2):
        raise ValueError(f'detect: a {R} px {framing!r} image does not sit on whole pixels of the centre framing')
    R2, ox, oy = int(round(R2)), int(round(ox)), int(round(oy))
    # The border pixels carried outwards: measured on 200 held-out floor renders of 0-9 objects,
    # exact count 0.965 at 32 px / 0.975 at 64 (centre renders: 0.995 / 1.0); the renderer's empty
    # floor around it gave 0.895 / 0.905, mirrored borders 0.975 / 0.95, the image alone 0.84 / 0.825.
    canvas = np.pad(srgb, ((oy, R2 - oy - R), (ox, R2 - ox - R), (0, 0)), mode='edge')
    out = detect(canvas, framing='centre', **kwargs)
    dets, labels = out if kwargs.get('return_labels') else (out, None)
    kept = []
    for d in dets:
        x, y = d['center'][0] - ox, d['center'][1] - oy
        if 0 <= x < R and 0 <= y < R:
            kept.append({**d, 'center': (x, y)})
    if labels is None:
        return kept
    return kept, labels[oy:oy + R, ox:ox + R]


def _majority_colour(vals):
    k = int(np.bincount(vals, minlength=len(_HUES) + 2)[1:].argmax()) + 1
    return 'gray' if k == len(_HUES) + 1 else _HUES[k - 1]


# How the centre net and the colour components are combined (tuned on validation seeds 8888).
_ATTACH = 0.04       # a centre within this x R px of a component belongs to it
_ORPHAN_SCORE = 0.6  # a centre on no component is an object when the net is this sure
_KEEP_EMPTY = 0.5    # a component without a centre is kept when its area >= this x a small object's
_FRAGMENT = 0.5      # a component below this x a small object's area takes its colour from a disc
_AGREE = 0.6         # ... and so does one where fewer than this fraction of pixels share a label
_JOIN_TOUCHING = True  # a component without a centre that touches one with a centre is part of that object
_PART_COLOUR = True    # a component split among several centres: each part's colour from the disc at its centre


def _detect_with_centres(srgb, comps, lab, off, grad, min_area, cam, return_labels, fg):
    """Objects = the centre net's peaks; colours, masks and sizes from the colour components.

    Each peak is attached to the component it falls on (or one within `_ATTACH` x R px); a
    component holding several peaks is split among them by a marker watershed (on the luminance
    gradient and distance transform), which separates touching same-colour objects whose union
    is convex; a component with no peak is a fragment of a neighbour's mask unless it is large.
    """
    from . import centernet
    H, W = comps.shape
    R = W
    xy, score = centernet.predict(srgb)
    dist, (niy, nix) = ndi.distance_transform_edt(comps == 0, return_indices=True)
    owner = {}
    orphans = []
    for (x, y), sc in zip(xy, score):
        ix, iy = min(max(int(x), 0), W - 1), min(max(int(y), 0), H - 1)
        if dist[iy, ix] <= _ATTACH * R:
            c = int(comps[niy[iy, ix], nix[iy, ix]])
            owner.setdefault(c, []).append((x, y, niy[iy, ix], nix[iy, ix]))
        elif sc >= _ORPHAN_SCORE:
            orphans.append((x, y, sc))
    if _JOIN_TOUCHING:
        comps = _join_fragments(comps, set(owner))
    dets, final = [], np.zeros((H, W), np.int32)

    def add(part, color, centre, sl):
        a = int(part.sum())
        if centre is not None:      # the net's sub-pixel centre (the projected 3D centre)
            cx, cy = float(centre[0]), float(centre[1])
        else:                       # a component kept without a centre: its centroid
            ys, xs = np.nonzero(part)
            cx, cy = float(xs.mean() + 0.5 + sl[1].start), float(ys.mean() + 0.5 + sl[0].start)
        aL, aS = _expected_areas(cam, cx, cy, R)
        dets.append({'center': (cx, cy), 'color': color, 'size': 'large' if a > np.sqrt(aL * aS) else 'small',
                     'area': a})
        final[sl][part] = len(dets)

    for ci, sl in enumerate(ndi.find_objects(comps), 1):
        if sl is None:
            continue
        sl = tuple(slice(max(a.start - 1, 0), a.stop + 1) for a in sl)     # 1-px margin
        mask = comps[sl] == ci
        color = _majority_colour(lab[sl][mask])
        pts = owner.get(ci, [])
        if not pts:
            ys, xs = np.nonzero(mask)
            aS = _expected_areas(cam, xs.mean() + 0.5 + sl[1].start, ys.mean() + 0.5 + sl[0].start, R)[1]
            if mask.sum() >= max(min_area, _KEEP_EMPTY * aS):
                add(mask, color, None, sl)
            continue
        if len(pts) == 1:
            vals = lab[sl][mask]
            agree = np.bincount(vals).max() / vals.size
            frag = _fragment_colour(None if agree < _AGREE else mask, pts[0], off, comps > 0, xy, cam, R)
            add(mask, frag or color, pts[0][:2], sl)
            continue
        markers = np.zeros(mask.shape, np.int32)
        markers[~mask] = -1
        for m, (_, _, py, px) in enumerate(pts, 1):
            markers[py - sl[0].start, px - sl[1].start] = m
        dt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        g = grad[sl] * mask
        elev = 0.7 * g / max(g.max(), 1e-6) + 0.3 * (dt.max() - dt) / max(dt.max(), 1e-6)
        ws = ndi.watershed_ift(np.where(mask, elev * 254, 255).astype(np.uint8), markers)
        for m, p in enumerate(pts, 1):
            part = (ws == m) & mask
            if part.any():
                own = _fragment_colour(None, p, off, comps > 0, xy, cam, R) if _PART_COLOUR else None
                add(part, own or color, p[:2], sl)
    # A centre on the floor model's blind spot: the colour of the labelled foreground near it, or,
    # in an image where no pixel got a label, of the raw foreground near it.
    near_fg = comps > 0 if comps.any() else fg
    for x, y, _ in orphans:
        ix, iy = min(max(int(x), 0), W - 1), min(max(int(y), 0), H - 1)
        sl = (slice(iy, iy + 1), slice(ix, ix + 1))
        c = _fragment_colour(None, (x, y), off, near_fg, xy, cam, R) or 'gray'
        add(np.ones((1, 1), bool), c, (x, y), sl)
    return (dets, final) if return_labels else dets


def _fragment_colour(mask, pt, off, fgm, xy, cam, R):
    """Colour for a centre whose component is a fragment or whose labels disagree (noise breaks a
    grey object into specks of random hue): the mean chromaticity offset of the foreground near
    the centre (pixels closer to it than to any other centre) -- averaging cancels the noise that
    scattered the labels. None when the component's labels can speak for themselves."""
    aS = _expected_areas(cam, pt[0], pt[1], R)[1]
    if mask is not None and mask.sum() >= _FRAGMENT * aS:
        return None
    r = 0.8 * np.sqrt(aS / np.pi)
    H, W = fgm.shape
    y0, y1 = max(int(pt[1] - r), 0), min(int(pt[1] + r) + 2, H)
    x0, x1 = max(int(pt[0] - r), 0), min(int(pt[0] + r) + 2, W)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    d = np.hypot(xx - pt[0], yy - pt[1])
    near = (d <= r) & fgm[y0:y1, x0:x1]
    for ox, oy in xy:
        if (ox, oy) != (pt[0], pt[1]):
            near &= d <= np.hypot(xx - ox, yy - oy)
    if not near.any():
        return None
    m = off[y0:y1, x0:x1][near].mean(0)
    if np.linalg.norm(m) < 0.045:
        return 'gray'
    return _HUES[int((m @ _DIRS.T).argmax())]


def _absorb_small(comps, n, min_area):
    """Components smaller than min_area join the neighbour sharing the longest border."""
    if n == 0:
        return comps
    areas = np.bincount(comps.ravel(), minlength=n + 1)
    for ci, sl in enumerate(ndi.find_objects(comps), 1):
        if sl is not None and areas[ci] < min_area:
            _join_neighbour(comps, ci, sl, lambda nb: (nb > 0) & (nb != ci))
    ids = np.unique(comps)
    ids = ids[ids > 0]
    lut = np.zeros(comps.max() + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[comps]


def _join_fragments(comps, peaked):
    """Components without a centre that touch a component with one join it (the neighbour with
    the longest shared border), repeatedly, so a chain of fragments reaches its object.

    A generated object is often drawn in two or three hues (a blue top on a green body, a
    yellow-lit side of a brown cube); each hue is its own colour component, the centre net puts
    one centre on the object, and without this rule every hue large enough to be an object was
    counted as one. On the shipped object net's plain setting-A samples (k <= 4, two sheets of 50
    counted by hand before the detector's counts were looked at) the detector agreed with the hand
    count on 27 and 31 of 50 without this rule, on 46 and 47 with it; on held-out renders it costs
    one scene in 500 at 32 px and two at 64 px (an occluded object the centre net missed)."""
    comps = comps.copy()
    peaked = np.asarray(sorted(peaked), np.int64)
    changed = True
    while changed:
        changed = False
        for ci, sl in enumerate(ndi.find_objects(comps), 1):
            if sl is not None and ci not in peaked:
                changed |= _join_neighbour(comps, ci, sl, lambda nb: np.isin(nb, peaked))
    return comps


def _join_neighbour(comps, ci, sl, eligible):
    """Relabel component `ci` (bounding box `sl`, from find_objects) in place as the neighbour
    that shares the longest border with it, among the labels `eligible(labels)` accepts; returns
    whether it was joined (False when no eligible neighbour touches it)."""
    sl = tuple(slice(max(a.start - 1, 0), a.stop + 1) for a in sl)  # 1-px margin: the ring
    sub = comps[sl]
    m = sub == ci
    nb = sub[ndi.binary_dilation(m, np.ones((3, 3))) & ~m]
    nb = nb[eligible(nb)]
    if not nb.size:
        return False
    sub[m] = np.bincount(nb).argmax()
    return True


def _hull_mask(mask):
    """Lattice points (pixel centres) inside the convex hull of a mask's pixels, as a mask.

    The hull of a digital shape only needs each row's leftmost and rightmost pixel; Andrew's
    monotone chain on those (<= 2H points) is far cheaper than qhull on every pixel.
    """
    rows = np.nonzero(mask.any(1))[0]
    if len(rows) == 0:
        return mask.copy()
    sub = mask[rows]
    left = sub.argmax(1)
    right = sub.shape[1] - 1 - sub[:, ::-1].argmax(1)
    pts = sorted(set(zip(left.tolist(), rows.tolist())) | set(zip(right.tolist(), rows.tolist())))
    if len(pts) < 3:
        return mask.copy()

    def half(points):
        h = []
        for p in points:
            while len(h) >= 2 and ((h[-1][0] - h[-2][0]) * (p[1] - h[-2][1]) - (h[-1][1] - h[-2][1]) * (p[0] - h[-2][0])) <= 0:
                h.pop()
            h.append(p)
        return h
    lower, upper = half(pts), half(pts[::-1])
    hull = np.array(lower[:-1] + upper[:-1], np.float64)
    if len(hull) < 3:
        return mask.copy()
    y0, y1 = rows[0], rows[-1] + 1
    x0, x1 = int(left.min()), int(right.max()) + 1
    gy, gx = np.mgrid[y0:y1, x0:x1]
    inside = np.ones(gx.shape, bool)
    nxt = np.roll(hull, -1, 0)
    for (ax, ay), (bx, by) in zip(hull, nxt):        # counter-clockwise in (x, y-down) = left turns
        inside &= (bx - ax) * (gy - ay) - (by - ay) * (gx - ax) >= -1e-9
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = inside
    return out | mask


def _solidity(mask):
    """Digital convexity: pixels / lattice points inside the convex hull of the pixel centres.

    By construction it is 1 for any digitised convex shape (all CLEVR silhouettes), whatever its
    size, and drops where two blobs join.
    """
    n = int(mask.sum())
    return n / max(int(_hull_mask(mask).sum()), 1) if n else 1.0


def _split_score(mask, a, b):
    """How well a two-part split explains a blob as two convex silhouettes, one maybe in front.

    The front part must be convex; the part behind it may be cut by the occluder, so its hull
    only has to be covered by the blob (its hidden region lies under the front part). The score is
    the better of the two depth orders of min(front convexity, back hull coverage).
    """
    ha, hb = _hull_mask(a), _hull_mask(b)
    sa, sb = a.sum() / max(ha.sum(), 1), b.sum() / max(hb.sum(), 1)
    ca, cb = (ha & mask).sum() / max(ha.sum(), 1), (hb & mask).sum() / max(hb.sum(), 1)
    return max(min(sa, cb), min(sb, ca))


def _split_convex(mask, min_area, grad=None, gate=0.92, accept=0.95, depth=0):
    """Split a same-colour blob that is the union of several objects.

    Every CLEVR object projects to a convex silhouette (an occluded one: convex minus its
    occluder), so a blob that is clearly non-convex is split in two: candidates are watersheds
    seeded at pairs of distance-transform peaks, on the inverted distance transform and on the
    luminance-gradient magnitude (silhouette edges between objects of one colour), plus 2-means on
    pixel coordinates; the best-scoring split (`_split_score`) is kept when it explains the blob
    far better than one object does. Recursive.
    """
    if depth > 3 or mask.sum() < 2 * min_area:
        return [mask]
    sol = _solidity(mask)
    if sol > gate:
        return [mask]
    best = None
    for parts in _chord_cuts(mask) + _peak_pairs(mask, min_area, grad) + [_kmeans2(mask)]:
        if len(parts) != 2 or min(p.sum() for p in parts) < min_area:
            continue
        parts = [_largest(p) for p in parts]
        if min(p.sum() for p in parts) < min_area:
            continue
        s2 = min(_solidity(p) for p in parts)
        if s2 > max(accept, sol + 0.04) and (best is None or s2 > best[0]):
            best = (s2, parts)
    if best is None:
        return [mask]
    out = []
    for p in best[1]:
        out += _split_convex(p, min_area, grad, 0.92, accept, depth + 1)
    return out


def _chord_cuts(mask, top=4):
    """Splits along chords joining the deepest points of pairs of convexity defects.

    Where a convex silhouette overlaps another, the two outlines cross at two concave corners of
    the union; the chord between them leaves the front object convex (a disc minus a segment) and
    gives the back one back its hidden segment (its silhouette cut by a half-plane: convex too).
    """
    hull = _hull_mask(mask)
    defects, n = ndi.label(hull & ~mask)
    if n == 0:
        return []
    depth = ndi.distance_transform_edt(np.pad(hull, 1))[1:-1, 1:-1]
    pts = []
    for d, sl in enumerate(ndi.find_objects(defects), 1):
        dm = defects == d
        if dm.sum() < 2:
            continue
        rim = ndi.binary_dilation(dm, np.ones((3, 3))) & mask
        if not rim.any():
            continue
        ys, xs = np.nonzero(rim)
        i = depth[ys, xs].argmax()
        pts.append((depth[ys, xs][i], ys[i], xs[i]))
    pts = sorted(pts, reverse=True)[:top]
    if len(pts) < 2:
        return []
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    out = []
    for a in range(len(pts)):
        for b in range(a + 1, len(pts)):
            (_, y0, x0), (_, y1, x1) = pts[a], pts[b]
            side = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
            for tie in (side >= 0, side > 0):     # the chord's own pixels go to either side
                out.append([mask & tie, mask & ~tie])
    return out


def _largest(m):
    lab, n = ndi.label(m, np.ones((3, 3)))
    if n <= 1:
        return m
    return lab == (np.bincount(lab.ravel())[1:].argmax() + 1)


def _peak_pairs(mask, min_area, grad=None, top=4):
    """Two-part watershed splits seeded at pairs of the strongest distance-transform peaks."""
    dt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    peaks = (dt == ndi.maximum_filter(dt, size=3)) & mask & (dt >= 1.0)
    py, px = np.nonzero(peaks)
    order = np.argsort(-dt[py, px])[:top]
    elevs = [(dt.max() - dt) / max(dt.max(), 1e-6)]
    if grad is not None:
        g = grad * mask
        elevs.append(0.7 * g / max(g.max(), 1e-6) + 0.3 * elevs[0])
    elevs = [np.where(mask, e * 254, 255).astype(np.uint8) for e in elevs]
    out = []
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            i, j = order[a], order[b]
            if abs(py[i] - py[j]) + abs(px[i] - px[j]) < 3:
                continue
            markers = np.zeros(mask.shape, np.int32)
            markers[~mask] = -1
            markers[py[i], px[i]] = 1
            markers[py[j], px[j]] = 2
            for elev in elevs:
                ws = ndi.watershed_ift(elev, markers)
                out.append([(ws == 1) & mask, (ws == 2) & mask])
    return out


def _kmeans2(mask, iters=10):
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], -1).astype(np.float64)
    c = pts.mean(0)
    cov = np.cov(pts.T) if len(pts) > 2 else np.eye(2)
    w, v = np.linalg.eigh(cov)
    ax = v[:, -1] * np.sqrt(max(w[-1], 1e-6))
    cent = np.stack([c - ax, c + ax])
    for _ in range(iters):
        a = np.linalg.norm(pts[:, None] - cent[None], axis=-1).argmin(1)
        if a.min() == a.max():
            return [mask]
        cent = np.stack([pts[a == k].mean(0) for k in range(2)])
    parts = []
    for k in range(2):
        m = np.zeros_like(mask)
        m[ys[a == k], xs[a == k]] = True
        parts.append(m)
    return parts


def _split(mask, min_area, neck=0.72, max_parts=None):
    """Split a same-colour blob at distance-transform necks; returns a list of masks."""
    dt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    peaks = (dt == ndi.maximum_filter(dt, size=3)) & mask & (dt >= 1.5)
    py, px = np.nonzero(peaks)
    if len(py) <= 1:
        return [mask]
    order = np.argsort(-dt[py, px])
    kept = []
    for j in order:
        pj = (py[j], px[j])
        sep = True
        for i in kept:
            pi = (py[i], px[i])
            n = int(max(abs(pi[0] - pj[0]), abs(pi[1] - pj[1]))) * 2 + 2
            ly = np.linspace(pi[0], pj[0], n).round().astype(int)
            lx = np.linspace(pi[1], pj[1], n).round().astype(int)
            if dt[ly, lx].min() >= neck * min(dt[pi], dt[pj]):
                sep = False
                break
        if sep:
            kept.append(j)
            if max_parts and len(kept) >= max_parts:
                break
    if len(kept) <= 1:
        return [mask]
    markers = np.zeros(mask.shape, np.int32)
    for m, j in enumerate(kept, 1):
        markers[py[j], px[j]] = m
    # watershed on the inverted distance transform, restricted to the blob
    elev = (dt.max() - dt) / max(dt.max(), 1e-6) * 254
    elev = np.where(mask, elev, 255).astype(np.uint8)
    markers[~mask] = -1
    ws = ndi.watershed_ift(elev, markers)
    parts = [(ws == m) & mask for m in range(1, len(kept) + 1)]
    parts = [p for p in parts if p.sum() >= min_area]
    return parts or [mask]


def match(detections, requested_xy, radius):
    """Match detections to requested centres (pixels) one-to-one within `radius` pixels.

    Returns {'hits': [bool per request], 'assignment': [detection index or None per request],
    'num_detected', 'num_requested', 'exact_count': num_detected == num_requested,
    'all_hit': all requests hit and exact count}.
    """
    req = np.asarray(requested_xy, np.float64).reshape(-1, 2)
    det = np.asarray([d['center'] for d in detections], np.float64).reshape(-1, 2)
    hits = [False] * len(req)
    assign = [None] * len(req)
    if len(req) and len(det):
        cost = np.linalg.norm(req[:, None] - det[None], axis=-1)
        big = cost > radius
        rows, cols = linear_sum_assignment(np.where(big, 1e6, cost))
        for r, c in zip(rows, cols):
            if not big[r, c]:
                hits[r] = True
                assign[r] = int(c)
    exact = len(det) == len(req)
    return {'hits': hits, 'assignment': assign, 'num_detected': len(det), 'num_requested': len(req),
            'exact_count': exact, 'all_hit': exact and all(hits)}


def evaluate_scenes(scenes, images, radius=None):
    """Detector accuracy against scene JSONs whose pixel_coords are in the images' frame.

    Returns {'count_acc', 'center_err' (mean px over matched), 'center_err_p95', 'color_acc',
    'size_acc', 'recall', 'n_scenes', 'n_objects'}.
    """
    exact, errs, col, size, matched, total = 0, [], 0, 0, 0, 0
    for scene, img in zip(scenes, images):
        R = img.shape[1] if img.shape[-1] == 3 else img.shape[-1]
        rad = radius or max(2.0, 0.08 * R)
        dets = detect(img, framing=scene['render'].get('framing', 'centre'))
        gt = [o['pixel_coords'][:2] for o in scene['objects']]
        m = match(dets, gt, rad)
        exact += m['exact_count']
        total += len(gt)
        for o, a in zip(scene['objects'], m['assignment']):
            if a is None:
                continue
            matched += 1
            d = dets[a]
            errs.append(float(np.hypot(d['center'][0] - o['pixel_coords'][0], d['center'][1] - o['pixel_coords'][1])))
            col += d['color'] == o['color']
            size += d['size'] == o['size']
    n = max(len(scenes), 1)
    return {'count_acc': exact / n, 'center_err': float(np.mean(errs)) if errs else 0.0,
            'center_err_p95': float(np.percentile(errs, 95)) if errs else 0.0,
            'color_acc': col / max(matched, 1), 'size_acc': size / max(matched, 1),
            'recall': matched / max(total, 1), 'n_scenes': len(scenes), 'n_objects': total}
