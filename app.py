"""Projective composition of diffusion models — the interactive demo (Bradley et al., ICML 2025).

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT / GRADIO_SERVER_NAME respected)

UI only: layout, events and input checks. Every image, table and figure comes from
`projcomp.demo` (which calls the composition operator, the samplers, the detector and the theory
lab). Checkpoints: $PROJCOMP_CHECKPOINTS (a folder of checkpoint folders or a Hub repo id),
default `checkpoints/`. On a ZeroGPU Space the sampling functions run under `spaces.GPU` with a
duration computed from steps × terms.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
import traceback

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA.
    import spaces  # type: ignore
except ImportError:
    spaces = None

import gradio as gr
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
# Import pyplot once, now: Gradio switches the matplotlib backend around every event, and a
# first import of pyplot inside one event races with that switch in another (half-imported module).
import matplotlib.pyplot  # noqa: E402,F401

from projcomp import demo as pcd  # every panel is computed there (no UI code)
from projcomp.clevr.scene import CLEVR_COLORS
from projcomp.experiments import SETTINGS, random_locations
from projcomp.sampling import bf16_is_fast

# ---------------------------------------------------------------------------------------------
# Configuration (environment).

CONCURRENCY = max(1, int(os.environ.get("PROJCOMP_CONCURRENCY", "2")))   # sampling jobs at once
QUEUE_SIZE = max(1, int(os.environ.get("PROJCOMP_QUEUE_SIZE", "16")))    # waiting requests beyond that
THREADS = int(os.environ.get("PROJCOMP_THREADS", "0")) or max(1, (os.cpu_count() or 1) // CONCURRENCY)
torch.set_num_threads(THREADS)  # one job per core: OpenMP threads oversubscribed on a shared CPU crawl
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Sample the two sides of the comparison in two threads when a core is free for each.
PARALLEL_SIDES = DEVICE == "cpu" and THREADS == 1 and (os.cpu_count() or 1) >= 2
SEED_MAX = 2**31 - 1
# bf16 autocast is on by default only where it is faster (CUDA, or a CPU with AVX512-BF16 / AMX).
BF16_FAST = bf16_is_fast(DEVICE)
BF16_LABEL = "bfloat16" + (" (faster here)" if BF16_FAST else " (slower here: this CPU has no bf16 instructions)")

# ---------------------------------------------------------------------------------------------
# Checkpoints: found once at start; a missing role disables what needs it, with a message.

PROBLEMS: list = []
try:
    ROOT = pcd.resolve_checkpoints()
except pcd.DemoError as e:
    ROOT = os.environ.get("PROJCOMP_CHECKPOINTS") or "checkpoints"
    PROBLEMS.append(str(e))
ZOO, _bad = pcd.open_zoo(ROOT)
PROBLEMS += _bad
STATUS = pcd.zoo_status(ZOO)
RANDOM_WEIGHTS = any(cfg.get("random_weights") for cfg in ZOO.entries.values())
os.environ["GRADIO_EXAMPLES_CACHE"] = os.path.join(
    os.environ.get("GRADIO_EXAMPLES_CACHE", os.path.join(".gradio", "cached_examples")), pcd.fingerprint(ROOT))


def _preload() -> None:
    """Load the default composition's nets and run one step, so the first click is fast. On a GPU
    (ZeroGPU included) every net is moved to CUDA here, at import time, as ZeroGPU requires."""
    roles = ["empty", "location", "clutter", "color"] if DEVICE == "cuda" else ["empty", "location"]
    for role in roles:
        name = STATUS["roles"].get(role)
        if not name:
            continue
        try:
            net = ZOO.get(name)
            if DEVICE == "cuda":
                net.to(DEVICE)
        except Exception as e:  # a corrupt checkpoint: reported when it is used
            print(f"[app] could not preload {name}: {e}", file=sys.stderr)
            return
    try:  # the colour tab's histograms / heuristic data (rendered once, cached on disk)
        pcd.color_statistics(_color_resolution())
    except Exception as e:
        print(f"[app] colour statistics failed: {e}", file=sys.stderr)
    if STATUS["settings"]["A"] and DEVICE == "cpu":
        try:
            pcd.clevr_compose(ZOO, [[0.5, 0.6]], [1.0], "empty", 1, 0, 1, True)
        except Exception as e:
            print(f"[app] warm-up failed: {e}", file=sys.stderr)


def gpu(duration):
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; a no-op elsewhere."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


# ---------------------------------------------------------------------------------------------
# Input checks: every value from the browser or the API is checked here with a clear message.

_USER_ERRORS = (ValueError, TypeError, KeyError)


def guard(fn):
    """Show user errors as a message (gr.Error), never a traceback; the server keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except _USER_ERRORS as e:
            raise gr.Error(str(e), title="Cannot run this") from None
        except Exception as e:  # a bug or an environment problem: say what, log the rest
            traceback.print_exc()
            raise gr.Error(f"{type(e).__name__}: {e}", title="Something went wrong") from None
    return wrapper


