"""Shared by the app's tabs: limits, errors and input checks that name the field, checkpoints,
drawing and figure helpers, and sampling streamed from a worker thread (progress + x0 previews)."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import queue
import re
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ..errors import ProjcompError
from ..experiments import SETTINGS
from ..zoo import Zoo, ZooError

MAX_OBJECTS = 10      # Fig 3 goes up to 9; one more for play.
MAX_STEPS = 64        # Heun: 127 network calls; the paper uses 32 steps.
MAX_SAMPLES = 8       # seeds per run.
MAX_WEIGHT = 10.0     # |w_i| cap: beyond it samples leave the data range entirely.
MAX_GUIDANCE = 4.0    # colour guidance cap (README: measured up to 4 on the shipped object net).
SEED_MAX = 2**31 - 1

# UI background choice -> (left setting, right setting). The right panel is always the other side
# of the paper's comparison with the same seeds: Bayes for A and C, the empty background for B.
BACKGROUNDS = {"empty": ("A", "B"), "bayes": ("B", "A"), "clutter": ("C", "B")}

class InputError(ProjcompError):
    """A bad value from the visitor; `field` names the control, and the message starts with it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


DemoError = InputError  # the old name (projcomp.demo)

# What the app shows as a message; anything else is logged with its traceback as an internal error.
USER_ERRORS: tuple = (ProjcompError,)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS)


# ---------------------------------------------------------------------------------------------
# Input checks: every value from the browser or the API; each message names its field.


def blank(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def number(v, field: str, lo: Optional[float] = None, hi: Optional[float] = None) -> float:
    if isinstance(v, bool) or blank(v):
        raise InputError(field, f"{v!r} is not a number")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(field, f"{v!r} is not a number") from None
    if not math.isfinite(f):
        raise InputError(field, f"{v!r} is not a finite number")
    if lo is not None and f < lo:
        raise InputError(field, f"{f:g} is below the minimum {lo:g}")
    if hi is not None and f > hi:
        raise InputError(field, f"{f:g} is above the maximum {hi:g}")
    return f


def integer(v, field: str, lo: int, hi: int) -> int:
    f = number(v, field)
    if f != int(f):
        raise InputError(field, f"{v!r} must be a whole number")
    if not lo <= f <= hi:
        raise InputError(field, f"{int(f)} is out of range (allowed {lo} to {hi})")
    return int(f)


def weight(v, field: str) -> float:
    w = number(v, field)
    if abs(w) > MAX_WEIGHT:
        raise InputError(field, f"{w:g} is too large (|w| <= {MAX_WEIGHT:g})")
    return w


def table_rows(rows) -> list:
    """A Dataframe value (list of rows, {"headers", "data"} or a pandas DataFrame) -> list of lists."""
    if rows is None:
        return []
    if hasattr(rows, "values") and hasattr(rows, "columns"):
        rows = rows.values.tolist()
    if isinstance(rows, dict):
        rows = rows.get("data") or []
    return [list(r) if isinstance(r, (list, tuple)) else [r] for r in rows]


# ---------------------------------------------------------------------------------------------
# Checkpoints.


def resolve_checkpoints(source: Optional[str] = None) -> str:
    """A local folder of checkpoint folders: `source` (or $PROJCOMP_CHECKPOINTS, default
    "checkpoints") as a folder, or a Hub repo id (owner/name) downloaded with snapshot_download."""
    source = source or os.environ.get("PROJCOMP_CHECKPOINTS") or "checkpoints"
    if os.path.isdir(source) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source):
        return source
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(repo_id=source, allow_patterns=["*/config.json", "*/model.safetensors", "*.md"])
    except Exception as e:  # offline, missing repo, ...
        raise InputError("checkpoints", f"{source!r} is not a local folder and could not be downloaded from the "
                         f"Hub ({type(e).__name__}: {e})") from None


def open_zoo(root: str, resolution: Optional[int] = None) -> tuple:
    """A Zoo over `root` and the folders it skipped because their config.json is unreadable.
    `resolution` (or $PROJCOMP_RESOLUTION) picks which checkpoints serve when several exist."""
    env = os.environ.get("PROJCOMP_RESOLUTION", "")
    if resolution is None and env.strip():
        if not env.strip().isdigit():
            raise InputError("PROJCOMP_RESOLUTION", f"{env!r} is not a resolution such as 32 or 64")
        resolution = int(env)
    zoo = Zoo(root, resolution=resolution)
    return zoo, list(zoo.problems.values())


def setting_problem(zoo: Zoo, setting: str) -> Optional[str]:
    """None if Fig 3 setting A/B/C can be built from the checkpoints, else why not."""
    from ..compose import CompositionError
    from ..experiments import setting_spec

    try:
        setting_spec(zoo, setting, [[0.5, 0.5]], [0])
        return None
    except (ZooError, CompositionError) as e:
        return str(e)


