"""The CLEVR objects tab, without UI code: the objects table and the scene it is drawn on (click to
add, click a ring to select it, click elsewhere to move it, delete it; a colour per object when the
location net's condition schema has "colors"), Fig 3 A/B/C side by side with the same seeds and
live x0 previews, the detector's verdicts drawn legibly, contribution maps, examples."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ..experiments import SETTINGS, random_locations, setting_framing
from ..imageio import image_grid, to_uint8
from ..sampling import SOLVER_NAMES, SamplerConfig, sample
from ..zoo import Zoo
from .common import (ALT_RGB, BACKGROUNDS, HIT_RGB, MAX_GUIDANCE, MAX_OBJECTS, MAX_SAMPLES, MAX_STEPS, MISS_RGB, SEED_MAX,
                     InputError, blank, caption, device_of, font, grid_cols, integer, number,
                     progress_text, setting_problem, stream_jobs, table_rows, upscale, weight, zoo_status)

DISPLAY = 320          # pixels of the scene picker: more than the app shows it at (268 px), because the
                       # browser maps a click to the image's own pixels right only when it is not upscaled
TILE = 192             # pixels of each result tile (6x a 32-px sample)
RING = 0.075           # ring radius on the scene, in image widths (wider than a CLEVR object)
PICK = 0.07            # a click this close to an object's centre selects it
ANY = "any"            # the colour column's "no colour asked" value
MARKERS = {"outline": "outline rings", "off": "no markers"}
BG_CHOICES = [("Empty scene — projective (Fig 3A)", "empty"),
              ("Unconditional — Bayes (Fig 3B)", "bayes"),
              ("Cluttered scenes (Fig 3C)", "clutter")]
# In the front half of the floor, where CLEVR objects are largest (at 32×32 a far object is 2 px).
DEFAULT_OBJECTS = [(0.3, 0.55), (0.7, 0.55), (0.5, 0.75)]


@dataclasses.dataclass
class Obj:
    x: float
    y: float
    w: float = 1.0
    color: Optional[str] = None  # None = any colour


# ---------------------------------------------------------------------------------------------
# The objects table.


def headers(colors: Sequence[str]) -> list:
    return ["x", "y", "weight"] + (["colour"] if colors else [])


def to_table(objs: Sequence[Obj], colors: Sequence[str]) -> dict:
    """The Dataframe value (headers always sent, so an empty table keeps its columns)."""
    data = []
    for o in objs:
        row = [round(o.x, 3), round(o.y, 3), float(o.w)]
        if colors:
            row.append(o.color or ANY)
        data.append(row)
    return {"headers": headers(colors), "data": data}


def parse_objects(rows, colors: Sequence[str] = ()) -> list:
    """Table rows -> [Obj]; x, y in [0, 1], |w| <= MAX_WEIGHT, at most MAX_OBJECTS, colour from `colors`."""
    objs = []
    for i, row in enumerate(table_rows(rows)):
        if all(blank(c) for c in row):
            continue
        f = f"object {i + 1}"
        if len(row) < 2:
            raise InputError(f, f"needs x and y (and a weight), got {row!r}")
        x = number(row[0], f"{f} x")
        y = number(row[1], f"{f} y")
        if not 0 <= x <= 1:
            raise InputError(f"{f} x", f"{x:g} is outside the image (x must be in [0, 1])")
        if not 0 <= y <= 1:
            raise InputError(f"{f} y", f"{y:g} is outside the image (y must be in [0, 1])")
        w = 1.0 if len(row) < 3 or blank(row[2]) else weight(row[2], f"{f} weight")
        c = None
        if len(row) >= 4 and not blank(row[3]) and str(row[3]).strip().lower() != ANY:
            c = str(row[3]).strip().lower()
            if c not in colors:
                allowed = ", ".join([ANY, *colors]) if colors else f"{ANY} (this model has no colour per object)"
                raise InputError(f"{f} colour", f"{row[3]!r} is not one of {allowed}")
        objs.append(Obj(x, y, w, c))
    if len(objs) > MAX_OBJECTS:
        raise InputError("objects", f"{len(objs)} placed, at most {MAX_OBJECTS} are allowed")
    return objs


# ---------------------------------------------------------------------------------------------
# The scene: drawing and direct editing.


@functools.lru_cache(maxsize=4)
def empty_scene(size: int = DISPLAY, framing: str = "centre") -> np.ndarray:
    """The empty CLEVR scene (no camera jitter) rendered at `size` px in a framing (world.FRAMINGS):
    the canvas objects are placed on."""
    from ..clevr.render import render
    from ..clevr.scene import sample_scene

    return render(sample_scene(0, num_objects=0, jitter=False, resolution=size, framing=framing), resolution=size)


def _ring(d, cx, cy, r, rgb, width=2, dashed=False):
    """An outline ring with a dark halo (readable on any floor); dashed = 12 arcs with gaps."""
    box = [cx - r, cy - r, cx + r, cy + r]
    arcs = [(a, a + 18) for a in range(0, 360, 30)] if dashed else [(0, 360)]
    for a0, a1 in arcs:
        d.arc(box, a0, a1, fill=(0, 0, 0), width=width + 2)
    for a0, a1 in arcs:
        d.arc([box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1], a0, a1, fill=rgb, width=width)


def _swatch(color: Optional[str]):
    from ..clevr.scene import CLEVR_RGB
    return tuple(CLEVR_RGB[color]) if color in CLEVR_RGB else None


def draw_scene(objs: Sequence[Obj], selected: Optional[int] = None, size: int = DISPLAY,
               framing: str = "centre") -> np.ndarray:
    """The empty scene with a numbered ring per object (white; the selected one yellow and thick;
    a negative weight adds '−'; a colour fills a small swatch beside the number)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(empty_scene(size, framing)).convert("RGB")
    d = ImageDraw.Draw(im)
    r = RING * size
    fnt = font(max(11, size // 20))
    for i, o in enumerate(objs):
        cx, cy = o.x * size, o.y * size
        sel = i == selected
        _ring(d, cx, cy, r, ALT_RGB if sel else (255, 255, 255), width=4 if sel else 2)
        label = f"{i + 1}" + ("−" if o.w < 0 else "")
        d.text((cx + r * 0.8, cy - r - 10), label, fill=ALT_RGB if sel else (255, 255, 255), font=fnt,
               stroke_width=2, stroke_fill=(0, 0, 0))
        sw = _swatch(o.color)
        if sw:
            d.rectangle([cx - r, cy - r - 10, cx - r + 8, cy - r - 2], fill=sw, outline=(0, 0, 0))
    return np.asarray(im)


def nearest(objs: Sequence[Obj], x: float, y: float) -> Optional[int]:
    """The object whose ring a click at (x, y) falls in (the closest one), else None."""
    best, bd = None, PICK
    for i, o in enumerate(objs):
        dist = math.hypot(o.x - x, o.y - y)
        if dist <= bd:
            best, bd = i, dist
    return best


def click(objs: list, selected: Optional[int], x: float, y: float) -> tuple:
    """A click on the scene at (x, y) in [0, 1]: on a ring -> select that object (again -> deselect);
    elsewhere with an object selected -> move it there; elsewhere -> add an object there.
    Returns (objects, selected, what happened)."""
    x, y = number(x, "x", 0, 1), number(y, "y", 0, 1)
    objs = list(objs)
    if selected is not None and not 0 <= selected < len(objs):
        selected = None
    hit = nearest(objs, x, y)
    if hit is not None:
        if hit == selected:
            return objs, None, f"Object {hit + 1} deselected."
        return objs, hit, selection_note(objs, hit)
    if selected is not None:
        objs[selected] = dataclasses.replace(objs[selected], x=x, y=y)
        return objs, None, f"Object {selected + 1} moved to ({x:.2f}, {y:.2f})."
    if len(objs) >= MAX_OBJECTS:
        raise InputError("objects", f"at most {MAX_OBJECTS} are allowed; select one and delete it first")
    objs.append(Obj(x, y))
    return objs, None, f"Object {len(objs)} added at ({x:.2f}, {y:.2f}). Click its ring to select it."


def selection_note(objs: Sequence[Obj], i: Optional[int]) -> str:
    if i is None or not 0 <= i < len(objs):
        return "Click the floor to add an object; click a ring to select it."
    o = objs[i]
    return (f"**Object {i + 1} selected** ({o.x:.2f}, {o.y:.2f}, weight {o.w:g}"
            + (f", {o.color}" if o.color else "") + "): click the floor to move it there, or delete it.")


def delete(objs: list, selected: Optional[int]) -> tuple:
    if selected is None or not 0 <= selected < len(objs):
        raise InputError("selected object", "none selected: click an object's ring first")
    objs = list(objs)
    del objs[selected]
    return objs, None, f"Object {selected + 1} deleted ({len(objs)} left)."


def set_color(objs: list, selected: Optional[int], color: Optional[str], colors: Sequence[str]) -> list:
    if selected is None or not 0 <= selected < len(objs):
        raise InputError("colour", "select an object first (click its ring)")
    c = None if blank(color) or color == ANY else str(color)
    if c is not None and c not in colors:
        raise InputError("colour", f"{color!r} is not one of {', '.join([ANY, *colors])}")
    objs = list(objs)
    objs[selected] = dataclasses.replace(objs[selected], color=c)
    return objs


def random_objects(k, seed, framing: str = "centre") -> list:
    """k places drawn by the CLEVR scene sampler (valid, visible, separated, in the images of
    `framing`), weight 1."""
    k = integer(k, "k", 1, MAX_OBJECTS)
    seed = integer(seed, "layout seed", 0, SEED_MAX)
    return [Obj(x, y) for x, y in random_locations(k, seed, framing=framing)]


# ---------------------------------------------------------------------------------------------
# Composition (Def 5.1) for Fig 3 settings, with a colour per object where the net has one.


def term_colors(zoo: Zoo, name: str) -> list:
    return list((zoo.entries[name].get("condition") or {}).get("colors") or [])


def build_denoiser(zoo: Zoo, setting: str, objs: Sequence[Obj], color_guidance: float = 1.0):
    """The composed denoiser of Fig 3 setting A/B/C for these objects (from experiments.setting_spec,
    as the CLI composes), each term's condition {"xy": (x, y), "color": c} where a colour is asked
    and the term net has colours; with color_guidance g != 1 a coloured term is D_xy + g (D_xyc − D_xy)
    (two terms of Def 5.1, setting_spec's docstring). No objects = the background alone (one term of
    weight 0). Returns (denoiser, image shape, device, whether the colours were used)."""
    from ..experiments import setting_spec, setting_term_model

    locs = [[o.x, o.y] for o in objs] or [[0.5, 0.5]]
    ws = [o.w for o in objs] or [0.0]
    term_model = setting_term_model(zoo, setting)
    used = bool(term_colors(zoo, term_model)) and any(o.color for o in objs)
    spec = setting_spec(zoo, setting, locs, [0], ws, colors=[o.color for o in objs] if used else None,
                        color_guidance=color_guidance)
    names = sorted({spec.background.model, *[t.model for t in spec.terms]})
    den = spec.build(zoo.registry(names))
    net = zoo.get(term_model)
    return den, tuple(net.image_shape), device_of(net), used


@dataclasses.dataclass
class ClevrResult:
    settings: tuple            # (left, right) Fig 3 settings, e.g. ("A", "B")
    titles: tuple              # their display titles
    images: dict               # setting -> uint8 [N, R, R, 3] raw samples
    verdicts: dict             # setting -> [judge_locations dict (+ "ok": hit and colour right) per sample]
    panels: dict               # setting -> uint8 display grid (captions, markers)
    seeds: list                # the seeds (the same on both sides)
    config: dict               # everything needed to reproduce the run
    seconds: float = 0.0

    def summary_rows(self) -> list:
        rows = []
        for s in self.settings:
            v = self.verdicts.get(s) or []
            k = v[0]["num_requested"] if v else 0
            rows.append({"setting": SETTINGS[s]["title"], "hits": sum(sum(x["ok"]) for x in v),
                         "requested": k * len(v), "exact_count": sum(x["exact_count"] for x in v),
                         "samples": len(v), "mean_detected": sum(x["num_detected"] for x in v) / max(len(v), 1)})
        return rows

    def summary_markdown(self) -> str:
        lines = ["| background | places hit | samples with exactly the requested count | mean objects detected |",
                 "|---|---|---|---|"]
        for r in self.summary_rows():
            lines.append(f"| {r['setting']} | **{r['hits']} / {r['requested']}** | {r['exact_count']} / {r['samples']} "
                         f"| {r['mean_detected']:.1f} |")
        return "\n".join(lines)


# The app's default colour guidance: on the shipped object net, g = 3 finds the asked colour at
# 0.89-0.97 of the hit places at k = 1..4 (0.60-0.84 at g = 1), hit rates 0.91-1.00 at k = 2..9
# (README, "A colour per object"). The CLI, the API endpoints and the evaluation default to 1.
DEFAULT_GUIDANCE = 3.0


def check_guidance(v) -> float:
    """The colour guidance g (1 = the plain colour term), validated; the message names the field."""
    return number(v, "colour guidance", 1.0, MAX_GUIDANCE)


def check_request(zoo: Zoo, background, steps, seed, samples, upsampling="sharp", markers="outline") -> tuple:
    """Validated (background, steps, seed, samples, upsampling, markers); each message names its field."""
    if background not in BACKGROUNDS:
        raise InputError("background", f"{background!r} is not one of {sorted(BACKGROUNDS)}")
    if not zoo_status(zoo)["backgrounds"][background]:
        raise InputError("background", f"{background!r} is unavailable: "
                         f"{setting_problem(zoo, BACKGROUNDS[background][0])}")
    steps = integer(steps, "steps", 1, MAX_STEPS)
    seed = integer(seed, "seed", 0, SEED_MAX)
    samples = integer(samples, "samples", 1, MAX_SAMPLES)
    if upsampling not in ("sharp", "smooth"):
        raise InputError("upsampling", f"{upsampling!r} is not 'sharp' or 'smooth'")
    if markers not in MARKERS:
        raise InputError("markers", f"{markers!r} is not one of {sorted(MARKERS)}")
    return background, steps, seed, samples, upsampling, markers


def _tile(img: np.ndarray, objs: Sequence[Obj], size: int, upsampling: str, markers: str,
          verdict: Optional[dict] = None) -> np.ndarray:
    """One sample at `size` px with outline markers: solid sky-blue ring = an object was detected
    there (of the asked colour), dashed orange ring = missed; '+' = a detection."""
    from PIL import ImageDraw

    im = upscale(img, size, upsampling)
    if markers == "off" or not objs:
        return np.asarray(im)
    d = ImageDraw.Draw(im)
    src = img.shape[1]
    r = max(8.0, 0.11 * size)
    fnt = font(max(11, size // 16))
    if verdict is not None:
        for det in verdict["detections"]:
            cx, cy = (v * size / src for v in det["center"])
            for w_, col in ((3, (0, 0, 0)), (1, (255, 255, 255))):
                d.line([cx - 4, cy, cx + 4, cy], fill=col, width=w_)
                d.line([cx, cy - 4, cx, cy + 4], fill=col, width=w_)
    for i, o in enumerate(objs):
        cx, cy = o.x * size, o.y * size
        if verdict is None:
            col, dashed = (255, 255, 255), False
        else:
            ok = verdict["ok"][i]
            col, dashed = (HIT_RGB, False) if ok else (MISS_RGB, True)
        _ring(d, cx, cy, r, col, width=2, dashed=dashed)
        d.text((cx + r * 0.75, cy - r - 12), f"{i + 1}" + ("−" if o.w < 0 else ""), fill=col, font=fnt,
               stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def panel(images: np.ndarray, objs: Sequence[Obj], seeds: Sequence[int], title: str, size: int, upsampling: str,
          markers: str, verdicts: Optional[Sequence[dict]] = None, step: Optional[str] = None) -> np.ndarray:
    """A grid of samples, each captioned with its seed (and its hits), under a title band."""
    tiles = []
    for j, (img, s) in enumerate(zip(images, seeds)):
        v = verdicts[j] if verdicts is not None else None
        t = _tile(img, objs, size, upsampling, markers, v)
        cap = f"seed {s}"
        if v is not None and objs:
            cap += f" · {sum(v['ok'])}/{len(objs)} hit"
        elif step:
            cap += f" · {step}"
        tiles.append(caption(t, cap))
    return caption(image_grid(tiles, grid_cols(len(tiles))), title, top=True, height=24, size=15)


def _judge(img: np.ndarray, objs: Sequence[Obj], framing: str = "centre") -> dict:
    from ..evaluate import judge_locations

    locs = [(o.x, o.y) for o in objs]
    v = judge_locations(img, locs, framing=framing)
    got = v["colors_at_hits"]
    v["ok"] = [bool(h) and (o.color is None or got[i] == o.color) for i, (h, o) in enumerate(zip(v["hits"], objs))]
    return v


def compose_stream(zoo: Zoo, objs: Sequence[Obj], background: str, steps: int, seed: int, num_samples: int,
                   bf16: bool, upsampling: str = "sharp", markers: str = "outline", parallel: bool = False,
                   size: int = TILE, every: float = 0.25, solver: str = "heun",
                   color_guidance: float = 1.0) -> Iterator[tuple]:
    """Sample the chosen background's composition and its counterpart with the same seeds
    (color_guidance: see build_denoiser; used only where an object asks for a colour).

    Yields ("progress", text, {setting: preview grid of the current x0 predictions}) while sampling
    and finally ("done", text, ClevrResult) with the detector's verdict drawn on every sample."""
    status = zoo_status(zoo)
    left, right = BACKGROUNDS[background]
    settings = (left, right) if status["settings"][right] else (left,)
    seeds = [int(seed) + i for i in range(int(num_samples))]
    cfg = SamplerConfig(num_steps=int(steps), solver=solver, dtype="bfloat16" if bf16 else "float32").validate()
    titles = {s: SETTINGS[s]["title"] for s in settings}
    t0 = time.perf_counter()
    colors_used = {}

    def job(s):
        def run(cb):
            den, shape, device, used = build_denoiser(zoo, s, objs, color_guidance)
            colors_used[s] = used
            return to_uint8(sample(den, seeds, shape, cfg, device=device, callback=cb))
        return run

    names = {s: s for s in settings}
    yield "progress", f"Sampling 0 % — loading the networks — {time.perf_counter() - t0:.1f} s", {}
    images = None
    for kind, data in stream_jobs({s: job(s) for s in settings}, parallel=parallel, every=every):
        if kind == "progress":
            previews = {}
            for s, info in data.items():
                x0 = to_uint8(info["x0"])
                previews[s] = panel(x0, objs, seeds, f"{titles[s]} — forming (x0 prediction)", size, upsampling,
                                    markers, step=f"step {info['i'] + 1}/{info['n']}")
            yield "progress", progress_text(data, names, t0), previews
        else:
            images = data
    verdicts, panels = {}, {}
    for s in settings:
        framing = setting_framing(zoo, s)  # judged in the frame its nets draw
        verdicts[s] = [_judge(im, objs, framing) for im in images[s]]
        panels[s] = panel(images[s], objs, seeds, titles[s], size, upsampling, markers, verdicts[s])
    dt = time.perf_counter() - t0
    config = {"objects": [dataclasses.asdict(o) for o in objs], "background": background, "settings": list(settings),
              "seeds": seeds, "sampler": dataclasses.asdict(cfg),
              "checkpoints": {r: n for r, n in status["roles"].items() if n}, "colors_used": colors_used,
              "color_guidance": float(color_guidance)}
    res = ClevrResult(settings=settings, titles=tuple(titles[s] for s in settings), images=images, verdicts=verdicts,
                      panels=panels, seeds=seeds, config=config, seconds=dt)
    yield "done", f"Done in {dt:.1f} s ({cfg.describe()}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} per side).", res


def compose(zoo: Zoo, objs: Sequence[Obj], background: str, steps: int, seed: int, num_samples: int, bf16: bool,
            **kw) -> ClevrResult:
    """compose_stream to the end: the ClevrResult."""
    out = None
    for kind, _, data in compose_stream(zoo, objs, background, steps, seed, num_samples, bf16, **kw):
        out = data
    return out


def headline(res: ClevrResult, objs: Sequence[Obj], steps: int, bf16: bool, solver: str = "heun") -> str:
    k = len(objs)
    s0, s1 = res.seeds[0], res.seeds[-1]
    seeds = f"seed {s0}" if s0 == s1 else f"seeds {s0}–{s1}"
    if k == 0:
        return f"No objects: samples of the background alone, {seeds} ({res.seconds:.1f} s)."
    head = (f"**{k} object{'s' if k != 1 else ''}**, {seeds}, {steps} {SOLVER_NAMES[solver]} steps{' (bf16)' if bf16 else ''}: "
            f"{res.seconds:.1f} s. Rings: requested places — solid blue = an object was detected there, "
            "dashed orange = missed; + = a detection.")
    if any(o.color for o in objs):
        unused = [SETTINGS[s]["title"] for s, u in res.config["colors_used"].items() if not u]
        head += " A hit needs the asked colour."
        g = res.config.get("color_guidance", 1.0)
        if g != 1.0 and any(res.config["colors_used"].values()):
            head += f" Colour guidance {g:g} (each coloured term is D_xy + {g:g} (D_xyc − D_xy))."
        if unused:
            head += f" Colours ignored by {', '.join(unused)} (its network has no colour per object)."
    return head + "\n\n" + res.summary_markdown()


# ---------------------------------------------------------------------------------------------
# Contribution maps |w_i (D_i − D_b)|.


def _colormap(v: np.ndarray, name: str = "magma") -> np.ndarray:
    from matplotlib import colormaps
    return (colormaps[name](np.clip(v, 0, 1))[..., :3] * 255).astype(np.uint8)


SHORT_TITLES = {"A": "A: empty background\n(projective)", "B": "B: unconditional\nbackground (Bayes)",
                "C": "C: cluttered\nbackground"}


def contribution_maps(zoo: Zoo, objs: Sequence[Obj], sigma, seed, settings: Sequence[str] = ("A", "B"),
                      tile: int = 112) -> tuple:
    """|w_i (D_i − D_b)| per concept (mean over RGB) at noise level σ, for each setting, at
    x = (the empty scene) + σ n(seed) -- the same x for every setting, so rows differ only by the
    background. Returns (image, {setting: [share of |Δ| within 0.15 widths of its object]})."""
    from PIL import Image, ImageDraw
    from ..sampling import noise_for_seeds

    sigma = number(sigma, "σ", 0.01, 80)
    seed = integer(seed, "seed", 0, SEED_MAX)
    if not objs:
        raise InputError("objects", "place at least one object first")
    settings = [s for s in settings if zoo_status(zoo)["settings"][s]]
    if not settings:
        raise InputError("background", "no Fig 3 setting can run with the checkpoints found")
    rows, locality = [], {}
    for s in settings:
        den, shape, device, _ = build_denoiser(zoo, s, objs)
        R = shape[-1]
        x0 = torch.from_numpy(empty_scene(R, setting_framing(zoo, s))).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
        x = x0 + float(sigma) * noise_for_seeds([int(seed)], shape)
        with torch.no_grad():
            c = den.contributions(x.to(device), torch.tensor([float(sigma)], device=device))  # [k, 1, C, H, W]
        rows.append(c[:, 0].abs().mean(1).float().cpu().numpy())
        yy, xx = np.mgrid[0:R, 0:R] + 0.5
        loc = []
        for m, o in zip(rows[-1], objs):
            near = (xx - o.x * R) ** 2 + (yy - o.y * R) ** 2 <= (0.15 * R) ** 2
            loc.append(float(m[near].sum() / max(m.sum(), 1e-12)))
        locality[s] = loc
    vmax = max(float(r.max()) for r in rows) or 1.0
    label_w, k = 160, len(objs)
    out = Image.new("RGB", (label_w + k * (tile + 4), len(rows) * (tile + 4) + 18), (255, 255, 255))
    d = ImageDraw.Draw(out)
    fnt = font(12)
    for i, o in enumerate(objs):
        d.text((label_w + i * (tile + 4) + 4, 2), f"object {i + 1} (w={o.w:g})", fill=(0, 0, 0), font=fnt)
    for r, (s, maps) in enumerate(zip(settings, rows)):
        y0 = 18 + r * (tile + 4)
        d.multiline_text((4, y0 + tile // 2 - 24), SHORT_TITLES[s], fill=(0, 0, 0), font=fnt, spacing=2)
        d.text((4, y0 + tile // 2 + 12), f"near its object: {np.mean(locality[s]) * 100:.0f}%", fill=(90, 90, 90), font=fnt)
        for i, m in enumerate(maps):
            im = Image.fromarray(_colormap(m / vmax)).resize((tile, tile), Image.NEAREST)
            _ring(ImageDraw.Draw(im), objs[i].x * tile, objs[i].y * tile, 7, HIT_RGB)
            out.paste(im, (label_w + i * (tile + 4), y0))
    return np.asarray(out), locality


# ---------------------------------------------------------------------------------------------
# Examples: each restores the whole state it shows.


def examples(status: dict) -> list:
    """[{label, objects, background, steps, seed, samples}] runnable with these checkpoints."""
    out, framing = [], status["framing"]
    if status["backgrounds"].get("empty"):
        out += [dict(label="3 objects, empty vs Bayes", objects=[Obj(x, y) for x, y in DEFAULT_OBJECTS],
                     background="empty", steps=16, seed=0, samples=4),
                dict(label="6 objects", objects=[Obj(x, y) for x, y in random_locations(6, 3, framing=framing)],
                     background="empty", steps=16, seed=1, samples=4),
                dict(label="NOT: negative weight", objects=[Obj(0.3, 0.5), Obj(0.7, 0.5), Obj(0.5, 0.7, -1.0)],
                     background="empty", steps=16, seed=2, samples=4)]
        if status["location_colors"]:
            cs = status["location_colors"]
            pick = [c for c in ("red", "blue", "yellow") if c in cs] or cs[:3]
            out.append(dict(label="a colour per object", objects=[Obj(x, y, 1.0, c) for (x, y), c in
                                                                  zip(DEFAULT_OBJECTS, pick)],
                            background="empty", steps=16, seed=0, samples=4))
    if status["backgrounds"].get("clutter"):
        out.append(dict(label="cluttered vs Bayes", objects=[Obj(x, y) for x, y in random_locations(4, 5, framing=framing)],
                        background="clutter", steps=16, seed=0, samples=4))
    return out


def example_note(ex: dict) -> str:
    k = len(ex["objects"])
    bg = dict((v, l) for l, v in BG_CHOICES)[ex["background"]]
    return (f"Example **{ex['label']}** loaded: {k} objects, background *{bg}*, seed {ex['seed']}, "
            f"{ex['samples']} samples, {ex['steps']} steps — composing…")
