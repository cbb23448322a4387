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

__all__ = ["SETTINGS", "ROLES", "Zoo", "setting_term_model", "setting_spec", "color_spec", "random_locations", "setting_framing", "ZooError"]

# Setting -> (role of the terms, background (role, cond)). cond None = the null label.
SETTINGS = {
    "A": {"terms": "location", "background": ("empty", None),
          "title": "A: empty background (projective)"},
    "B": {"terms": "location", "background": ("location", None),
          "title": "B: unconditional background (Bayes)"},
    "C": {"terms": "clutter", "background": ("clutter", None),
          "title": "C: cluttered background"},
}


def setting_term_model(zoo: Zoo, setting: str, resolution: Optional[int] = None) -> str:
    """The checkpoint that draws setting `setting`'s terms (at `resolution`, else the zoo's preferred
    one): the one lookup setting_spec, setting_framing and the app share."""
    if setting not in SETTINGS:
        raise CompositionError(f"setting: {setting!r} is not one of {sorted(SETTINGS)}")
    return zoo.find(SETTINGS[setting]["terms"], resolution)


def setting_spec(zoo: Zoo, setting: str, locations: Sequence, seeds: Sequence[int],
                 weights: Optional[Sequence[float]] = None, sampler: Optional[dict] = None,
                 resolution: Optional[int] = None, colors: Optional[Sequence[Optional[str]]] = None,
                 color_guidance: float = 1.0) -> CompositionSpec:
    """Fig 3 setting A/B/C as a spec: one term per (x, y) location in [0, 1] image coordinates.

    colors: one colour name (or None = any colour) per location, for a net with a colour per
    object (condition schema "colors", preset object-empty); each term is then
    {"xy": (x, y), "color": c}: "an object of colour c at (x, y)".

    color_guidance g (classifier-free guidance of the colour *inside* each term): the term of a
    coloured place becomes D_xy + g (D_xyc − D_xy), i.e. p(x | xy) · (p(x | xy, c) / p(x | xy))^g,
    which sharpens p(c | x, xy) without touching where the object is. Def 5.1 is affine in the
    D's, so it is written as two terms of the same net: {"xy", "color"} with weight g·w_i and
    {"xy"} with weight (1 − g)·w_i (their sum of weights is w_i; the background enters as usual).
    g = 1 is the plain colour term. Places without a colour are unaffected."""
    term_model = setting_term_model(zoo, setting, resolution)
    s = SETTINGS[setting]
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
    colors = [None] * len(locations) if colors is None else list(colors)
    if len(colors) != len(locations):
        raise CompositionError(f"colors: {len(colors)} colours for {len(locations)} locations")
    g = float(color_guidance)
    if not math.isfinite(g):
        raise CompositionError(f"color_guidance: {color_guidance!r} is not a finite number")
    palette = (zoo.entries[term_model].get("condition") or {}).get("colors") or []
    conds = []
    for i, (xy, c) in enumerate(zip(locations, colors)):
        if c is None:
            conds.append(xy)
        elif not palette:
            raise CompositionError(f"colors[{i}]: {term_model!r} has no colour per object (train on preset object-empty)")
        elif c not in palette:
            raise CompositionError(f"colors[{i}]: {c!r} is not one of {palette}")
        else:
            conds.append({"xy": xy, "color": c})
    terms = []
    for xy, c, cond, w in zip(locations, colors, conds, weights):
        name = (f"{c} object" if c else "object") + f" at ({xy[0]:.2f}, {xy[1]:.2f})"
        if c is None or g == 1.0:
            terms.append({"model": term_model, "cond": cond, "weight": w, "name": name})
        else:   # D_xy + g (D_xyc - D_xy) as two terms of Def 5.1 (docstring)
            terms.append({"model": term_model, "cond": cond, "weight": g * w, "name": f"{name}, colour guidance {g:g}"})
            terms.append({"model": term_model, "cond": xy, "weight": (1.0 - g) * w,
                          "name": f"object at ({xy[0]:.2f}, {xy[1]:.2f}), guidance's unconditioned colour"})
    d = {
        "background": {"model": bg_model, "cond": bg_cond, "name": s["title"]},
        "terms": terms,
        "sampler": dict(sampler or {}),
        "seeds": list(seeds),
    }
    return CompositionSpec.from_dict(d)


