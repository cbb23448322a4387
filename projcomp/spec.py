"""A JSON-serialisable composition spec: what to compose, with what, and how to sample it.

One format for the CLI (`python -m projcomp.generate SPEC.json`), the app and the evaluation, and
written beside every output so each image can be reproduced:

    {"background": {"model": "empty"},
     "terms": [{"model": "location", "cond": [0.3, 0.6], "weight": 1.0}, ...],
     "sampler": {"num_steps": 32, "solver": "heun", ...},
     "seeds": [0, 1, 2, 3]}

Models are referred to by name and resolved against a registry (name -> denoiser) at build time,
so a spec never embeds weights. The "Bayes composition" is the same spec with the background
replaced by the unconditional term (e.g. {"model": "location", "cond": null}).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Optional

from .compose import ComposedDenoiser, CompositionError, Term, compose
from .sampling import SamplerConfig, SamplingError

__all__ = ["TermSpec", "CompositionSpec"]


@dataclasses.dataclass
class TermSpec:
    model: str                 # Registry name of the network (e.g. a checkpoint folder name).
    cond: Any = None           # JSON condition value (location [x, y], colour name, prompt, ...) or None = null label.
    weight: float = 1.0        # w_i of Def 5.1.
    name: Optional[str] = None  # Display name.

    @classmethod
    def from_dict(cls, d: Any, field: str) -> "TermSpec":
        if isinstance(d, str):
            d = {"model": d}
        if not isinstance(d, Mapping):
            raise CompositionError(f"{field}: expected an object with a 'model' key, got {d!r}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise CompositionError(f"{field}: unknown key(s) {sorted(unknown)}")
        if not isinstance(d.get("model"), str) or not d["model"]:
            raise CompositionError(f"{field}.model: a network name is required, got {d.get('model')!r}")
        w = d.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise CompositionError(f"{field}.weight: {w!r} is not a finite number")
        return cls(model=d["model"], cond=d.get("cond"), weight=float(w), name=d.get("name"))


@dataclasses.dataclass
class CompositionSpec:
    background: TermSpec                                              # p_b: the empty scene, or p_u for Bayes.
    terms: list                                                       # [TermSpec] p_1..p_k.
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)  # Sampler settings.
    seeds: list = dataclasses.field(default_factory=lambda: [0])      # One image per seed.

    # -- validation / (de)serialisation ------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any) -> "CompositionSpec":
        if not isinstance(d, Mapping):
            raise CompositionError(f"spec: expected a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"background", "terms", "sampler", "seeds", "meta"}
        if unknown:
            raise CompositionError(f"spec: unknown key(s) {sorted(unknown)}")
        if "background" not in d:
            raise CompositionError("background: missing (use the unconditional term for the Bayes composition)")
        terms = d.get("terms")
        if not isinstance(terms, list) or len(terms) == 0:
            raise CompositionError("terms: a composition needs a non-empty list of terms")
        sampler = d.get("sampler", {}) or {}
        if not isinstance(sampler, Mapping):
            raise CompositionError("sampler: expected an object")
        fields = {f.name for f in dataclasses.fields(SamplerConfig)}
        bad = set(sampler) - fields
        if bad:
            raise CompositionError(f"sampler: unknown key(s) {sorted(bad)}")
        try:
            scfg = SamplerConfig(**sampler).validate()
        except SamplingError as e:
            raise CompositionError(f"sampler.{e}") from None
        seeds = d.get("seeds", [0])
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise CompositionError(f"seeds: {seeds!r} must be a non-empty list of non-negative integers")
        return cls(
            background=TermSpec.from_dict(d["background"], "background"),
            terms=[TermSpec.from_dict(t, f"terms[{i}]") for i, t in enumerate(terms)],
            sampler=scfg,
            seeds=list(seeds),
        )

    @classmethod
    def from_json(cls, text: str) -> "CompositionSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CompositionError(f"spec: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return {
            "background": dataclasses.asdict(self.background),
            "terms": [dataclasses.asdict(t) for t in self.terms],
            "sampler": dataclasses.asdict(self.sampler),
            "seeds": list(self.seeds),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    # -- building ---------------------------------------------------------------------------
    def build(self, models: Mapping[str, Any], max_batch: int = 256) -> ComposedDenoiser:
        """Resolve model names against `models` and return the composed denoiser (Def 5.1)."""

        def resolve(t: TermSpec, field: str) -> Term:
            if t.model not in models:
                raise CompositionError(f"{field}.model: unknown network {t.model!r} (known: {sorted(models)})")
            return Term(models[t.model], t.cond, t.weight, t.name)

        bg = resolve(self.background, "background")
        terms = [resolve(t, f"terms[{i}]") for i, t in enumerate(self.terms)]
        return compose(bg, terms, max_batch=max_batch)

    def bayes(self, unconditional: TermSpec) -> "CompositionSpec":
        """The same spec over another background (e.g. the unconditional term: §3's Bayes composition)."""
        return dataclasses.replace(self, background=unconditional)