def _number(v, name: str) -> float:
    if isinstance(v, bool):
        raise gr.Error(f"{name}: {v!r} is not a number")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise gr.Error(f"{name}: {v!r} is not a number") from None
    if not math.isfinite(f):
        raise gr.Error(f"{name}: {v!r} is not a finite number")
    return f


def _int(v, name: str, lo: int, hi: int) -> int:
    f = _number(v, name)
    if f != int(f):
        raise gr.Error(f"{name}: {v!r} must be a whole number")
    if not lo <= f <= hi:
        raise gr.Error(f"{name}: {int(f)} is out of range (allowed {lo} to {hi})")
    return int(f)


def _blank(c) -> bool:
    return c is None or (isinstance(c, str) and c.strip() == "")


def parse_objects(rows) -> tuple[list, list]:
    """The objects table -> ([(x, y)], [w]); x, y in [0, 1], |w| <= MAX_WEIGHT, at most MAX_OBJECTS."""
    if rows is None:
        return [], []
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame (API callers)
        rows = rows.values.tolist()
    if isinstance(rows, dict):  # {"headers": [...], "data": [...]} from the API
        rows = rows.get("data") or []
    locs, ws = [], []
    for i, row in enumerate(rows):
        row = list(row) if isinstance(row, (list, tuple)) else [row]
        if all(_blank(c) for c in row):
            continue
        if len(row) < 2:
            raise gr.Error(f"object {i + 1}: needs x, y (and a weight), got {row!r}")
        x = _number(row[0], f"object {i + 1} x")
        y = _number(row[1], f"object {i + 1} y")
        w = 1.0 if len(row) < 3 or _blank(row[2]) else _number(row[2], f"object {i + 1} weight")
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise gr.Error(f"object {i + 1}: ({x:g}, {y:g}) is outside the image (x and y must be in [0, 1])")
        if abs(w) > pcd.MAX_WEIGHT:
            raise gr.Error(f"object {i + 1} weight: {w:g} is too large (|w| <= {pcd.MAX_WEIGHT:g})")
        locs.append([x, y])
        ws.append(w)
    if len(locs) > pcd.MAX_OBJECTS:
        raise gr.Error(f"objects: {len(locs)} placed, at most {pcd.MAX_OBJECTS} are allowed")
    return locs, ws


OBJECT_HEADERS = ["x", "y", "weight"]


def _rows(locs, ws) -> dict:
    """Objects table value; headers always sent along (an empty table keeps its columns)."""
    return {"headers": OBJECT_HEADERS, "data": [[round(x, 3), round(y, 3), float(w)] for (x, y), w in zip(locs, ws)]}


def _scene(locs, ws) -> np.ndarray:
    return pcd.draw_requests(pcd.empty_scene(pcd.DISPLAY), locs, ws, pcd.DISPLAY)


# ---------------------------------------------------------------------------------------------
# CLEVR objects tab.

BG_CHOICES = [("Empty scene — projective (Fig 3A)", "empty"),
              ("Unconditional — Bayes (Fig 3B)", "bayes"),
              ("Cluttered scenes (Fig 3C)", "clutter")]
BG_AVAILABLE = [(label, key) for label, key in BG_CHOICES if STATUS["backgrounds"][key]]
# In the front half of the floor, where CLEVR objects are largest (at 32×32 a far object is 2 px).
DEFAULT_OBJECTS = [[0.3, 0.55, 1.0], [0.7, 0.55, 1.0], [0.5, 0.75, 1.0]]


@guard
def add_object(x, y, weight, rows):
    """Append an object at (x, y) in [0, 1] with a weight."""
    locs, ws = parse_objects(rows)
    if len(locs) >= pcd.MAX_OBJECTS:
        raise gr.Error(f"objects: at most {pcd.MAX_OBJECTS} are allowed; remove one first")
    x, y, w = _number(x, "x"), _number(y, "y"), _number(weight, "weight")
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise gr.Error(f"({x:g}, {y:g}) is outside the image (x and y must be in [0, 1])")
    if abs(w) > pcd.MAX_WEIGHT:
        raise gr.Error(f"weight: {w:g} is too large (|w| <= {pcd.MAX_WEIGHT:g})")
    locs.append([x, y])
    ws.append(w)
    return _rows(locs, ws), _scene(locs, ws)


def on_scene_click(rows, evt: gr.SelectData):
    if evt is None or evt.index is None:
        return gr.skip(), gr.skip()
    px, py = evt.index[:2]
    return add_object(px / pcd.DISPLAY, py / pcd.DISPLAY, 1.0, rows)


@guard
def remove_object(index, rows):
    """Remove object number `index` (1-based); 0 or empty removes the last one."""
    locs, ws = parse_objects(rows)
    if not locs:
        raise gr.Error("objects: nothing to remove")
    i = len(locs) if _blank(index) else _int(index, "object number", 0, len(locs))
    i = len(locs) if i == 0 else i
    del locs[i - 1], ws[i - 1]
    return _rows(locs, ws), _scene(locs, ws)


@guard
def clear_objects():
    return _rows([], []), _scene([], [])


