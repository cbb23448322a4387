"""The checkpoint registry: a folder of checkpoints indexed by model role and resolution.

Each checkpoint folder (config.json + model.safetensors, see `projcomp.checkpoint`) names the
dataset preset it was trained on (config["dataset"]["preset"]); `ROLES` maps presets to the roles
the paper's compositions need (empty-scene p_b, location p_i / p_u, cluttered, colour). The
compositions themselves (Fig 3 settings, Fig 5) are in `projcomp.experiments`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

from .errors import ProjcompError

__all__ = ["ROLES", "Zoo", "ZooError"]

# Which dataset preset each model role was trained on (checkpoint config: config["dataset"]["preset"]).
ROLES = {
    "empty": ("empty",),                         # p_b of setting A: empty scenes (its own net).
    "location": ("object-empty", "location-empty", "location"),
                                                 # p_i of A/B (p_u by the null label; with the *-empty
                                                 # presets also p_b by the 'empty' label; object-empty
                                                 # adds a colour per object). Earlier = preferred.
    "clutter": ("clutter-location",),            # p_i of C (and the cluttered p_b by its null label).
    "color": ("object-empty", "color"),          # Fig 5 colour conditionals (and their null label); an
                                                 # object-empty net also serves here, and is preferred.
                                                 # A preset may serve several roles: role_of names the
                                                 # first, find(role) sees every net listed for it.
}


class ZooError(ProjcompError, ValueError):
    """A model role has no checkpoint, or a checkpoint folder is unusable; names the folder."""


def torch_device(device: Any = None):
    """`device` as a torch.device (None -> the CPU), with a clear message for a bad name."""
    import torch
    try:
        dev = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ZooError(f"device: {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"device: {device!r} asked for, but torch sees no CUDA device here")
    return dev


class Zoo:
    """Checkpoints found under `root` (one folder each), indexed by role and resolution, loaded lazily."""

    def __init__(
        self,
        root: str = "checkpoints",            # Folder of checkpoint folders.
        dtype: Any = None,                    # Load weights as this dtype (None: float32).
        resolution: Optional[int] = None,     # Preferred resolution where a role has several; None =
                                              # the lowest (fastest to sample; the best-trained shipped set).
        channels_last: Optional[bool] = None, # Conv weights NHWC (see checkpoint.load); None = on for CPU.
        device: Any = None,                   # Where the nets live and sample ("cuda", ...); None = the CPU.
    ):
        self.root = root
        self.dtype = dtype
        self.channels_last = channels_last
        self.resolution = resolution
        self.device = torch_device(device)
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

    def preset_of(self, name: str) -> Optional[str]:
        """The dataset preset a checkpoint was trained on (its config's dataset.preset)."""
        return (self.entries[name].get("dataset") or {}).get("preset")

    def framing_of(self, name: str) -> str:
        """The square of CLEVR's frame its images show (world.FRAMINGS): its dataset's framing."""
        return (self.entries[name].get("dataset") or {}).get("framing", "centre")

    def role_of(self, name: str) -> Optional[str]:
        preset = self.preset_of(name)
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
        presets = ROLES.get(role, ())
        names = [n for n in self.entries if self.preset_of(n) in presets
                 and (resolution is None or self.resolution_of(n) == resolution)]
        if not names:
            have = ", ".join(f"{n} ({self.role_of(n)}, {self.resolution_of(n)}px)" for n in self.entries) or "none"
            raise ZooError(f"no checkpoint for role {role!r}" + (f" at {resolution}px" if resolution else "") + f" in {self.root!r} (have: {have})")
        if resolution is None:
            pref = [n for n in names if self.resolution_of(n) == self.preferred_resolution()]
            names = pref or names
        # Highest resolution first; among equals, the preset listed first in ROLES (the newest kind).
        return max(names, key=lambda n: (self.resolution_of(n), -presets.index(self.preset_of(n))))

    def has(self, role: str, resolution: Optional[int] = None) -> bool:
        try:
            self.find(role, resolution)
            return True
        except ZooError:
            return False

    def get(self, name: str):
        if name not in self._loaded:
            from .checkpoint import load
            self._loaded[name] = load(os.path.join(self.root, name), dtype=self.dtype, channels_last=self.channels_last,
                                      device=self.device)
        return self._loaded[name]

    def registry(self, names: Sequence[str]) -> dict:
        return {n: self.get(n) for n in names}
