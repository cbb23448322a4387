"""Condition encoders: user-level condition values -> the network's label vector.

One encoder per condition SCHEMA (docs/design.md):
    {"type": "location", "dim": 2}                 (x, y) in [0, 1], x right, y down
        optional keys: "empty": true      one more label, the empty scene ("empty")
                       "colors": [...]    a colour per object: {"xy": (x, y), "color": c},
                                          {"color": c} (an object of colour c anywhere) or
                                          (x, y) (an object of any colour at (x, y))
                       "encoding": "map"  also give the location as an image-sized map
                       "map_sigma": s     the map's bump width, in image widths
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

Location as a map ("encoding": "map"). A conv net turns a global vector into a position only
from border and padding cues (the CoordConv failure, Liu et al. 2018) and learns it slowly. With
the map encoding the network ALSO receives one extra input channel: a Gaussian bump of width
`map_sigma` (image widths) centred on the requested (x, y), zeros where the label has no place
(the null label, the empty scene, a colour without a place). The map is computed from the label
vector inside the network (`location_map`), so composition, samplers and every caller pass the
same label vectors as before; Def 5.1 is unchanged, only each term's encoding is.

The place ONLY as a map ("encoding": "map-only"): the same bump channel, and the global embedding
no longer hears (x, y): its location features are zeroed before the embedding except the presence
flag (which tells "an object somewhere" from the null label). Every placed term then differs from
another, and from the empty scene, by the same global vector; where its object is must come from
the map, whose influence is local. Measured against "map" in docs/clevr-models.md.

Colour as a map too ("encoding": "map-color", needs "colors"). The same bump, and beside it one
channel per palette colour holding the bump where that colour is asked for (zeros elsewhere): the
colour reaches the pixels it is for, as the place does, instead of only through the global
embedding. Measured (docs/clevr-models.md): with the colour only global, a single conditional
"red object at xy" drew the asked colour in well under half the samples.

The place and colour ONLY where they are ("encoding": "map-local"). What Def 5.1 multiplies is
D_i - D_b; Def 5.2 makes it exact when the two differ only on term i's own pixels. With "map" or
"map-only" a placed term and the empty scene differ in the global embedding, which scales channels
in every block at every pixel, so their difference starts out global and the net has to learn to
cancel it away from the object (the leak, measured in docs/clevr-models.md). With "map-local" a
placed label's global embedding IS its background's: the empty scene's with "empty": true (Fig 3A),
else the null label's (zeros; Fig 3C, whose background p_b is the null label of the clutter net:
objects at a place among 0-4 others vs 1-5 objects anywhere). The place and colour reach the net
only as the bump and the bump in the asked colour's channel (as "map-color"): term and background
then see the same input everywhere but near the term's place, so locality is where the net
starts, not what it must learn. With "empty" the null label (p_u) and colour-only labels keep
their global embeddings; without it a placed label is told from the null label by the map alone.

A colour with no place ("color_only": "map", only with colour maps): "an object of colour c
anywhere" reaches the net by its global embedding and, with this key, also as c's colour channel
held at 1 over the whole image (no bump: there is no place). Without the key (every checkpoint
before it) a colour-only label has all-zero maps. Measured in docs/clevr-models.md.

Colour per object ("colors"). The label is [location features / sqrt(2K+1), one-hot colour],
scaled to unit norm: location only, colour only and both all have unit norm, and dropping a
part during training (zeroing it) gives the other conditionals of the SAME net: p(object at xy),
p(object of colour c), p(object of colour c at xy), p(empty scene) and the null label p_u.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from ..errors import ProjcompError

__all__ = ["ConditionError", "ConditionEncoder", "make_condition_encoder", "LOCATION_FREQUENCIES",
           "MAP_SIGMA"]

LOCATION_FREQUENCIES = 4  # K above: label_dim = 4K + 1 = 17 for a location.
MAP_SIGMA = 1.5 / 32      # Default bump width of the location map: 1.5 px at 32 x 32.
ENCODINGS = ("global", "map", "map-color", "map-only", "map-local")  # How a location label reaches the net (see above).


class ConditionError(ProjcompError, ValueError):
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
                self.colors = list(schema.get("colors") or [])
                self.encoding = schema.get("encoding", "global")
                if self.encoding not in ENCODINGS:
                    raise ConditionError(f"location schema encoding={self.encoding!r}: expected one of {ENCODINGS}")
                if self.encoding == "map-color" and not self.colors:
                    raise ConditionError("location schema encoding='map-color' needs 'colors': no colour per object to map")
                self.map_sigma = float(schema.get("map_sigma", MAP_SIGMA))
                if not (math.isfinite(self.map_sigma) and self.map_sigma > 0):
                    raise ConditionError(f"location schema map_sigma={self.map_sigma!r}: must be a positive width")
                self.loc_dim = 2 * 2 * self.num_freqs + 1
                self.label_dim = self.loc_dim + len(self.colors) + int(self.has_empty)
                self.classes = list(self.colors)
                # One channel per palette colour beside the bump ("map-color", "map-local" with colours).
                self.color_maps = self.encoding in ("map-color", "map-local") and bool(self.colors)
                # How a colour-only label ("an object of colour c anywhere") reaches the net: only its
                # global embedding ("global", every net before this key), or also its colour channel
                # held at 1 over the whole image ("map": no bump, since there is no place).
                self.color_only = schema.get("color_only", "global")
                if self.color_only not in ("global", "map"):
                    raise ConditionError(f"location schema color_only={self.color_only!r}: expected 'global' or 'map'")
                if self.color_only == "map" and not self.color_maps:
                    raise ConditionError("location schema color_only='map' needs colour maps (encoding 'map-color' or "
                                         "'map-local' with 'colors')")
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
            return self._encode_location(value)
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

    def _location_features(self, value: Any) -> torch.Tensor:
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
        return torch.tensor(feats, dtype=torch.float32) / math.sqrt(2 * self.num_freqs + 1)

    def _encode_location(self, value: Any) -> torch.Tensor:
        v = torch.zeros(self.label_dim)
        if isinstance(value, str):
            if value == "empty" and self.has_empty:
                v[-1] = 1.0
                return v
            raise ConditionError(f"location {value!r}: expected (x, y) floats in [0, 1]"
                                 + (" or 'empty'" if self.has_empty else "")
                                 + (" or {'xy': (x, y), 'color': c}" if self.colors else ""))
        xy, color = value, None
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"xy", "color"})
            if unknown:
                raise ConditionError(f"condition {value!r}: unknown key {unknown[0]!r} (expected 'xy' and/or 'color')")
            xy, color = value.get("xy"), value.get("color")
            if xy is None and color is None:
                raise ConditionError(f"condition {value!r}: give 'xy', 'color' or both (None is the null label)")
        if color is not None and not self.colors:
            raise ConditionError(f"condition {value!r}: this network has no colour per object (its schema has no 'colors')")
        if xy is not None:
            v[:self.loc_dim] = self._location_features(xy)
        if color is None:
            return v  # the location features alone already have unit norm
        v[self.loc_dim + self._class_index(color)] = 1.0
        return v / v.norm()

    def location_map(self, labels: torch.Tensor, resolution: int, sigma: Optional[float] = None) -> torch.Tensor:
        """Label vectors [B, label_dim] -> location maps [B, map_channels, R, R]: the bump (the "map"
        encoding), then for "map-color" the bump once more in the asked colour's channel. `sigma`
        (image widths) overrides the schema's `map_sigma` (the training loss's place weight uses it).

        (x, y) is read back from the k = 0 (cos, sin) pair (x = atan2(sin, cos) / pi, which is
        exact on the accepted range [-0.25, 1.25]); rows without the presence flag (null label,
        empty scene, colour only) give zeros. Pixel i covers [i, i + 1) / R: its centre is at
        (i + 0.5) / R, the convention of the scenes' pixel_coords.
        """
        B = labels.shape[0]
        labels = labels.float()
        K = self.num_freqs
        present = labels[:, 4 * K] > 1e-6
        coords = []
        for j in range(2):  # x then y
            c, s_ = labels[:, 2 * K * j], labels[:, 2 * K * j + 1]
            t = torch.atan2(s_, c) / math.pi
            coords.append(torch.where(t < -0.5, t + 2, t))
        width = self.map_sigma if sigma is None else float(sigma)
        grid = (torch.arange(resolution, device=labels.device, dtype=torch.float32) + 0.5) / resolution
        gx = torch.exp(-0.5 * ((grid[None, :] - coords[0][:, None]) / width) ** 2)  # [B, R]
        gy = torch.exp(-0.5 * ((grid[None, :] - coords[1][:, None]) / width) ** 2)
        m = (gy[:, :, None] * gx[:, None, :] * present[:, None, None].float())[:, None]  # [B, 1, R, R]
        if self.color_maps:
            # The one-hot colour part of the label (scaled by the unit-norm rule; zeros = any colour).
            onehot = (labels[:, self.loc_dim:self.loc_dim + len(self.colors)] > 1e-6).float()
            cm = m * onehot[:, :, None, None]
            if self.color_only == "map":  # colour, no place: the colour's channel is 1 everywhere
                anywhere = (~present).float()[:, None, None, None] * onehot[:, :, None, None]
                cm = cm + anywhere.expand(-1, -1, resolution, resolution)
            m = torch.cat([m, cm], dim=1)
        return m

    @property
    def map_channels(self) -> int:
        """Extra input channels the network needs for this schema (1 for a location map, 1 + the
        palette size with colour maps)."""
        if self.type != "location" or self.encoding == "global":
            return 0
        return 1 + (len(self.colors) if self.color_maps else 0)

    def global_part(self, labels: torch.Tensor) -> torch.Tensor:
        """What the global label embedding hears: the labels, or for "map-only" the labels with the
        location features zeroed but for the presence flag (the place then reaches the net only as the map),
        or for "map-local" the background's label on every placed row -- the empty scene's, or without
        one the null label's (place and colour only as maps)."""
        if self.type != "location" or self.encoding not in ("map-only", "map-local"):
            return labels
        out = labels.clone()
        if self.encoding == "map-only":
            out[:, :4 * self.num_freqs] = 0
            return out
        # map-local: every placed row (presence flag on) hears what the background of its setting
        # hears: the empty scene (Fig 3A) when the schema has it, else the null label (zeros: the
        # cluttered p_b of Fig 3C is the null label of the same net).
        placed = labels[:, 4 * self.num_freqs] > 1e-6
        out[placed] = self.encode("empty").to(out) if self.has_empty else 0
        return out

    def without(self, labels: torch.Tensor, part: str) -> torch.Tensor:
        """Labels with one part dropped ('color' or 'location'), renormalised to unit norm; rows
        that then have nothing left (or are the empty scene) are returned unchanged, so that
        dropping a part never turns a label into the null label or into something else."""
        if self.type != "location" or not self.colors:
            raise ConditionError(f"dropping {part!r}: only a location schema with 'colors' has parts")
        out = labels.clone()
        if part == "color":
            out[:, self.loc_dim:self.loc_dim + len(self.colors)] = 0
        elif part == "location":
            out[:, :self.loc_dim] = 0
        else:
            raise ConditionError(f"part {part!r}: expected 'color' or 'location'")
        n = out.norm(dim=1, keepdim=True)
        ok = (n[:, 0] > 1e-6)
        if self.has_empty:
            ok &= labels[:, -1] == 0
        return torch.where(ok[:, None], out / n.clamp_min(1e-12), labels)

    def encode_batch(self, values: Sequence[Any]) -> torch.Tensor:
        if self.label_dim == 0:
            return torch.zeros(len(values), 0)
        return torch.stack([self.encode(v) for v in values]) if len(values) else torch.zeros(0, self.label_dim)


def make_condition_encoder(schema: Optional[dict]) -> ConditionEncoder:
    return ConditionEncoder(schema)