def zoo_status(zoo: Zoo) -> dict:
    """Which checkpoint serves each role, which Fig 3 settings / UI backgrounds can run, the
    checkpoints to preload, and the location net's colours (empty when it has no colour per object)."""
    roles = {r: (zoo.find(r) if zoo.has(r) else None) for r in ("empty", "location", "clutter", "color")}
    empty_label = bool(roles["location"]) and zoo.has_empty_label(roles["location"])
    settings = {s: setting_problem(zoo, s) is None for s in SETTINGS}
    colors = []
    if roles["location"]:
        colors = list((zoo.entries[roles["location"]].get("condition") or {}).get("colors") or [])
    # the square of CLEVR's frame the location net's images show: the scene canvas is drawn in it
    framing = zoo.framing_of(roles["location"]) if roles["location"] else "centre"
    return {"roles": roles, "empty_label": empty_label, "settings": settings,
            "backgrounds": {b: settings[pair[0]] for b, pair in BACKGROUNDS.items()},
            "checkpoints": sorted({n for n in roles.values() if n}), "location_colors": colors, "framing": framing}


def random_net(preset: str, dataset: str, seed: int = 0, resolution: Optional[int] = None):
    """A random-weight Precond at a `projcomp.train` preset's size, conditioned like a net trained
    on the dataset preset `dataset`, with its gains opened so that outputs vary (EDM2 zero-initialises
    them: D = c_skip x). Returns (net, resolved training config)."""
    from ..clevr.datasets import condition_schema, get_preset
    from ..nn import Precond
    from ..nn.conditions import ConditionEncoder
    from ..train import network_kwargs, resolve_config

    cfg = resolve_config(preset, None if resolution is None else {"resolution": int(resolution)})
    ds = get_preset(dataset)
    cond = condition_schema(ds.label, empty=ds.empty_fraction > 0)
    torch.manual_seed(seed)
    net = Precond(**network_kwargs(cfg, ConditionEncoder(cond).label_dim, cond))
    with torch.no_grad():
        for pname, prm in net.named_parameters():
            if pname.endswith("_gain"):
                prm.fill_(1.0)
    return net, cfg


def write_random_zoo(folder: str, preset: str = "tiny", seed: int = 0,
                     roles: Sequence[str] = ("empty", "location", "clutter-location", "color")) -> list:
    """Random-weight checkpoints, one per dataset preset, at a `projcomp.train` preset's size: noise
    images, but every code path of the app runs (tests, trying the UI). Returns the folder names."""
    from ..checkpoint import save

    names = []
    for i, ds in enumerate(roles):
        net, cfg = random_net(preset, ds, seed=seed * 1000 + i)
        short = {"clutter-location": "clutter"}.get(ds, ds)
        name = f"clevr-{short}-{cfg['resolution']}"
        save(os.path.join(folder, name), net, {"dataset": {"preset": ds}, "random_weights": True,
                                               "training": {"preset": preset, "note": "random weights (demo/test)"}})
        names.append(name)
    return names


def fingerprint(root: str) -> str:
    """A short hash of the checkpoint configs under `root` (keys caches)."""
    h = hashlib.sha1()
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            p = os.path.join(root, name, "config.json")
            w = os.path.join(root, name, "model.safetensors")
            if os.path.isfile(p):
                h.update(name.encode())
                with open(p, "rb") as f:
                    h.update(f.read())
                if os.path.isfile(w):
                    h.update(str(os.path.getsize(w)).encode())
    return h.hexdigest()[:12]


def gpu_seconds(steps: int, terms: int, samples: int = 1, per_row_call: float = 0.04, base: float = 10.0) -> int:
    """A ZeroGPU duration estimate: network rows × steps × a per-row cost, plus loading."""
    return int(min(300, base + per_row_call * max(1, steps) * (terms + 1) * max(1, samples)))


