"""The paper's CLEVR compositions as specs over the shipped (or any) checkpoints.

Fig 3 composes location-conditioned single-object models p_1..p_k:
  A  p_i = one object at location i over an EMPTY background p_b        (projective, Thm 5.3)
     (p_b is the 'empty' label of the location net when it has one, else the empty-scene net)
  B  the same p_i over the UNCONDITIONAL one-object model p_u            (Bayes composition, §3)
  C  p_i = object at i plus 0-4 random others, p_b = 1-5 random objects  (cluttered, approx. Def 5.2)
Fig 5 composes colour-conditioned single-object models over their unconditional term.

Model roles are looked up in a `Zoo`: a folder of checkpoints (config.json + model.safetensors)
whose configs name the dataset preset they were trained on. The unconditional terms are the null
label of a net trained with label dropout (p_u of the location net; the clutter-location net's null
label is "1 labelled + 0-4 others" = 1-5 random objects, exactly the cluttered p_b of setting C).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

import numpy as np

from .compose import CompositionError
from .spec import CompositionSpec, TermSpec

__all__ = ["SETTINGS", "ROLES", "Zoo", "setting_spec", "color_spec", "random_locations", "ZooError"]

# Which dataset preset each model role was trained on (checkpoint config: config["dataset"]["preset"]).
ROLES = {
    "empty": ("empty",),                         # p_b of setting A: empty scenes (its own net).
    "location": ("location-empty", "location"),  # p_i of A/B (p_u by the null label; with the
                                                 # location-empty preset also p_b by the 'empty' label).
    "clutter": ("clutter-location",),            # p_i of C (and the cluttered p_b by its null label).
    "color": ("color",),                         # Fig 5 colour conditionals (and their null label).
}

# Setting -> (role of the terms, background (role, cond)). cond None = the null label.
SETTINGS = {
    "A": {"terms": "location", "background": ("empty", None),
          "title": "A: empty background (projective)"},
    "B": {"terms": "location", "background": ("location", None),
          "title": "B: unconditional background (Bayes)"},
    "C": {"terms": "clutter", "background": ("clutter", None),
          "title": "C: cluttered background"},
}


class ZooError(ValueError):
    """A model role has no checkpoint, or a checkpoint folder is unusable; names the folder."""


class Zoo:
    """Checkpoints found under `root` (one folder each), indexed by role and resolution, loaded lazily."""

    def __init__(
        self,
        root: str = "checkpoints",            # Folder of checkpoint folders.
        dtype: Any = None,                    # Load weights as this dtype (None: float32).
        resolution: Optional[int] = None,     # Preferred resolution where a role has several; None =
                                              # the lowest (fastest to sample; the best-trained shipped set).
        channels_last: Optional[bool] = None, # Conv weights NHWC (see checkpoint.load); None = on for CPU.
    ):
        self.root = root
        self.dtype = dtype
        self.channels_last = channels_last
        self.resolution = resolution
        self.entries: dict = {}  # name -> config dict
        self.problems: dict = {}  # name -> why its folder was skipped (unreadable config)
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                cfg_path = os.path.join(root, name, "config.json")
                if os.path.isfile(cfg_path):
                    try:
                        with open(cfg_path) as f:
                            self.entries[name] = json.load(f)
                    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                        # One broken folder must not hide the others; callers can show `problems`.
                        self.problems[name] = f"{cfg_path}: unreadable config ({e})"
        self._loaded: dict = {}

    def role_of(self, name: str) -> Optional[str]:
        cfg = self.entries[name]
        preset = (cfg.get("dataset") or {}).get("preset")
        return next((r for r, presets in ROLES.items() if preset in presets), None)

    def has_empty_label(self, name: str) -> bool:
        """Whether a location net also models the empty scene (its 'empty' label)."""
        return bool((self.entries[name].get("condition") or {}).get("empty"))

    def resolution_of(self, name: str) -> int:
        shape = self.entries[name].get("image_shape")
        if shape:
            return int(shape[-1])
        return int(self.entries[name]["network"]["kwargs"]["img_resolution"])

    def resolutions(self) -> list:
        return sorted({self.resolution_of(n) for n in self.entries})

    def preferred_resolution(self) -> Optional[int]:
        """The resolution `find` picks when none is asked for (see the constructor)."""
        if self.resolution:
            return int(self.resolution)
        res = self.resolutions()
        return min(res) if res else None

    def find(self, role: str, resolution: Optional[int] = None) -> str:
        """The checkpoint name for a role: at `resolution` if given, else at the preferred
        resolution when the role has a checkpoint there, else the highest one."""
        names = [n for n in self.entries if self.role_of(n) == role and (resolution is None or self.resolution_of(n) == resolution)]
        if not names:
            have = ", ".join(f"{n} ({self.role_of(n)}, {self.resolution_of(n)}px)" for n in self.entries) or "none"
            raise ZooError(f"no checkpoint for role {role!r}" + (f" at {resolution}px" if resolution else "") + f" in {self.root!r} (have: {have})")
        if resolution is None:
            pref = [n for n in names if self.resolution_of(n) == self.preferred_resolution()]
            names = pref or names
        return max(names, key=self.resolution_of)

    def has(self, role: str, resolution: Optional[int] = None) -> bool:
        try:
            self.find(role, resolution)
            return True
        except ZooError:
            return False

    def get(self, name: str):
        if name not in self._loaded:
            from .checkpoint import load
            self._loaded[name] = load(os.path.join(self.root, name), dtype=self.dtype, channels_last=self.channels_last)
        return self._loaded[name]

    def registry(self, names: Sequence[str]) -> dict:
        return {n: self.get(n) for n in names}


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