@guard
def random_objects(k, seed, rows):
    """k locations drawn by the CLEVR scene sampler (valid, visible, separated), weight 1."""
    k = _int(k, "k", 1, pcd.MAX_OBJECTS)
    seed = _int(seed, "seed", 0, SEED_MAX)
    locs = random_locations(k, seed)
    ws = [1.0] * k
    return _rows(locs, ws), _scene(locs, ws)


@guard
def redraw_scene(rows):
    locs, ws = parse_objects(rows)
    return _scene(locs, ws)


def _clevr_duration(rows, background, steps, seed, samples, bf16, *args, **kwargs):
    try:
        k = len(parse_objects(rows)[0])
        return pcd.gpu_seconds(int(steps), 2 * (k + 1), int(samples), per_row_call=0.003, base=5)
    except Exception:
        return 60


@gpu(_clevr_duration)
@guard
def compose_clevr(rows, background, steps, seed, samples, bf16, progress=gr.Progress()):
    """Sample the composition over the chosen background and its counterpart, same seeds."""
    locs, ws = parse_objects(rows)
    steps = _int(steps, "steps", 1, pcd.MAX_STEPS)
    seed = _int(seed, "seed", 0, SEED_MAX)
    samples = _int(samples, "samples", 1, pcd.MAX_SAMPLES)
    if background not in pcd.BACKGROUNDS:
        raise gr.Error(f"background: {background!r} is not one of {sorted(pcd.BACKGROUNDS)}")
    if not STATUS["backgrounds"][background]:
        raise gr.Error(f"background {background!r} is unavailable: no checkpoint for it in {ROOT!r}")
    progress(0.0, desc="sampling")
    t0 = time.perf_counter()
    res = pcd.clevr_compose(ZOO, locs, ws, background, steps, seed, samples, bool(bf16),
                             progress=lambda f, d: progress(f, desc=d), parallel=PARALLEL_SIDES)
    dt = time.perf_counter() - t0
    left = gr.Image(value=res.panels[res.settings[0]], label=res.titles[0])
    right = (gr.Image(value=res.panels[res.settings[1]], label=res.titles[1]) if len(res.settings) > 1
             else gr.Image(value=None, label="(no counterpart: a checkpoint role is missing)"))
    k = len(locs)
    head = (f"**{k} object{'s' if k != 1 else ''}**, seeds {res.seeds[0]}–{res.seeds[-1]}, "
            f"{steps} Heun steps{' (bf16)' if bf16 else ''}: {dt:.1f} s. "
            "Rings: requested places (green = an object was detected there, red = missed); dots: detections.")
    if k == 0:
        head = f"No objects: samples of the background alone, seeds {res.seeds[0]}–{res.seeds[-1]} ({dt:.1f} s)."
    return left, right, head + "\n\n" + res.summary_markdown()


@guard
def contribution_map(rows, sigma, seed):
    locs, ws = parse_objects(rows)
    sigma = _number(sigma, "sigma")
    if not 0.01 <= sigma <= 80:
        raise gr.Error(f"sigma: {sigma:g} is out of range (0.01 to 80)")
    seed = _int(seed, "seed", 0, SEED_MAX)
    img, locality = pcd.contribution_maps(ZOO, locs, ws, sigma, seed)
    parts = [f"{s}: {100 * float(np.mean(v)):.0f}%" for s, v in locality.items()]
    return img, (f"σ = {sigma:g}. Share of each term's |w_i (D_i − D_b)| within 0.15 image widths of its own "
                 f"object (mean over objects): {', '.join(parts)}.")


# ---------------------------------------------------------------------------------------------
# Colours tab.

COLOR_CLASSES = list(CLEVR_COLORS)
if STATUS["roles"]["color"]:
    COLOR_CLASSES = list((ZOO.entries[STATUS["roles"]["color"]].get("condition") or {}).get("classes") or CLEVR_COLORS)


def _color_resolution() -> int:
    name = STATUS["roles"]["color"]
    return ZOO.resolution_of(name) if name else 32


def _parse_colors(colors) -> list:
    if isinstance(colors, str):
        colors = [colors]
    colors = list(colors or [])
    bad = [c for c in colors if c not in COLOR_CLASSES]
    if bad:
        raise gr.Error(f"colours: {bad} not in {COLOR_CLASSES}")
    if len(colors) < 2:
        raise gr.Error("colours: pick at least two colours to compose")
    return colors


@guard
def color_preview(colors):
    """Fig 5's histograms and the Lemma 8.1 verdict, from rendered data (before sampling)."""
    colors = [c for c in (colors or []) if c in COLOR_CLASSES]
    stats = pcd.color_statistics(_color_resolution())
    hist = pcd.figure_to_image(pcd.color_histogram_figure(colors, stats))
    if len(colors) < 2:
        return hist, None, "Pick two or more colours to see the verdict."
    v = pcd.color_verdict(colors, stats)
    from projcomp.heuristic import heatmap
    heat = pcd.figure_to_image(heatmap(v["names"], v["matrix"], title="cos(μ_c − μ_u) in RGB"))
    verdict = v["verdict"]
    icon = "✅" if verdict["will_compose"] else "⚠️"
    rows = "\n".join(f"| {p['a']} + {p['b']} | {p['cos']:+.2f} | {'yes' if p['composes'] else 'no'} |"
                     for p in verdict["pairs"])
    md = (f"{icon} **Heuristic (Lemma 8.1): {verdict['summary']}** (|cos| ≤ {verdict['threshold']} passes).\n\n"
          "Factorized conditionals have orthogonal mean differences; colour lives in the same three channels for "
          "every object, so colours mostly are *not* factorized (Fig 5).\n\n"
          "| pair | cos | composes? |\n|---|---|---|\n" + rows)
    return hist, heat, md