def color_spec(zoo: Zoo, colors: Sequence[str], seeds: Sequence[int], weights: Optional[Sequence[float]] = None,
               sampler: Optional[dict] = None, resolution: Optional[int] = None, background: str = "auto",
               model: Optional[str] = None) -> CompositionSpec:
    """Fig 5: colour conditionals composed over a background.

    background: 'empty' = the empty scene (the colour net's own 'empty' label when it has one, else
    the 'empty' label of a location net / the empty-scene net at the same resolution); 'null' = the
    colour net's null label (one object of any colour: a Bayes-like p_u); 'auto' = 'empty' when the
    colour net has that label, else 'null'. A net with a colour per object (object-empty) is asked
    for {"color": c}, an old colour net for c. `model` picks the colour net (default: the best one in the zoo, see below)."""
    if background not in ("auto", "empty", "null"):
        raise CompositionError(f"background: {background!r} is not one of auto, empty, null")
    if model is None:
        # The registry's one rule (zoo.ROLES lists object-empty nets before plain colour nets), so
        # the Colours tab and anything that asks the Zoo for the "color" role agree on the net.
        model = zoo.find("color", resolution)
    own_empty = zoo.has_empty_label(model)
    per_object = bool((zoo.entries[model].get("condition") or {}).get("colors"))
    if background == "auto":
        background = "empty" if own_empty else "null"
    if background == "null":
        bg = {"model": model, "cond": None, "name": "null label (one object of any colour)"}
    elif own_empty:
        bg = {"model": model, "cond": "empty", "name": "empty scene (the colour net's 'empty' label)"}
    else:
        res = zoo.resolution_of(model)
        loc = [n for n in zoo.entries if zoo.role_of(n) == "location" and zoo.has_empty_label(n) and zoo.resolution_of(n) == res]
        if loc:
            bg = {"model": loc[0], "cond": "empty", "name": "empty scene (a location net's 'empty' label)"}
        else:
            bg = {"model": zoo.find("empty", res), "cond": None, "name": "empty scene (the empty-scene net)"}
    weights = [1.0] * len(colors) if weights is None else list(weights)
    if len(weights) != len(colors):
        raise CompositionError(f"weights: {len(weights)} weights for {len(colors)} colours")
    d = {
        "background": bg,
        "terms": [{"model": model, "cond": {"color": c} if per_object else c, "weight": w, "name": c}
                  for c, w in zip(colors, weights)],
        "sampler": dict(sampler or {}),
        "seeds": list(seeds),
    }
    return CompositionSpec.from_dict(d)


def setting_framing(zoo: Zoo, setting: str, resolution: Optional[int] = None) -> str:
    """The square of CLEVR's frame that setting `setting`'s term nets draw (their dataset's framing):
    where its places are drawn and its samples judged."""
    return zoo.framing_of(setting_term_model(zoo, setting, resolution))


def random_locations(k: int, seed: int, min_separation: float = 0.12, max_tries: int = 200,
                     framing: str = "centre") -> list:
    """k object locations in [0, 1]² from the CLEVR scene sampler (valid, visible placements in
    the images of `framing`, world.FRAMINGS),

    redrawn until every pair of centres is at least `min_separation` (fraction of the image width
    in the centre framing: the same distance on the floor in every framing, 1.5x the fraction of a
    'floor' image) apart, so that the detector can tell the requested objects apart at low resolution.
    """
    from .clevr.scene import sample_scene
    from .clevr.world import framing_crop

    min_separation = min_separation * framing_crop("centre")[2] / framing_crop(framing)[2]

    if k == 0:
        return []
    for t in range(max_tries):
        scene = sample_scene([0xC0FFEE, int(k), int(seed), t], num_objects=int(k), jitter=False, resolution=1000,
                             framing=framing)
        xy = np.array([o["pixel_coords"][:2] for o in scene["objects"]], dtype=np.float64) / 1000.0
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(k) * 9
        if d.min() >= min_separation:
            return [[float(a), float(b)] for a, b in xy]
    raise CompositionError(f"k: could not place {k} separated locations (min_separation={min_separation})")
