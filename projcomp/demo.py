"""Everything the Gradio app (app.py) shows, computed without any UI code.

app.py holds layout, events and input checks; this module turns validated inputs into images,
tables and figures (numpy / PIL / matplotlib), so every panel can be tested and reused from a
notebook. Contents, in the order of the app's tabs:

  checkpoints      where the CLEVR nets come from (a folder or a Hub repo id), which roles exist,
                   and a random-weight zoo for trying the app (and testing it) without training.
  CLEVR objects    Fig 3 A/B/C side by side with the same seeds (`clevr_compose`), the detector's
                   verdict drawn over the samples, and the contribution maps |w_i (D_i − D_b)| that
                   show why an empty background composes (each term acts only near its object).
  Colours          Fig 5: colour conditionals composed over their unconditional term, the
                   per-channel histograms of object pixels and the Lemma 8.1 verdict *before*
                   sampling (cosines of mean colour differences, from rendered data).
  SDXL             whether a model can run here, and a cached pipeline.
  Theory lab       §6.5's 2-D experts with movable means, App. G eqs. 17/18.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import threading
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .compose import CompositionError, Term, compose
from .experiments import SETTINGS, Zoo, ZooError
from .sampling import SamplerConfig, sample

__all__ = [
    "DemoError", "MAX_OBJECTS", "MAX_STEPS", "MAX_SAMPLES", "MAX_WEIGHT", "DISPLAY", "BACKGROUNDS",
    "resolve_checkpoints", "open_zoo", "zoo_status", "write_random_zoo",
    "empty_scene", "draw_requests", "clevr_compose", "ClevrResult", "contribution_maps",
    "color_statistics", "color_verdict", "color_histogram_figure", "color_compose",
    "sdxl_status", "sdxl_pipeline", "gauss2d_lab", "appg_heatmaps", "gpu_seconds", "figure_to_image", "fingerprint",
]

MAX_OBJECTS = 10      # Fig 3 goes up to 9; one more for play.
MAX_STEPS = 64        # Heun: 127 network calls; the paper uses 32 steps.
MAX_SAMPLES = 8       # seeds per run.
MAX_WEIGHT = 10.0     # |w_i| cap: beyond it samples leave the data range entirely.
DISPLAY = 256         # pixels of the scene picker and of each result tile.

# UI background choice -> (left setting, right setting). The right panel is always the other side
# of the paper's comparison with the same seeds: Bayes for A and C, the empty background for B.
BACKGROUNDS = {
    "empty": ("A", "B"),
    "bayes": ("B", "A"),
    "clutter": ("C", "B"),
}
SHORT_TITLES = {"A": "A: empty background\n(projective)", "B": "B: unconditional\nbackground (Bayes)",
                "C": "C: cluttered\nbackground"}


class DemoError(ValueError):
    """A request the demo cannot serve; the message says what is missing or wrong."""


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
        raise DemoError(f"checkpoints: {source!r} is not a local folder and could not be downloaded from the Hub "
                        f"({type(e).__name__}: {e})") from None


def open_zoo(root: str, resolution: Optional[int] = None) -> tuple[Zoo, list]:
    """A Zoo over `root` and the folders it skipped because their config.json is unreadable.

    `resolution` (or $PROJCOMP_RESOLUTION) picks which checkpoints serve when several
    resolutions are present; by default the lowest (see Zoo)."""
    env = os.environ.get("PROJCOMP_RESOLUTION", "")
    if resolution is None and env.strip():
        if not env.strip().isdigit():
            raise DemoError(f"PROJCOMP_RESOLUTION: {env!r} is not a resolution such as 32 or 64")
        resolution = int(env)
    zoo = Zoo(root, resolution=resolution)
    return zoo, list(zoo.problems.values())


def zoo_status(zoo: Zoo) -> dict:
    """{role: checkpoint name or None} and which settings / UI backgrounds can run."""
    roles = {}
    for role in ("empty", "location", "clutter", "color"):
        roles[role] = zoo.find(role) if zoo.has(role) else None
    if roles["empty"] is None and roles["location"] and zoo.has_empty_label(roles["location"]):
        roles["empty"] = f"{roles['location']} ('empty' label)"  # one net models the empty scene too
    settings = {s: setting_problem(zoo, s) is None for s in SETTINGS}
    return {"roles": roles, "settings": settings,
            "backgrounds": {b: settings[pair[0]] for b, pair in BACKGROUNDS.items()}}


def random_net(preset: str, dataset: str, seed: int = 0, resolution: Optional[int] = None):
    """A random-weight Precond at a `projcomp.train` preset's size, conditioned like a net trained
    on the dataset preset `dataset`, with its gains opened so that outputs vary (EDM2 zero-initialises
    them: D = c_skip x). Returns (net, resolved training config)."""
    from .clevr.datasets import condition_schema, get_preset
    from .nn import Precond
    from .nn.conditions import ConditionEncoder
    from .train import network_kwargs, resolve_config

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
    """Random-weight checkpoints, one per dataset preset, at a `projcomp.train` preset's size.

    They produce noise-like images but exercise every code path of the app; used by the tests and
    to try the UI before the trained checkpoints are downloaded. Returns the folder names written.
    """
    from .checkpoint import save

    names = []
    for i, ds in enumerate(roles):
        net, cfg = random_net(preset, ds, seed=seed * 1000 + i)
        short = {"clutter-location": "clutter"}.get(ds, ds)
        name = f"clevr-{short}-{cfg['resolution']}"
        save(os.path.join(folder, name), net, {"dataset": {"preset": ds}, "random_weights": True,
                                               "training": {"preset": preset, "note": "random weights (demo/test)"}})
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Drawing helpers (PIL).


def _font(size: int = 12):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@functools.lru_cache(maxsize=4)
def empty_scene(size: int = DISPLAY) -> np.ndarray:
    """The empty CLEVR scene (no camera jitter) rendered at `size` px: the canvas objects are placed on."""
    from .clevr.render import render
    from .clevr.scene import sample_scene

    return render(sample_scene(0, num_objects=0, jitter=False, resolution=size), resolution=size)


def _upscale(img: np.ndarray, size: int) -> "Image.Image":
    from PIL import Image
    im = Image.fromarray(img)
    # Integer factors: nearest keeps the network's pixels honest; otherwise Lanczos.
    if size % img.shape[1] == 0:
        return im.resize((size, size), Image.NEAREST)
    return im.resize((size, size), Image.LANCZOS)


def draw_requests(image: np.ndarray, locations: Sequence[Sequence[float]], weights: Optional[Sequence[float]] = None,
                  size: int = DISPLAY, hits: Optional[Sequence[bool]] = None, detections: Sequence[dict] = ()) -> np.ndarray:
    """Upscale `image` to `size` and draw numbered rings at the requested (x, y) in [0, 1]
    (green = found by the detector, red = missed, white = not judged) and a dot per detection."""
    from PIL import ImageDraw

    im = _upscale(image, size).convert("RGB")
    d = ImageDraw.Draw(im)
    src = image.shape[1]
    r = max(8, size // 9)  # wider than a CLEVR object at this scale, so the ring never hides it
    font = _font(max(10, size // 22))
    for det in detections:
        cx, cy = (v * size / src for v in det["center"])
        near = any(math.hypot(cx - x * size, cy - y * size) <= r for x, y in locations)
        col = (80, 220, 80) if near else (255, 150, 0)
        d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=col, outline=(0, 0, 0))
    for i, (x, y) in enumerate(locations):
        cx, cy = x * size, y * size
        col = (255, 255, 255) if hits is None else ((60, 230, 60) if hits[i] else (240, 50, 50))
        neg = weights is not None and weights[i] < 0
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 0, 0), width=3)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=1)
        label = f"{i + 1}" + ("−" if neg else "")
        d.text((cx + r - 1, cy - r - 2), label, fill=col, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def _grid(tiles: Sequence[np.ndarray], cols: int, pad: int = 4, bg: int = 255) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), bg, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = t[..., :3]
    return out


def _cols(n: int) -> int:
    return n if n <= 4 else 4


# ---------------------------------------------------------------------------------------------
# CLEVR objects: Fig 3 A/B/C.


def _device_of(net: Any) -> torch.device:
    try:
        return next(net.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def setting_denoiser(zoo: Zoo, setting: str, locations: Sequence[Sequence[float]], weights: Sequence[float]):
    """The composed denoiser of Fig 3 setting A/B/C (Def 5.1) for these locations and weights,
    built from `experiments.setting_spec` (so the app composes exactly what the CLI does).

    With no locations the composition is the background alone (one term of weight 0 leaves D_b).
    """
    from .experiments import setting_spec

    locs, ws = (locations, weights) if len(locations) else ([[0.5, 0.5]], [0.0])
    spec = setting_spec(zoo, setting, locs, [0], ws)
    den = spec.build(zoo.registry(sorted({spec.background.model, *[t.model for t in spec.terms]})))
    term_net = zoo.get(spec.terms[0].model)
    return den, tuple(term_net.image_shape), _device_of(term_net)


def setting_problem(zoo: Zoo, setting: str) -> Optional[str]:
    """None if Fig 3 setting A/B/C can be built from the checkpoints, else why not."""
    from .experiments import setting_spec

    try:
        setting_spec(zoo, setting, [[0.5, 0.5]], [0])
        return None
    except (ZooError, CompositionError) as e:
        return str(e)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclasses.dataclass
class ClevrResult:
    settings: tuple            # (left, right) Fig 3 settings, e.g. ("A", "B").
    titles: tuple              # Their display titles.
    images: dict               # setting -> uint8 [N, R, R, 3] raw samples.
    verdicts: dict             # setting -> [judge_locations dict per sample].
    panels: dict               # setting -> uint8 grid with markers (display).
    seeds: list                # The seeds (the same on both sides).
    config: dict               # Everything needed to reproduce the run.

    def summary_rows(self) -> list:
        rows = []
        for s in self.settings:
            if s not in self.verdicts:
                continue
            v = self.verdicts[s]
            k = v[0]["num_requested"] if v else 0
            hits = sum(sum(x["hits"]) for x in v)
            exact = sum(x["exact_count"] for x in v)
            rows.append({"setting": SETTINGS[s]["title"], "hits": hits, "requested": k * len(v),
                         "exact_count": exact, "samples": len(v),
                         "mean_detected": sum(x["num_detected"] for x in v) / max(len(v), 1)})
        return rows

    def summary_markdown(self) -> str:
        lines = ["| background | places hit | samples with exactly the requested count | mean objects detected |",
                 "|---|---|---|---|"]
        for r in self.summary_rows():
            lines.append(f"| {r['setting']} | **{r['hits']} / {r['requested']}** | {r['exact_count']} / {r['samples']} "
                         f"| {r['mean_detected']:.1f} |")
        return "\n".join(lines)


def clevr_compose(zoo: Zoo, locations: Sequence[Sequence[float]], weights: Sequence[float], background: str,
                  steps: int, seed: int, num_samples: int, bf16: bool, solver: str = "heun",
                  progress: Optional[Callable[[float, str], None]] = None, size: int = DISPLAY,
                  parallel: bool = False) -> ClevrResult:
    """Sample the chosen background's composition and its counterpart with the same seeds, judge
    each sample with the CLEVR detector and draw the verdicts (Fig 3, Table 1). `parallel` samples
    the two sides in two threads (halves the latency on a CPU with a core to spare)."""
    from .evaluate import judge_locations

    if background not in BACKGROUNDS:
        raise DemoError(f"background: {background!r} is not one of {sorted(BACKGROUNDS)}")
    status = zoo_status(zoo)
    left, right = BACKGROUNDS[background]
    if not status["settings"][left]:
        raise DemoError(f"background {background!r}: {setting_problem(zoo, left)}")
    settings = (left, right) if status["settings"][right] else (left,)
    seeds = [int(seed) + i for i in range(int(num_samples))]
    cfg = SamplerConfig(num_steps=int(steps), solver=solver, dtype="bfloat16" if bf16 else "float32").validate()
    images, verdicts, panels = {}, {}, {}
    done = {s: 0.0 for s in settings}
    lock = threading.Lock()

    def run(s: str) -> None:
        den, shape, device = setting_denoiser(zoo, s, locations, weights)

        def cb(info):
            if progress is not None:
                with lock:
                    done[s] = (info["i"] + 1) / info["n"]
                    progress(sum(done.values()) / len(settings), f"step {info['i'] + 1}/{info['n']}")

        imgs = to_uint8(sample(den, seeds, shape, cfg, device=device, callback=cb))
        images[s] = imgs
        verdicts[s] = [judge_locations(im, locations) for im in imgs]
        tile = size if len(seeds) <= 2 else max(128, size * 3 // 4)
        tiles = [draw_requests(im, locations, weights, tile, v["hits"], v["detections"]) for im, v in zip(imgs, verdicts[s])]
        panels[s] = _grid(tiles, _cols(len(tiles)))

    # The two sides are independent: on CPU run them at once (one core each with 1 intra-op thread).
    if parallel and len(settings) > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(len(settings)) as ex:
            for f in [ex.submit(run, s) for s in settings]:
                f.result()
    else:
        for s in settings:
            run(s)
    config = {"locations": [list(map(float, xy)) for xy in locations], "weights": [float(w) for w in weights],
              "background": background, "settings": list(settings), "seeds": seeds,
              "sampler": dataclasses.asdict(cfg),
              "checkpoints": {r: n for r, n in status["roles"].items() if n}}
    return ClevrResult(settings=settings, titles=tuple(SETTINGS[s]["title"] for s in settings), images=images,
                       verdicts=verdicts, panels=panels, seeds=seeds, config=config)


def _colormap(v: np.ndarray, name: str = "magma") -> np.ndarray:
    from matplotlib import colormaps
    return (colormaps[name](np.clip(v, 0, 1))[..., :3] * 255).astype(np.uint8)


def contribution_maps(zoo: Zoo, locations: Sequence[Sequence[float]], weights: Sequence[float], sigma: float,
                      seed: int, settings: Sequence[str] = ("A", "B"), tile: int = 112) -> tuple[np.ndarray, dict]:
    """|w_i (D_i − D_b)| per concept (mean over RGB) at noise level σ, for each setting.

    Evaluated at x = (the empty scene) + σ n(seed), the same x for every setting, so rows differ
    only by the background. Under the empty background each term changes D only near its own
    object (Factorized Conditionals, Def 5.2: disjoint masks); under the Bayes background
    D_i − D_u also removes the "object somewhere else" that p_u predicts, everywhere.
    Rows share one colour scale. Returns (image, {setting: [fraction of |Δ| within the object's
    neighbourhood per concept]}).
    """
    from PIL import Image, ImageDraw
    from .sampling import noise_for_seeds

    if not locations:
        raise DemoError("contribution map: place at least one object first")
    settings = [s for s in settings if zoo_status(zoo)["settings"][s]]
    if not settings:
        raise DemoError("contribution map: no Fig 3 setting can run with the checkpoints found")
    rows, locality = [], {}
    for s in settings:
        den, shape, device = setting_denoiser(zoo, s, locations, weights)
        R = shape[-1]
        x0 = torch.from_numpy(empty_scene(R)).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
        x = x0 + float(sigma) * noise_for_seeds([int(seed)], shape)
        with torch.no_grad():
            c = den.contributions(x.to(device), torch.tensor([float(sigma)], device=device))  # [k, 1, C, H, W]
        rows.append(c[:, 0].abs().mean(1).float().cpu().numpy())  # [k, H, W]
        yy, xx = np.mgrid[0:R, 0:R] + 0.5
        loc = []
        for m, (lx, ly) in zip(rows[-1], locations):
            near = (xx - lx * R) ** 2 + (yy - ly * R) ** 2 <= (0.15 * R) ** 2
            loc.append(float(m[near].sum() / max(m.sum(), 1e-12)))
        locality[s] = loc
    vmax = max(float(r.max()) for r in rows) or 1.0
    label_w = 160
    k = len(locations)
    out = Image.new("RGB", (label_w + k * (tile + 4), len(rows) * (tile + 4) + 18), (255, 255, 255))
    d = ImageDraw.Draw(out)
    font = _font(12)
    for i in range(k):
        d.text((label_w + i * (tile + 4) + 4, 2), f"object {i + 1} (w={weights[i]:g})", fill=(0, 0, 0), font=font)
    for r, (s, maps) in enumerate(zip(settings, rows)):
        y0 = 18 + r * (tile + 4)
        d.multiline_text((4, y0 + tile // 2 - 24), SHORT_TITLES[s], fill=(0, 0, 0), font=font, spacing=2)
        d.text((4, y0 + tile // 2 + 12), f"near its object: {np.mean(locality[s]) * 100:.0f}%", fill=(90, 90, 90), font=font)
        for i, m in enumerate(maps):
            im = Image.fromarray(_colormap(m / vmax)).resize((tile, tile), Image.NEAREST)
            dd = ImageDraw.Draw(im)
            cx, cy = locations[i][0] * tile, locations[i][1] * tile
            dd.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], outline=(80, 255, 80), width=2)
            out.paste(im, (label_w + i * (tile + 4), y0))
    return np.asarray(out), locality


# ---------------------------------------------------------------------------------------------
# Colours: Fig 5 and the Lemma 8.1 verdict before sampling.

_COLOR_LOCK = threading.Lock()


def _cache_dir() -> str:
    d = os.environ.get("PROJCOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "projcomp")
    os.makedirs(d, exist_ok=True)
    return d


@functools.lru_cache(maxsize=4)
def color_statistics(resolution: int = 32, n_per_color: Optional[int] = None, seed: int = 0) -> dict:
    """Object pixels of rendered one-object scenes per CLEVR colour: per-channel histograms (Fig 5)
    and mean sRGB colour. Rendered once, then cached on disk ($PROJCOMP_CACHE).
    `n_per_color` defaults to $PROJCOMP_COLOR_SAMPLES or 24 scenes per colour."""
    from .clevr.detect import detect
    from .clevr.render import render
    from .clevr.scene import CLEVR_COLORS, sample_scene

    n_per_color = int(n_per_color or os.environ.get("PROJCOMP_COLOR_SAMPLES") or 24)
    path = os.path.join(_cache_dir(), f"color_stats_r{resolution}_n{n_per_color}_s{seed}_v1.json")
    with _COLOR_LOCK:
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                pass
        bins = np.linspace(0, 256, 33)
        stats = {"bins": bins.tolist(), "hist": {}, "mean": {}, "pixels": {}}
        for ci, c in enumerate(CLEVR_COLORS):
            px = []
            for i in range(n_per_color):
                scene = sample_scene([seed, 7, ci, i], num_objects=1, forced={"color": c}, resolution=resolution)
                img = render(scene, resolution=resolution)
                _, labels = detect(img, return_labels=True)
                if labels.max() > 0:
                    px.append(img[labels > 0])
            px = np.concatenate(px).astype(np.float64) if px else np.zeros((0, 3))
            stats["hist"][c] = [np.histogram(px[:, ch], bins=bins, density=True)[0].tolist() for ch in range(3)]
            stats["mean"][c] = px.mean(0).tolist() if len(px) else [0.0, 0.0, 0.0]
            stats["pixels"][c] = int(len(px))
        tmp = path + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, path)
        return stats


def color_verdict(colors: Sequence[str], stats: dict) -> dict:
    """Lemma 8.1 on object colour: cosines of (μ_c − μ_u) in RGB, μ_u = the mean over all colours
    (the unconditional object). Large |cos| predicts a failed (hybrid) composition."""
    from .heuristic import mean_difference_cosines, verdict

    all_px = sum(stats["pixels"].values())
    mu_u = sum(np.array(stats["mean"][c]) * stats["pixels"][c] for c in stats["mean"]) / max(all_px, 1)
    names, M = mean_difference_cosines({c: torch.tensor(stats["mean"][c]) for c in colors}, torch.tensor(mu_u))
    return {"names": names, "matrix": M, "verdict": verdict(names, M), "mu_u": mu_u.tolist()}


def color_histogram_figure(colors: Sequence[str], stats: dict):
    """Fig 5 (right): per-channel histograms of object pixels, the chosen colours in bold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .clevr.scene import CLEVR_RGB

    bins = np.array(stats["bins"])
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.6), dpi=90)
    for ch, ax in enumerate(axes):
        for c, h in stats["hist"].items():
            chosen = c in colors
            rgb = np.array(CLEVR_RGB[c]) / 255 if c in CLEVR_RGB else None
            ax.stairs(h[ch], bins, color=rgb, lw=2.2 if chosen else 0.7, alpha=1.0 if chosen else 0.35,
                      label=c if chosen else None)
        ax.set_title(f"{'RGB'[ch]} channel of object pixels", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    if colors:
        axes[-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def color_compose(zoo: Zoo, colors: Sequence[str], weights: Sequence[float], steps: int, seed: int, num_samples: int,
                  bf16: bool, progress: Optional[Callable[[float, str], None]] = None, size: int = 192) -> tuple:
    """Fig 5: colour conditionals over the colour net's null label. Returns (grid, per-sample colours)."""
    from .clevr.detect import detect

    net = zoo.get(zoo.find("color"))
    terms = [Term(net, c, float(w), name=c) for c, w in zip(colors, weights)]
    den = compose(Term(net, None, name="unconditional"), terms)
    seeds = [int(seed) + i for i in range(int(num_samples))]
    cfg = SamplerConfig(num_steps=int(steps), dtype="bfloat16" if bf16 else "float32").validate()
    cb = None if progress is None else (lambda info: progress((info["i"] + 1) / info["n"], f"step {info['i'] + 1}/{info['n']}"))
    imgs = to_uint8(sample(den, seeds, tuple(net.image_shape), cfg, device=_device_of(net), callback=cb))
    found = [sorted({d["color"] for d in detect(im)}) for im in imgs]
    grid = _grid([np.asarray(_upscale(im, size)) for im in imgs], _cols(len(imgs)))
    return grid, found, seeds


# ---------------------------------------------------------------------------------------------
# SDXL.


def gpu_available() -> bool:
    return torch.cuda.is_available() or bool(os.environ.get("SPACES_ZERO_GPU"))


def sdxl_status(model: str) -> tuple[bool, str]:
    """(can run here, plain-language reason). Weights must be on disk (a local folder or the HF
    cache) or the app must run on a GPU (then they are downloaded on first use)."""
    from .sdxl import ALLOWED_MODELS

    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "model_index.json")):
            return False, f"`{model}` is a folder but has no `model_index.json` (not a diffusers pipeline)."
        return True, f"Local pipeline `{model}`."
    if model not in ALLOWED_MODELS:
        return False, f"`{model}` is not in the allow-list ({', '.join(sorted(ALLOWED_MODELS))})."
    cached = False
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(model, "model_index.json"), str) and \
            isinstance(try_to_load_from_cache(model, "unet/config.json"), str)
    except Exception:
        cached = False
    if cached and gpu_available():
        return True, f"`{model}`: weights in the Hugging Face cache, GPU available."
    if cached:
        return True, f"`{model}`: weights in the Hugging Face cache; no GPU, so sampling runs on CPU (minutes per image)."
    if gpu_available():
        return True, f"`{model}`: GPU available; the weights (~7 GB) are downloaded on first use."
    return False, (f"`{model}` cannot run here: its weights are not on disk (not in the Hugging Face cache) and there "
                   f"is no GPU. Download them first (`hf download {model}`) or run this Space on GPU hardware.")


