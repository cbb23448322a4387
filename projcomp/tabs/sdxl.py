"""The SDXL prompts tab, without UI code: whether a model can run here (one plain sentence),
the prompts table, a cached pipeline, composition with progress."""

from __future__ import annotations

import os
import threading
from typing import Sequence

from .common import MAX_WEIGHT, SEED_MAX, InputError, blank, gpu_available, integer, table_rows, weight

MAX_PROMPTS = 6
DEFAULT_PROMPTS = [["photo of a dog", 1.0], ["photo, with red hat", 1.0]]
EXAMPLES = [
    dict(label="dog + red hat", prompts=[["photo of a dog", 1.0], ["photo, with red hat", 1.0]], background=""),
    dict(label="dog, NOT grass", prompts=[["photo of a dog", 1.0], ["grass", -0.5]], background=""),
    dict(label="cat + sunglasses over 'a photo'", prompts=[["a photo of a cat", 1.0], ["a photo, sunglasses", 1.0]],
         background="a photo"),
]


def models(extra: str = "") -> list:
    """The allow-list, plus local pipeline folders named in `extra` (os.pathsep-separated)."""
    from ..sdxl import ALLOWED_MODELS
    return sorted(ALLOWED_MODELS) + [p for p in (extra or "").split(os.pathsep) if p]


def status(model: str, allowed: Sequence[str]) -> tuple:
    """(can run here, one plain sentence). Weights must be on disk (a local folder or the HF cache)
    or the app must run on a GPU (then they are downloaded on first use)."""
    if model not in allowed:
        return False, f"{model} is not in the allow-list."
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "model_index.json")):
            return False, f"{model} is a folder without model_index.json, so it is not a diffusers pipeline."
        return True, f"Ready: local pipeline {model}."
    cached = False
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(model, "model_index.json"), str) and \
            isinstance(try_to_load_from_cache(model, "unet/config.json"), str)
    except Exception:
        cached = False
    if cached and gpu_available():
        return True, f"Ready: {model} is in the Hugging Face cache and a GPU is available."
    if cached:
        return True, f"Ready, slowly: {model} is in the Hugging Face cache but there is no GPU (minutes per image)."
    if gpu_available():
        return True, f"Ready: a GPU is available; {model} (~7 GB) is downloaded on first use."
    return False, (f"Disabled here: SDXL needs its weights on disk (`hf download {model}`) or a GPU, "
                   "and this machine has neither.")


def parse_prompts(rows) -> tuple:
    prompts, ws = [], []
    for i, row in enumerate(table_rows(rows)):
        if not row or blank(row[0]):
            continue
        w = 1.0 if len(row) < 2 or blank(row[1]) else weight(row[1], f"prompt {i + 1} weight")
        prompts.append(str(row[0]).strip())
        ws.append(w)
    if not prompts:
        raise InputError("prompts", "the list is empty; add at least one prompt")
    if len(prompts) > MAX_PROMPTS:
        raise InputError("prompts", f"{len(prompts)} given, at most {MAX_PROMPTS} are allowed")
    return prompts, ws


def check_request(rows, background, steps, seed, samples, model, allowed) -> tuple:
    prompts, ws = parse_prompts(rows)
    steps = integer(steps, "steps", 1, 100)
    seed = integer(seed, "seed", 0, SEED_MAX)
    samples = integer(samples, "samples", 1, 4)
    if model not in allowed:
        raise InputError("model", f"{model!r} is not in the allow-list {list(allowed)}")
    ok, msg = status(model, allowed)
    if not ok:
        raise InputError("model", msg)
    return prompts, ws, str(background or ""), steps, seed, samples, model


_PIPES: dict = {}
_PIPE_LOCK = threading.Lock()


def pipeline(model: str):
    """One loaded pipeline at a time (SDXL needs ~7 GB)."""
    from ..sdxl import load_pipeline

    with _PIPE_LOCK:
        if model not in _PIPES:
            _PIPES.clear()
            _PIPES[model] = load_pipeline(model)
        return _PIPES[model]


def heuristic(rows, background, model, allowed) -> tuple:
    """(heatmap figure, markdown): Lemma 8.1 in CLIP text space."""
    import torch
    from ..sdxl import prompt_heuristic
    from .common import cosine_heatmap

    prompts, _ = parse_prompts(rows)
    if len(prompts) < 2:
        raise InputError("prompts", "the heuristic needs at least two prompts")
    if model not in allowed:
        raise InputError("model", f"{model!r} is not in the allow-list {list(allowed)}")
    ok, msg = status(model, allowed)
    if not ok:
        raise InputError("model", msg)
    res = prompt_heuristic(pipeline(model), prompts, background=background or "")
    fig = cosine_heatmap(res["names"], torch.tensor(res["matrix"]), title="cos(μ_i − μ_b), CLIP text")
    v = res["verdict"]
    return fig, (f"**{v['summary']}** (max |cos| {v['max_abs_cos']:.2f}, "
                 f"threshold {v['threshold']})")


def compose(prompts, ws, background, steps, seeds, model, callback=None):
    """(images, seconds, UNet calls)."""
    import time
    from ..sdxl import ComposeSpec, compose as sdxl_compose

    spec = ComposeSpec(prompts=list(prompts), weights=list(ws), background=background, steps=steps,
                       seeds=list(seeds), model=model).validate()
    pipe = pipeline(model)
    t0 = time.perf_counter()
    res = sdxl_compose(pipe, spec, callback=callback)
    return res.images, time.perf_counter() - t0, res.num_unet_calls


_ = MAX_WEIGHT
