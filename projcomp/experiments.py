"""The paper's CLEVR compositions as specs over the shipped (or any) checkpoints.

Fig 3 composes location-conditioned single-object models p_1..p_k:
  A  p_i = one object at location i over an EMPTY background p_b        (projective, Thm 5.3)
     (p_b is the 'empty' label of the location net when it has one, else the empty-scene net)
  B  the same p_i over the UNCONDITIONAL one-object model p_u            (Bayes composition, §3)
  C  p_i = object at i plus 0-4 random others, p_b = 1-5 random objects  (cluttered, approx. Def 5.2)
Fig 5 composes colour-conditioned single-object models over their unconditional term.

Model roles are looked up in a `Zoo` (projcomp/zoo.py): a folder of checkpoints (config.json + model.safetensors)
whose configs name the dataset preset they were trained on. The unconditional terms are the null
label of a net trained with label dropout (p_u of the location net; the clutter-location net's null
label is "1 labelled + 0-4 others" = 1-5 random objects, exactly the cluttered p_b of setting C).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .compose import CompositionError
from .spec import CompositionSpec, TermSpec
from .zoo import ROLES, Zoo, ZooError  # noqa: F401  (the registry; re-exported for old imports)

__all__ = ["SETTINGS", "ROLES", "Zoo", "setting_spec", "color_spec", "random_locations", "ZooError"]

# Setting -> (role of the terms, background (role, cond)). cond None = the null label.
SETTINGS = {
    "A": {"terms": "location", "background": ("empty", None),
          "title": "A: empty background (projective)"},
    "B": {"terms": "location", "background": ("location", None),
          "title": "B: unconditional background (Bayes)"},
    "C": {"terms": "clutter", "background": ("clutter", None),
          "title": "C: cluttered background"},
}


def setting_spec(zoo: Zoo, setting: str, locations: Sequence[Sequence[float]], seeds: Sequence[int],
                 weights: Optional[Sequence[float]] = None, sampler: Optional[dict] = None,
                 resolution: Optional[int] = None) -> CompositionSpec:
    """Fig 3 setting A/B/C as a spec: one term per (x, y) location in [0, 1] image coordinates."""
    if setting not in SETTINGS:
        raise CompositionError(f"setting: {setting!r} is not one of {sorted(SETTINGS)}")
    s = SETTINGS[setting]
    term_model = zoo.find(s["terms"], resolution)
    bg_role, bg_cond = s["background"]
    if bg_role == "empty" and zoo.has_empty_label(term_model):
        # One net models the empty scene too: D_b and D_i come from the same network (and the
        # same batched call), so its errors off the objects cancel in Def 5.1.
        bg_model, bg_cond = term_model, "empty"
    else:
        bg_model = zoo.find(bg_role, zoo.resolution_of(term_model))
    locations = [list(map(float, xy)) for xy in locations]
    for i, xy in enumerate(locations):
        if len(xy) != 2 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in xy):
            raise CompositionError(f"locations[{i}]: {xy!r} must be (x, y) with 0 <= x, y <= 1")
    weights = [1.0] * len(locations) if weights is None else list(weights)
    if len(weights) != len(locations):
        raise CompositionError(f"weights: {len(weights)} weights for {len(locations)} locations")
    d = {
        "background": {"model": bg_model, "cond": bg_cond, "name": s["title"]},
        "terms": [{"model": term_model, "cond": xy, "weight": w, "name": f"object at ({xy[0]:.2f}, {xy[1]:.2f})"}
                  for xy, w in zip(locations, weights)],
        "sampler": dict(sampler or {}),
        "seeds": list(seeds),
    }
    return CompositionSpec.from_dict(d)


def color_spec(zoo: Zoo, colors: Sequence[str], seeds: Sequence[int], weights: Optional[Sequence[float]] = None,
               sampler: Optional[dict] = None, resolution: Optional[int] = None) -> CompositionSpec:
    """Fig 5: colour conditionals composed over the colour net's unconditional (null-label) term."""
    model = zoo.find("color", resolution)
    weights = [1.0] * len(colors) if weights is None else list(weights)
    if len(weights) != len(colors):
        raise CompositionError(f"weights: {len(weights)} weights for {len(colors)} colours")
    d = {
        "background": {"model": model, "cond": None, "name": "unconditional (one object of any colour)"},
        "terms": [{"model": model, "cond": c, "weight": w, "name": c} for c, w in zip(colors, weights)],
        "sampler": dict(sampler or {}),
        "seeds": list(seeds),
    }
    return CompositionSpec.from_dict(d)


def random_locations(k: int, seed: int, min_separation: float = 0.12, max_tries: int = 200) -> list:
    """k object locations in [0, 1]² from the CLEVR scene sampler (valid, visible placements),

    redrawn until every pair of centres is at least `min_separation` (fraction of the image width)
    apart, so that the detector can tell the requested objects apart at low resolution.
    """
    from .clevr.scene import sample_scene

    if k == 0:
        return []
    for t in range(max_tries):
        scene = sample_scene([0xC0FFEE, int(k), int(seed), t], num_objects=int(k), jitter=False, resolution=1000)
        xy = np.array([o["pixel_coords"][:2] for o in scene["objects"]], dtype=np.float64) / 1000.0
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(k) * 9
        if d.min() >= min_separation:
            return [[float(a), float(b)] for a, b in xy]
    raise CompositionError(f"k: could not place {k} separated locations (min_separation={min_separation})")