def _color_duration(colors, weight, steps, seed, samples, bf16, *args, **kwargs):
    try:
        return pcd.gpu_seconds(int(steps), len(colors or []) + 1, int(samples), per_row_call=0.003, base=5)
    except Exception:
        return 60


@gpu(_color_duration)
@guard
def compose_colors(colors, weight, steps, seed, samples, bf16, progress=gr.Progress()):
    if not STATUS["roles"]["color"]:
        raise gr.Error(f"colours: no colour-conditioned checkpoint (dataset preset 'color') in {ROOT!r}")
    colors = _parse_colors(colors)
    w = _number(weight, "weight")
    if abs(w) > pcd.MAX_WEIGHT:
        raise gr.Error(f"weight: {w:g} is too large (|w| <= {pcd.MAX_WEIGHT:g})")
    steps = _int(steps, "steps", 1, pcd.MAX_STEPS)
    seed = _int(seed, "seed", 0, SEED_MAX)
    samples = _int(samples, "samples", 1, pcd.MAX_SAMPLES)
    grid, found, seeds = pcd.color_compose(ZOO, colors, [w] * len(colors), steps, seed, samples, bool(bf16),
                                            progress=lambda f, d: progress(f, desc=d))
    both = sum(all(c in f for c in colors) for f in found)
    lines = [f"**All of {', '.join(colors)} detected in {both} / {len(found)} samples.**", "",
             "| seed | colours detected |", "|---|---|"]
    lines += [f"| {s} | {', '.join(f) or '—'} |" for s, f in zip(seeds, found)]
    return grid, "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# SDXL tab.

from projcomp.sdxl import ALLOWED_MODELS  # noqa: E402

SDXL_MODELS = sorted(ALLOWED_MODELS) + [p for p in os.environ.get("PROJCOMP_SDXL_MODELS", "").split(os.pathsep) if p]
DEFAULT_PROMPTS = [["photo of a dog", 1.0], ["photo, with red hat", 1.0]]


def parse_prompts(rows) -> tuple[list, list]:
    if hasattr(rows, "values") and hasattr(rows, "columns"):
        rows = rows.values.tolist()
    if isinstance(rows, dict):
        rows = rows.get("data") or []
    prompts, ws = [], []
    for i, row in enumerate(rows or []):
        row = list(row) if isinstance(row, (list, tuple)) else [row]
        if not row or _blank(row[0]):
            continue
        w = 1.0 if len(row) < 2 or _blank(row[1]) else _number(row[1], f"prompt {i + 1} weight")
        if abs(w) > pcd.MAX_WEIGHT:
            raise gr.Error(f"prompt {i + 1} weight: {w:g} is too large (|w| <= {pcd.MAX_WEIGHT:g})")
        prompts.append(str(row[0]).strip())
        ws.append(w)
    if not prompts:
        raise gr.Error("prompts: the list is empty; add at least one prompt")
    if len(prompts) > 6:
        raise gr.Error(f"prompts: {len(prompts)} given, at most 6 are allowed")
    return prompts, ws


def _check_model(model) -> str:
    if model not in SDXL_MODELS:
        raise gr.Error(f"model: {model!r} is not in the allow-list {SDXL_MODELS}")
    return model


def sdxl_status(model):
    ok, msg = pcd.sdxl_status(model) if model in SDXL_MODELS else (False, f"`{model}` is not in the allow-list.")
    return ("✅ " if ok else "⛔ ") + msg


def _unavailable(model) -> str | None:
    ok, msg = pcd.sdxl_status(model)
    if ok:
        return None
    gr.Warning(msg.replace("`", ""))
    return "⛔ " + msg


@guard
def sdxl_heuristic(rows, background, model):
    prompts, _ = parse_prompts(rows)
    if len(prompts) < 2:
        raise gr.Error("heuristic: needs at least two prompts")
    model = _check_model(model)
    missing = _unavailable(model)
    if missing:
        return None, missing
    from projcomp.heuristic import heatmap
    from projcomp.sdxl import prompt_heuristic
    res = prompt_heuristic(pcd.sdxl_pipeline(model), prompts, background=background or "")
    img = pcd.figure_to_image(heatmap(res["names"], torch.tensor(res["matrix"]), title="cos(μ_i − μ_b), CLIP text"))
    v = res["verdict"]
    return img, f"{'✅' if v['will_compose'] else '⚠️'} **{v['summary']}** (max |cos| {v['max_abs_cos']:.2f}, threshold {v['threshold']})"