def device_of(net: Any) -> torch.device:
    try:
        return next(net.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Drawing (PIL) and figures (matplotlib).

UPSAMPLING = {"sharp": "sharp pixels (nearest)", "smooth": "smooth (bicubic)"}
# The ODE solvers a visitor can pick (of projcomp.sampling.SOLVERS) and the label of each choice.
SOLVER_CHOICES = {"heun": "Heun (2 calls per step, the paper's)", "dpm2m": "DPM-Solver++(2M) (1 call per step, ~2× faster)"}
# Okabe-Ito colours: told apart with every common colour-vision deficiency.
HIT_RGB = (86, 180, 233)    # sky blue
MISS_RGB = (230, 159, 0)    # orange
ALT_RGB = (240, 228, 66)    # yellow: the selected object


def font(size: int = 12):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def upscale(img: np.ndarray, size: int, mode: str = "sharp"):
    """A PIL image `size` px square: 'sharp' = nearest (the network's own pixels, honest at
    integer factors), 'smooth' = bicubic."""
    from PIL import Image
    if mode not in UPSAMPLING:
        raise InputError("upsampling", f"{mode!r} is not one of {sorted(UPSAMPLING)}")
    im = Image.fromarray(np.ascontiguousarray(img[..., :3]))
    return im.resize((size, size), Image.NEAREST if mode == "sharp" else Image.BICUBIC).convert("RGB")


def caption(img: np.ndarray, text: str, top: bool = False, height: int = 20, size: int = 13) -> np.ndarray:
    """`img` with a white band holding `text` below it (or above it)."""
    from PIL import Image, ImageDraw
    h, w = img.shape[:2]
    out = Image.new("RGB", (w, h + height), (255, 255, 255))
    out.paste(Image.fromarray(np.ascontiguousarray(img[..., :3])), (0, height if top else 0))
    ImageDraw.Draw(out).text((4, (0 if top else h) + (height - size) // 2 - 1), text, fill=(20, 20, 20),
                             font=font(size))
    return np.asarray(out)


def grid_cols(n: int) -> int:
    """Columns of the app's result grids (tiles laid out by `projcomp.imageio.image_grid`)."""
    return 1 if n == 1 else 2 if n <= 4 else 4


def figure_to_image(fig) -> np.ndarray:
    """Render a matplotlib Figure to uint8 RGB and close it (no figures pile up in a server)."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def readable_text_color(rgb) -> str:
    """Black or white, whichever contrasts more with a cell of colour `rgb` (0..1 floats)."""
    r, g, b = (float(c) for c in rgb[:3])
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b  # relative luminance (no gamma: good enough to choose)
    return "black" if lum > 0.45 else "white"


def cosine_heatmap(names: Sequence[str], matrix, title: str):
    """The Lemma 8.1 cosine matrix as a heatmap whose numbers stay readable on every cell."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    m = np.asarray(matrix, dtype=np.float64)
    k = len(names)
    cmap = colormaps["RdBu_r"]
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * k, 1.2 + 0.6 * k), dpi=100)
    im = ax.imshow(m, vmin=-1, vmax=1, cmap=cmap)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color=readable_text_color(cmap((m[i, j] + 1) / 2)))
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Sampling in worker threads, streamed: progress and the latest x0 prediction per job.


def stream_jobs(jobs: dict, parallel: bool, every: float = 0.25) -> Iterator[tuple]:
    """Run `jobs` ({key: fn(callback) -> result}) in worker threads and yield, as they come:

        ("progress", {key: info}) -- info = the sampler callback's latest dict ({i, n, x0, ...})
                                     per job, at most every `every` seconds, on every change
        ("done", {key: result})   -- once, at the end

    `parallel` runs the jobs at once (one thread each), else one after the other in one thread.
    An exception in a job is re-raised here (the others finish first)."""
    latest: dict = {}
    results: dict = {}
    errors: list = []
    lock = threading.Lock()
    changed = threading.Event()
    finished = threading.Event()

    def make_cb(key):
        def cb(info):
            with lock:
                latest[key] = info
            changed.set()
        return cb

    def run(keys):
        for key in keys:
            try:
                results[key] = jobs[key](make_cb(key))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                errors.append(e)

    groups = [[k] for k in jobs] if parallel else [list(jobs)]
    threads = [threading.Thread(target=run, args=(g,), daemon=True) for g in groups]

    def waiter():
        for t in threads:
            t.join()
        finished.set()
        changed.set()

    for t in threads:
        t.start()
    threading.Thread(target=waiter, daemon=True).start()
    last = 0.0
    while not finished.is_set():
        changed.wait()
        if finished.is_set():
            break
        delay = every - (time.monotonic() - last)
        if delay > 0:
            finished.wait(delay)
            if finished.is_set():
                break
        changed.clear()
        with lock:
            snap = dict(latest)
        last = time.monotonic()
        yield "progress", snap
    if errors:
        raise errors[0]
    yield "done", results


def progress_text(snap: dict, names: dict, t0: float) -> str:
    """One line: each job's step and the overall percentage."""
    parts, fr = [], []
    for key, name in names.items():
        info = snap.get(key)
        i, n = (info["i"] + 1, info["n"]) if info else (0, None)
        fr.append(i / n if n else 0.0)
        parts.append(f"{name} step {i}/{n}" if n else f"{name} starting")
    pct = 100 * sum(fr) / max(len(fr), 1)
    return f"Sampling {pct:.0f} % — " + " · ".join(parts) + f" — {time.perf_counter() - t0:.1f} s"


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    return torch.cuda.is_available() or bool(os.environ.get("SPACES_ZERO_GPU"))