_PIPES: dict = {}
_PIPE_LOCK = threading.Lock()


def sdxl_pipeline(model: str):
    """One loaded pipeline at a time (SDXL needs ~7 GB)."""
    from .sdxl import load_pipeline

    with _PIPE_LOCK:
        if model not in _PIPES:
            _PIPES.clear()
            _PIPES[model] = load_pipeline(model)
        return _PIPES[model]


def gpu_seconds(steps: int, terms: int, samples: int = 1, per_row_call: float = 0.04, base: float = 10.0) -> int:
    """A ZeroGPU duration estimate: network rows × steps × a per-row cost, plus loading."""
    return int(min(300, base + per_row_call * max(1, steps) * (terms + 1) * max(1, samples)))


# ---------------------------------------------------------------------------------------------
# Theory lab.


def gauss2d_lab(mean1: Sequence[float], mean2: Sequence[float], mode: str = "split", background: str = "wide",
                num_samples: int = 256, steps: int = 32):
    """§6.5: two 2-D Gaussian experts over a Gaussian background, composed (Def 5.1).

    `split`: expert 1 is narrow in x1 (cov diag(1, 4)), expert 2 narrow in x2 (diag(4, 1)) — each
    constrains its own coordinate, the Factorized Conditionals case, and samples co-occur.
    `shared`: both experts are narrow in x1 — they fight over the same coordinate (a hybrid).
    Background "wide" = N(0, diag(4, 4)) (the experts' broad side), "none" = no division by p_b
    (a product of experts). Returns (figure, numbers).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .theory import composed_denoiser, composition, composition_log_prob, gaussian
    from .theory.checks import NotNormalizableError
    from .theory.toys import single_thread

    if mode not in ("split", "shared"):
        raise DemoError(f"mode: {mode!r} is not 'split' or 'shared'")
    p_b = gaussian([0.0, 0.0], [4.0, 4.0])
    e1 = gaussian(list(map(float, mean1)), [1.0, 4.0])
    e2 = gaussian(list(map(float, mean2)), [4.0, 1.0] if mode == "split" else [1.0, 4.0])
    numbers: dict = {"mode": mode}
    lim = 6.0
    g = torch.linspace(-lim, lim, 121, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=90)
    with single_thread():
        try:
            C = composition(p_b, [e1, e2])
            lp = composition_log_prob(p_b, [e1, e2], grid).reshape(len(g), len(g))
            xs = sample(composed_denoiser(p_b, [e1, e2]), range(int(num_samples)), (2,),
                        SamplerConfig(num_steps=int(steps))).double()
        except NotNormalizableError as e:
            raise DemoError(f"this composition is not normalisable: {e}") from None
        dens = torch.exp(lp - lp.max())
        ax.contourf(g, g, dens.numpy(), levels=12, cmap="Blues")
        for p, col in ((p_b, "0.5"), (e1, "tab:red"), (e2, "tab:green")):
            ax.contour(g, g, torch.exp(p.log_prob(grid)).reshape(len(g), len(g)).numpy(), levels=3, colors=col,
                       linestyles="--", linewidths=0.8)
    ax.scatter(xs[:, 0], xs[:, 1], s=3, c="k", alpha=0.5, label="Heun samples")
    m, sm = C.mean(), xs.mean(0)
    ax.plot([float(m[0])], [float(m[1])], "r*", ms=12, label=f"exact mean ({float(m[0]):.2f}, {float(m[1]):.2f})")
    ax.plot([float(sm[0])], [float(sm[1])], "kx", ms=9, mew=2, label=f"sample mean ({float(sm[0]):.2f}, {float(sm[1]):.2f})")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"{mode} experts: background grey, expert 1 red, expert 2 green", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    numbers.update({"exact_mean": [round(float(v), 3) for v in m], "sample_mean": [round(float(v), 3) for v in sm],
                    "exact_cov": [[round(float(v), 3) for v in r] for r in C.cov()]})
    return fig, numbers


def appg_heatmaps(which: str, compose_idx: Sequence[int], num_seeds: int = 64, steps: int = 24, clutter: float = 0.5):
    """App. G (Fig 12): eq. 17 (empty vs Bayes background) or eq. 18 (cluttered vs Bayes)."""
    from .theory.toys import toy_eq17, toy_eq18

    idx = sorted({int(i) for i in compose_idx})
    if not idx:
        raise DemoError("App. G: choose at least one coordinate to compose")
    if which == "eq17":
        return toy_eq17(num_seeds=int(num_seeds), compose_idx=idx, num_steps=int(steps))
    if which == "eq18":
        return toy_eq18(num_seeds=int(num_seeds), compose_idx=idx, num_steps=int(steps), clutter=float(clutter))
    raise DemoError(f"App. G: {which!r} is not 'eq17' or 'eq18'")


def fingerprint(root: str) -> str:
    """A short hash of the checkpoint configs under `root` (keys the examples cache)."""
    h = hashlib.sha1()
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            p = os.path.join(root, name, "config.json")
            w = os.path.join(root, name, "model.safetensors")
            if os.path.isfile(p):
                h.update(name.encode())
                h.update(open(p, "rb").read())
                if os.path.isfile(w):
                    h.update(str(os.path.getsize(w)).encode())
    return h.hexdigest()[:12]


def figure_to_image(fig) -> np.ndarray:
    """Render a matplotlib Figure to uint8 RGB and close it (no figures pile up in a server)."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
