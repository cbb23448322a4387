"""Condition encoders: user-level condition values -> the network's label vector.

One encoder per condition SCHEMA (notes/CONTRACTS.md):
    {"type": "location", "dim": 2}                 (x, y) in [0, 1], x right, y down
    {"type": "color", "classes": [...]}            one class (name or index) -> one-hot
    {"type": "multihot", "classes": [...]}         a set of classes -> normalised multi-hot
    null                                           unconditional (label_dim = 0)

Conventions shared by every encoder:
  * The all-zeros vector is the NULL label (unconditional term / label dropout), so no real
    condition may encode to zeros.
  * Real conditions encode to vectors of unit L2 norm. The U-Net multiplies labels by
    sqrt(label_dim) before its magnitude-preserving linear embedding (EDM2), which then sees
    inputs of unit RMS -- exactly what a one-hot vector gives in EDM2. So every condition type
    has the same embedding magnitude and label_balance means the same thing for all of them.

Location encoding (choice documented here): for each coordinate c in {x, y} and each frequency
f_k = pi * 2^k, k = 0..K-1, the pair (cos(f_k c), sin(f_k c)); then one presence flag = 1.
  - k = 0 (half a period over [0, 1]) makes the map injective on [0, 1]^2; higher k give
    resolution down to ~1/2^K of the image (K = 4: ~2 px at 32 px, the object scale), which a
    raw (x, y) input to a single linear layer cannot express sharply.
  - each (cos, sin) pair has norm 1, so ||features||^2 = 2K + 1 for *every* location: all
    locations get the same embedding magnitude; we divide by sqrt(2K + 1) for unit norm.
  - the presence flag guarantees a real location is never the all-zeros null vector (and the
    cos/sin pairs can never all vanish either).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

__all__ = ["ConditionError", "ConditionEncoder", "make_condition_encoder", "LOCATION_FREQUENCIES"]

LOCATION_FREQUENCIES = 4  # K above: label_dim = 4K + 1 = 17 for a location.


class ConditionError(ValueError):
    """A condition value or schema that cannot be encoded; the message names it."""


class ConditionEncoder:
    """Maps values of one condition schema to label vectors of length `label_dim`."""

    def __init__(self, schema: Optional[dict]):
        self.schema = schema
        if schema is None:
            self.type = None
            self.label_dim = 0
            self.classes: list = []
        else:
            if not isinstance(schema, dict) or "type" not in schema:
                raise ConditionError(f"condition schema {schema!r}: expected a dict with a 'type'")
            self.type = schema["type"]
            if self.type == "location":
                dim = int(schema.get("dim", 2))
                if dim != 2:
                    raise ConditionError(f"location schema dim={dim}: only 2-D (x, y) is supported")
                self.num_freqs = int(schema.get("frequencies", LOCATION_FREQUENCIES))
                # "empty": true adds one more label, the EMPTY scene, so one network gives p_i
                # (object at i), p_b (empty scene: the background of Fig 3A) and, by the null label,
                # the unconditional term. D_b and D_i then come from one net, whose errors off the
                # object cancel in D_b + Σ (D_i − D_b) (Def 5.1) as they would for exact models.
                self.has_empty = bool(schema.get("empty", False))
                self.label_dim = 2 * 2 * self.num_freqs + 1 + int(self.has_empty)
                self.classes = []
            elif self.type in ("color", "class", "multihot"):
                self.classes = list(schema.get("classes") or [])
                if not self.classes:
                    raise ConditionError(f"{self.type} schema {schema!r}: 'classes' must be a non-empty list")
                self.label_dim = len(self.classes)
            else:
                raise ConditionError(f"condition schema type {self.type!r}: expected 'location', 'color', 'class' or 'multihot'")

    #------------------------------------------------------------------
    def _class_index(self, value: Any) -> int:
        if isinstance(value, str):
            if value not in self.classes:
                raise ConditionError(f"class {value!r} not in {self.classes}")
            return self.classes.index(value)
        if isinstance(value, bool) or not isinstance(value, (int,)) and not (hasattr(value, "__index__")):
            raise ConditionError(f"class value {value!r}: expected a name from {self.classes} or an index")
        idx = int(value)
        if not 0 <= idx < len(self.classes):
            raise ConditionError(f"class index {idx} out of range [0, {len(self.classes)})")
        return idx

    def encode(self, value: Any) -> torch.Tensor:
        """One condition value -> float32 Tensor[label_dim]; None -> the null (zeros) label."""
        if value is None or self.label_dim == 0:
            if value is not None:
                raise ConditionError(f"condition {value!r} given to an unconditional network")
            return torch.zeros(self.label_dim)
        if self.type == "location":
            if isinstance(value, str):
                if value == "empty" and self.has_empty:
                    v = torch.zeros(self.label_dim)
                    v[-1] = 1.0
                    return v
                raise ConditionError(f"location {value!r}: expected (x, y) floats in [0, 1]"
                                     + (" or 'empty'" if self.has_empty else ""))
            try:
                xy = [float(v) for v in value]
            except (TypeError, ValueError):
                raise ConditionError(f"location {value!r}: expected (x, y) floats in [0, 1]") from None
            if len(xy) != 2 or not all(math.isfinite(v) for v in xy):
                raise ConditionError(f"location {value!r}: expected (x, y) floats in [0, 1]")
            if not all(-0.25 <= v <= 1.25 for v in xy):
                raise ConditionError(f"location {value!r}: coordinates must lie in [0, 1] (image units)")
            feats = []
            for c in xy:
                for k in range(self.num_freqs):
                    f = math.pi * (2 ** k)
                    feats += [math.cos(f * c), math.sin(f * c)]
            feats.append(1.0)  # presence flag: real locations are never the null vector
            if self.has_empty:
                feats.append(0.0)
            v = torch.tensor(feats, dtype=torch.float32)
            return v / math.sqrt(2 * self.num_freqs + 1)
        if self.type in ("color", "class"):
            v = torch.zeros(self.label_dim)
            v[self._class_index(value)] = 1.0
            return v
        if self.type == "multihot":
            items = [value] if isinstance(value, (str, int)) else list(value)
            if not items:
                raise ConditionError("multihot condition: an empty set would be the null label; pass None")
            v = torch.zeros(self.label_dim)
            for it in items:
                v[self._class_index(it)] = 1.0
            return v / v.norm()
        raise AssertionError(self.type)

    def encode_batch(self, values: Sequence[Any]) -> torch.Tensor:
        if self.label_dim == 0:
            return torch.zeros(len(values), 0)
        return torch.stack([self.encode(v) for v in values]) if len(values) else torch.zeros(0, self.label_dim)


def make_condition_encoder(schema: Optional[dict]) -> ConditionEncoder:
    return ConditionEncoder(schema)