def _sdxl_duration(rows, background, steps, seed, samples, model, *args, **kwargs):
    try:
        return pcd.gpu_seconds(int(steps), len(parse_prompts(rows)[0]), int(samples), per_row_call=0.05, base=20)
    except Exception:
        return 120


@gpu(_sdxl_duration)
@guard
def sdxl_compose(rows, background, steps, seed, samples, model, progress=gr.Progress()):
    from projcomp.sdxl import ComposeSpec, compose as sdxl_compose_fn

    prompts, ws = parse_prompts(rows)
    steps = _int(steps, "steps", 1, 100)
    seed = _int(seed, "seed", 0, SEED_MAX)
    samples = _int(samples, "samples", 1, 4)
    model = _check_model(model)
    spec = ComposeSpec(prompts=prompts, weights=ws, background=background or "", steps=steps,
                       seeds=[seed + i for i in range(samples)], model=model).validate()
    missing = _unavailable(model)
    if missing:
        return [], missing
    progress(0.0, desc="loading the pipeline")
    pipe = pcd.sdxl_pipeline(model)
    t0 = time.perf_counter()
    res = sdxl_compose_fn(pipe, spec, callback=lambda i, n, _lat: progress(i / n, desc=f"step {i}/{n}"))
    dt = time.perf_counter() - t0
    terms = " + ".join(f"{w:g}·[{p}]" for p, w in zip(prompts, ws))
    return ([(im, f"seed {s}") for im, s in zip(res.images, spec.seeds)],
            f"Composed {terms} over background {background!r} in {dt:.1f} s ({res.num_unet_calls} UNet calls).")


# ---------------------------------------------------------------------------------------------
# Theory lab.


@guard
def theory_gauss2d(m1x, m1y, m2x, m2y, mode, samples):
    vals = [_number(v, n) for v, n in ((m1x, "expert 1 x1"), (m1y, "expert 1 x2"), (m2x, "expert 2 x1"), (m2y, "expert 2 x2"))]
    for v in vals:
        if abs(v) > 5:
            raise gr.Error(f"means must lie in [-5, 5], got {v:g}")
    samples = _int(samples, "samples", 16, 1024)
    fig, num = pcd.gauss2d_lab(vals[:2], vals[2:], mode, num_samples=samples)
    md = (f"**{mode}**: exact composed mean ({num['exact_mean'][0]:.2f}, {num['exact_mean'][1]:.2f}), "
          f"sample mean ({num['sample_mean'][0]:.2f}, {num['sample_mean'][1]:.2f}), exact covariance "
          f"{num['exact_cov']}. " + ("Split experts each constrain their own coordinate (Factorized "
          "Conditionals): the composition has both properties at once." if mode == "split" else
          "Shared experts both constrain x1: the composition is a compromise (a hybrid), not both."))
    return pcd.figure_to_image(fig), md


@guard
def theory_appg(which, coords, samples):
    samples = _int(samples, "samples", 8, 512)
    idx = [int(c) for c in (coords or [])]
    num, fig = pcd.appg_heatmaps(which, idx, num_seeds=samples)
    if which == "eq17":
        a, b = num.get("empty", {}), num.get("bayes", {})
        md = "eq. 17 (p_i = δ(e_i)): empty background vs Bayes (p_u)."
    else:
        a, b = num.get("cluttered", {}), num.get("bayes", {})
        md = "eq. 18: independently cluttered background vs Bayes."
    if a and b:
        md += (f" Mean of the composed coordinates: **{a['composed_mean']:.2f}** vs **{b['composed_mean']:.2f}**; "
               f"all requested coordinates on in {100 * a['all_composed_on_rate']:.0f}% vs "
               f"{100 * b['all_composed_on_rate']:.0f}% of samples.")
    return pcd.figure_to_image(fig), md


# ---------------------------------------------------------------------------------------------
# Layout.

CSS = """
.pc-header h1 { margin-bottom: 0.1em; }
.pc-note { font-size: 0.9em; opacity: 0.85; }
#scene img { cursor: crosshair; }
"""

INTRO = """# Projective composition of diffusion models
*Bradley et al., ICML 2025.* Composing diffusion models as D_b + Σ w_i (D_i − D_b) (Def 5.1) gives
**all** the concepts at once when the conditionals are *factorized* against the right
**background** b — for CLEVR objects that is the *empty* scene, not the unconditional model
(Bayes composition). Same seeds, two backgrounds: see for yourself."""


def _status_md() -> str:
    r = STATUS["roles"]
    have = ", ".join(f"{role}: `{n}`" for role, n in r.items() if n) or "none"
    lines = [f"Checkpoints from `{ROOT}` — {have}."]
    others = [r for r in ZOO.resolutions() if r != ZOO.preferred_resolution()]
    if others:
        lines.append("Also on disk at " + ", ".join(f"{r}×{r}" for r in others) + " (slower, sharper): restart with "
                     + " or ".join(f"`PROJCOMP_RESOLUTION={r}`" for r in others) + " to use them.")
    missing = [role for role, n in r.items() if not n]
    if missing:
        lines.append(f"⚠️ Missing role(s): {', '.join(missing)} — the options that need them are disabled.")
    if RANDOM_WEIGHTS:
        lines.append("⚠️ These are **random-weight** test checkpoints: images are noise; the UI works end to end.")
    for p in PROBLEMS:
        lines.append(f"⚠️ {p}")
    return "  \n".join(lines)


def build() -> gr.Blocks:
    with gr.Blocks(title="Projective composition") as app:
        gr.Markdown(INTRO, elem_classes="pc-header")
        gr.Markdown(_status_md(), elem_classes="pc-note")
        with gr.Tabs():
            # ---------------------------------------------------------------- CLEVR objects
            with gr.Tab("CLEVR objects", id="clevr"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=280):
                        scene = gr.Image(value=_scene(*parse_objects(DEFAULT_OBJECTS)), label="Click to place an object",
                                         interactive=False, format="png", height=300, elem_id="scene",
                                         buttons=[], show_label=True)
                        with gr.Row():
                            k = gr.Slider(1, pcd.MAX_OBJECTS, value=4, step=1, label="k", min_width=90, scale=2)
                            loc_seed = gr.Number(value=0, precision=0, label="layout seed", min_width=80, scale=1)
                            rand_btn = gr.Button("k random places", size="sm", scale=2)
                        with gr.Row():
                            remove_idx = gr.Number(value=None, precision=0, label="object # to remove (0 = last)",
                                                   min_width=120, scale=2)
                            remove_btn = gr.Button("Remove", size="sm", scale=1)
                            clear_btn = gr.Button("Clear", size="sm", scale=1)
                    with gr.Column(scale=5, min_width=300):
                        objects = gr.Dataframe(value=DEFAULT_OBJECTS, headers=["x", "y", "weight"],
                                               datatype=["number", "number", "number"], type="array",
                                               column_count=3,
                                               interactive=True, label=f"Objects (x, y in [0, 1]; weight w_i, negative = NOT; max {pcd.MAX_OBJECTS})",
                                               elem_id="objects", max_height=260)
                        background = gr.Radio(BG_AVAILABLE, value=BG_AVAILABLE[0][1] if BG_AVAILABLE else None,
                                              label="Background b", elem_id="background")
                        if len(BG_AVAILABLE) < len(BG_CHOICES):
                            gr.Markdown("Unavailable (no checkpoint): " + ", ".join(
                                label for label, key in BG_CHOICES if not STATUS["backgrounds"][key]), elem_classes="pc-note")
                        with gr.Row():
                            steps = gr.Slider(1, pcd.MAX_STEPS, value=16, step=1, label="Heun steps", min_width=120, elem_id="steps")
                            samples = gr.Slider(1, pcd.MAX_SAMPLES, value=2, step=1, label="samples", min_width=120, elem_id="samples")
                        with gr.Row():
                            seed = gr.Number(value=0, precision=0, label="seed", minimum=0, maximum=SEED_MAX, min_width=80)
                            bf16 = gr.Checkbox(value=BF16_FAST, label=BF16_LABEL, min_width=80)
                        run_btn = gr.Button("Compose", variant="primary", elem_id="run", interactive=bool(BG_AVAILABLE))
                with gr.Row(equal_height=True):
                    left = gr.Image(label="chosen background", format="png", interactive=False, elem_id="left", buttons=["download"])
                    right = gr.Image(label="counterpart, same seeds", format="png", interactive=False, elem_id="right", buttons=["download"])
                hits = gr.Markdown("Press **Compose**: the left panel uses the chosen background, the right one the "
                                   "other side of the comparison with the same seeds.", elem_id="hits")
                with gr.Accordion("Where does each concept act? Contribution maps |w_i (D_i − D_b)|", open=False):
                    gr.Markdown("Each term's push on the denoiser at one noise level σ, evaluated at the empty scene + σ·noise. "
                                "Under the empty background a term only acts near its own object (factorized "
                                "conditionals, Def 5.2); under the Bayes background it also has to erase the object "
                                "p_u would have put anywhere.", elem_classes="pc-note")
                    with gr.Row():
                        sigma = gr.Slider(0.05, 20, value=1.0, step=0.05, label="noise level σ", scale=4)
                        contrib_btn = gr.Button("Show maps", scale=1)
                    contrib = gr.Image(label="contribution maps (one colour scale)", format="png", interactive=False)
                    contrib_md = gr.Markdown()
                clevr_inputs = [objects, background, steps, seed, samples, bf16]
                examples = []
                if STATUS["backgrounds"].get("empty"):
                    examples += [[DEFAULT_OBJECTS, "empty", 16, 0, 4, BF16_FAST],
                                 [_rows(random_locations(6, 3), [1.0] * 6), "empty", 16, 1, 4, BF16_FAST],
                                 [[[0.3, 0.5, 1.0], [0.7, 0.5, 1.0], [0.5, 0.7, -1.0]], "empty", 16, 2, 4, BF16_FAST]]
                if STATUS["backgrounds"].get("clutter"):
                    examples.append([_rows(random_locations(4, 5), [1.0] * 4), "clutter", 16, 0, 4, BF16_FAST])
                if examples:
                    gr.Examples(examples, inputs=clevr_inputs, outputs=[left, right, hits], fn=compose_clevr,
                                cache_examples=True, cache_mode="lazy", label="Examples (cached after the first run)",
                                example_labels=["3 objects, empty vs Bayes", "6 objects", "NOT: negative weight",
                                                "cluttered vs Bayes"][:len(examples)])

                scene.select(on_scene_click, [objects], [objects, scene], api_visibility="private",
                             concurrency_limit=None)
                rand_btn.click(random_objects, [k, loc_seed, objects], [objects, scene], api_name="random_objects",
                               concurrency_limit=None)
                remove_btn.click(remove_object, [remove_idx, objects], [objects, scene], api_name="remove_object",
                                 concurrency_limit=None)
                clear_btn.click(clear_objects, None, [objects, scene], api_name="clear_objects", concurrency_limit=None)
                objects.input(redraw_scene, [objects], [scene], api_name="redraw_scene", concurrency_limit=None,
                              trigger_mode="always_last")
                run_btn.click(compose_clevr, clevr_inputs, [left, right, hits], api_name="compose_clevr",
                              concurrency_id="sampler", concurrency_limit=CONCURRENCY)
                contrib_btn.click(contribution_map, [objects, sigma, seed], [contrib, contrib_md],
                                  api_name="contribution_map", concurrency_id="sampler", concurrency_limit=CONCURRENCY)
                sigma.release(contribution_map, [objects, sigma, seed], [contrib, contrib_md], api_visibility="private",
                              concurrency_id="sampler", concurrency_limit=CONCURRENCY)
                # An API-only endpoint that places an object exactly where a click would.
                ax, ay, aw = gr.Number(visible=False), gr.Number(visible=False), gr.Number(visible=False)
                gr.Button(visible=False).click(add_object, [ax, ay, aw, objects], [objects, scene], api_name="add_object",
                                               concurrency_limit=None)

            # ---------------------------------------------------------------- Colours
            with gr.Tab("Colours (Fig 5)", id="colours"):
                gr.Markdown("Compose colour-conditioned one-object models over their unconditional term. The "
                            "heuristic below (Lemma 8.1) predicts from rendered data, *before* sampling, whether "
                            "the colours are factorized — they mostly share channels, so expect hybrids or failures.",
                            elem_classes="pc-note")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4):
                        colors = gr.CheckboxGroup(COLOR_CLASSES, value=["yellow", "blue"], label="Colours (2 or more)")
                        cweight = gr.Slider(-2, 3, value=1.0, step=0.1, label="weight of every colour term")
                        with gr.Row():
                            csteps = gr.Slider(1, pcd.MAX_STEPS, value=16, step=1, label="Heun steps")
                            csamples = gr.Slider(1, pcd.MAX_SAMPLES, value=4, step=1, label="samples")
                        with gr.Row():
                            cseed = gr.Number(value=0, precision=0, label="seed", minimum=0, maximum=SEED_MAX)
                            cbf16 = gr.Checkbox(value=BF16_FAST, label=BF16_LABEL)
                        crun = gr.Button("Compose colours", variant="primary", interactive=bool(STATUS["roles"]["color"]))
                        if not STATUS["roles"]["color"]:
                            gr.Markdown("⚠️ No colour checkpoint (dataset preset `color`): sampling is disabled; the "
                                        "heuristic still works.")
                    with gr.Column(scale=6):
                        verdict_md = gr.Markdown()
                        heat = gr.Image(label="Lemma 8.1 cosines", format="png", interactive=False, height=240)
                hist = gr.Image(label="Fig 5: per-channel histograms of object pixels (chosen colours bold)",
                                format="png", interactive=False)
                cout = gr.Image(label="composed samples", format="png", interactive=False)
                cmd = gr.Markdown()
                colors.change(color_preview, [colors], [hist, heat, verdict_md], api_name="color_preview",
                              concurrency_limit=None)
                crun.click(compose_colors, [colors, cweight, csteps, cseed, csamples, cbf16], [cout, cmd],
                           api_name="compose_colors", concurrency_id="sampler", concurrency_limit=CONCURRENCY)

            # ---------------------------------------------------------------- SDXL
            with gr.Tab("SDXL prompts", id="sdxl"):
                gr.Markdown("Compose prompts with SDXL: ε_b + Σ w_i (ε_i − ε_b). The background prompt is the "
                            "paper's \"most critical choice\" (empty = unconditional). Runs where the weights are on "
                            "disk or a GPU is available.", elem_classes="pc-note")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        prompts = gr.Dataframe(value=DEFAULT_PROMPTS, headers=["prompt", "weight"],
                                               datatype=["str", "number"], type="array", column_count=2, interactive=True,
                                               label="Prompts and weights (negative = NOT)")
                        sbg = gr.Textbox(value="", label="Background prompt (empty = unconditional)")
                        model = gr.Dropdown(SDXL_MODELS, value=SDXL_MODELS[0], label="Model (allow-list)")
                        model_md = gr.Markdown(sdxl_status(SDXL_MODELS[0]))
                        with gr.Row():
                            ssteps = gr.Slider(1, 100, value=30, step=1, label="steps")
                            ssamples = gr.Slider(1, 4, value=1, step=1, label="samples")
                            sseed = gr.Number(value=0, precision=0, label="seed", minimum=0, maximum=SEED_MAX)
                        with gr.Row():
                            hbtn = gr.Button("Will it compose? (heuristic)")
                            sbtn = gr.Button("Compose", variant="primary")
                    with gr.Column(scale=5):
                        sheat = gr.Image(label="Lemma 8.1 heatmap (CLIP text space)", format="png", interactive=False)
                        sheat_md = gr.Markdown()
                        sgal = gr.Gallery(label="composed images", columns=2, height=400)
                        sout_md = gr.Markdown()
                model.change(sdxl_status, [model], [model_md], api_name="sdxl_status", concurrency_limit=None)
                hbtn.click(sdxl_heuristic, [prompts, sbg, model], [sheat, sheat_md], api_name="sdxl_heuristic",
                           concurrency_id="sdxl", concurrency_limit=1)
                sbtn.click(sdxl_compose, [prompts, sbg, ssteps, sseed, ssamples, model], [sgal, sout_md],
                           api_name="sdxl_compose", concurrency_id="sdxl", concurrency_limit=1)

            # ---------------------------------------------------------------- Theory lab
            with gr.Tab("Theory lab", id="theory"):
                gr.Markdown("Exact scores, no networks: the same operator and sampler as above on distributions "
                            "whose composition is known in closed form.", elem_classes="pc-note")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4):
                        gr.Markdown("**§6.5: 2-D Gaussian experts** over the background N(0, 4I). Expert 1 is narrow in "
                                    "x1; expert 2 is narrow in x2 (*split*) or also in x1 (*shared*).")
                        mode = gr.Radio(["split", "shared"], value="split", label="experts")
                        with gr.Row():
                            m1x = gr.Slider(-5, 5, value=-2, step=0.1, label="expert 1 mean x1")
                            m1y = gr.Slider(-5, 5, value=0, step=0.1, label="expert 1 mean x2")
                        with gr.Row():
                            m2x = gr.Slider(-5, 5, value=0, step=0.1, label="expert 2 mean x1")
                            m2y = gr.Slider(-5, 5, value=2, step=0.1, label="expert 2 mean x2")
                        tsamples = gr.Slider(16, 1024, value=256, step=16, label="samples")
                        tbtn = gr.Button("Compose", variant="primary")
                    with gr.Column(scale=6):
                        tplot = gr.Image(label="composed density (blue), experts (dashed), samples", format="png",
                                         interactive=False)
                        tmd = gr.Markdown()
                gr.Markdown("**App. G (Fig 12):** eight coordinates; p_i switches coordinate i on. Compose a subset "
                            "over the right background (empty, eq. 17; cluttered, eq. 18) vs Bayes (p_u).")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4):
                        which = gr.Radio([("eq. 17: empty background", "eq17"), ("eq. 18: cluttered background", "eq18")],
                                         value="eq17", label="toy")
                        coords = gr.CheckboxGroup([str(i) for i in range(8)], value=["0", "2", "4", "6"],
                                                  label="coordinates to compose")
                        gsamples = gr.Slider(8, 512, value=64, step=8, label="samples")
                        gbtn = gr.Button("Compose", variant="primary")
                    with gr.Column(scale=6):
                        gplot = gr.Image(label="samples (rows) × coordinates", format="png", interactive=False)
                        gmd = gr.Markdown()
                tin = [m1x, m1y, m2x, m2y, mode, tsamples]
                tbtn.click(theory_gauss2d, tin, [tplot, tmd], api_name="theory_gauss2d",
                           concurrency_id="sampler", concurrency_limit=CONCURRENCY)
                for s in (m1x, m1y, m2x, m2y):
                    s.release(theory_gauss2d, tin, [tplot, tmd], api_visibility="private",
                              concurrency_id="sampler", concurrency_limit=CONCURRENCY)
                mode.change(theory_gauss2d, tin, [tplot, tmd], api_visibility="private",
                            concurrency_id="sampler", concurrency_limit=CONCURRENCY)
                gbtn.click(theory_appg, [which, coords, gsamples], [gplot, gmd], api_name="theory_appg",
                           concurrency_id="sampler", concurrency_limit=CONCURRENCY)

        app.load(color_preview, [colors], [hist, heat, verdict_md], api_visibility="private", concurrency_limit=None)
    return app


demo = build()
demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)

if os.environ.get("PROJCOMP_WARMUP", "1") != "0":  # PROJCOMP_WARMUP=0 skips it (tests)
    if DEVICE == "cuda":
        _preload()
    else:
        threading.Thread(target=_preload, daemon=True).start()

if __name__ == "__main__":
    demo.launch(css=CSS, theme=gr.themes.Soft(primary_hue="indigo"), show_error=True)
