"""`python -m projcomp.evaluate`: the paper's CLEVR figures and tables, judged by the detector.

    python -m projcomp.evaluate fig3   --settings A B C --k 1-9 --seeds 0-7 --outdir out/fig3
    python -m projcomp.evaluate table1 ...                  (alias of fig3: Table 1 is its counts)
    python -m projcomp.evaluate fig5   --seeds 0-15 --outdir out/fig5
    python -m projcomp.evaluate theory --outdir out/theory   (the exact-score toys, App. G etc.)
    python -m projcomp.evaluate rejudge --outdir out/fig3   (Table 1 again from saved samples)
    python -m projcomp.evaluate leak --checkpoint DIR [--scenes clutter] --outdir out/leak
                                        (|D_i - D_b| on the floor / at the other objects, per sigma)
    python -m projcomp.evaluate response --checkpoint DIR --outdir out/resp
                                        (how strongly the colour label moves D at its place, per sigma)
    ... --device cuda                    (fig3, fig5, leak, response: on a GPU; the same images per seed)

Fig 3 / Table 1: for each setting and k, k locations are drawn by the CLEVR scene sampler
(`--location-sets` sets per k) and each set is sampled with the listed seeds, the same seeds in
every setting (so A and B differ only in the background). The paper counted objects by hand; here
`projcomp.clevr.detect` counts them: exact-count rate, per-location hit rate, mean detected count.
Fig 5: yellow composed with each other colour; success = both colours detected. Per-channel
histograms of object pixels per colour (rendered data) show which channels are background-like.
Every command writes PNG grids, CSV + Markdown tables and config.json to --outdir. Grids are the
first N seeds: nothing is cherry-picked.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import time
from typing import Sequence

import numpy as np
import torch

from .compose import CompositionError
from .files import atomic_write_json
from .experiments import SETTINGS, color_spec, random_locations, setting_framing, setting_spec
from .zoo import Zoo, ZooError, torch_device
from .generate import parse_seeds, run_spec
from .imageio import from_uint8, image_grid, to_uint8
from .sampling import SOLVERS, SamplingError, churn_settings
from .stats import wilson  # noqa: F401 (also importable as projcomp.evaluate.wilson)

__all__ = ["fig3", "fig5", "judge_locations", "main", "rejudge"]


def judge_locations(image_u8: np.ndarray, locations: Sequence, radius_frac: float = 0.08,
                    colors: Sequence | None = None, framing: str = "centre") -> dict:
    """Detector verdict for one image against requested (x, y) in [0,1]: counts, hits, the colour
    detected at each hit place (matched against `colors` when given) and each place's contrast.
    framing: the square of CLEVR's frame the image shows (its net's dataset framing)."""
    from .clevr.detect import detect, match

    R = image_u8.shape[1]
    dets = detect(image_u8, framing=framing)
    req = [(x * R, y * R) for x, y in locations]
    m = match(dets, req, radius=max(1.5, radius_frac * R))
    got = [dets[a]["color"] if a is not None else None for a in m["assignment"]]
    out = {"num_detected": m["num_detected"], "num_requested": m["num_requested"], "exact_count": bool(m["exact_count"]),
           "hits": [bool(h) for h in m["hits"]], "colors_at_hits": got,
           "contrast": [float(c) for c in place_contrast(image_u8, locations, framing=framing)],
           "detections": [{"center": [float(c) for c in d["center"]], "color": d["color"]} for d in dets]}
    if colors is not None:
        out["requested_colors"] = list(colors)
        out["color_match"] = [None if g is None else bool(g == c) for g, c in zip(got, colors)]
    return out


_EMPTY_MEAN: dict = {}


def mean_empty_scene(resolution: int, n: int = 32, seed: int = 0, framing: str = "centre") -> np.ndarray:
    """The renderer's mean empty scene [R, R, 3] in [0, 1] (camera and light jitter averaged):
    the floor an object's contrast is measured against."""
    key = (resolution, n, seed, framing)
    if key not in _EMPTY_MEAN:
        _EMPTY_MEAN[key] = np.mean(empty_scenes(resolution, n, [0xF1002, seed], framing).astype(np.float64) / 255.0, axis=0)
    return _EMPTY_MEAN[key]


def empty_scenes(resolution: int, n: int, seed, framing: str = "centre") -> np.ndarray:
    """n rendered empty scenes uint8 [n, R, R, 3] (camera and light jitter from seed sequence
    (*seed, i)): the floor that contrast and leak are measured on."""
    return rendered_scenes(resolution, n, seed, 0, framing=framing)[0]


def rendered_scenes(resolution: int, n: int, seed, num_objects=(3, 5), floors: bool = False,
                    framing: str = "centre") -> tuple:
    """n rendered scenes uint8 [n, R, R, 3] (scene i from seed sequence (*seed, i); `num_objects` as
    sample_scene takes it) and each scene's object places [(x, y), ...] in [0, 1] image units, object
    0 first: the floor and the "other objects" that contrast and leak are measured on. floors=True
    adds a third array: each scene rendered without its objects (same camera and lights)."""
    from .clevr.render import render
    from .clevr.scene import sample_scene
    seed = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    imgs, places, bare = [], [], []
    for i in range(n):
        sc = sample_scene([*seed, i], num_objects, resolution=resolution, framing=framing)
        imgs.append(render(sc, resolution))
        places.append([(o["pixel_coords"][0] / resolution, o["pixel_coords"][1] / resolution) for o in sc["objects"]])
        if floors:
            bare.append(render({**sc, "objects": []}, resolution))
    return (np.stack(imgs), places, np.stack(bare)) if floors else (np.stack(imgs), places)


def place_contrast(image_u8: np.ndarray, locations: Sequence, radius_frac: float = 0.06,
                   framing: str = "centre") -> np.ndarray:
    """Per requested place: the peak colour distance ||img - floor|| / sqrt(3) (0 = floor,
    1 = black vs white) within a disc of radius max(1.5 px, radius_frac * R) around it. An
    object drawn there scores its own contrast, a faint 'ghost' (Bayes, App. G eq. 17) less,
    an empty floor ~0.05 (sampling noise)."""
    R = image_u8.shape[1]
    floor = mean_empty_scene(R, framing=framing)
    diff = np.linalg.norm(image_u8.astype(np.float64) / 255.0 - floor, axis=-1) / np.sqrt(3)
    yy, xx = np.mgrid[0:R, 0:R] + 0.5
    rad = max(1.5, radius_frac * R)
    out = []
    for x, y in locations:
        disc = (xx - x * R) ** 2 + (yy - y * R) ** 2 <= rad ** 2
        out.append(diff[disc].max() if disc.any() else 0.0)
    return np.asarray(out)


def _grid(images: np.ndarray, rows: int, cols: int, scale: int = 2, pad: int = 2) -> np.ndarray:
    """The evaluation figures' look: 2x nearest upscale, 2 px white gaps and margin."""
    return image_grid(images, cols, rows=rows, pad=pad, border=True, scale=scale)


def _write_table(rows: list, outdir: str, name: str, title: str) -> None:
    if not rows:
        return
    keys = list(rows[0])
    with open(os.path.join(outdir, f"{name}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    with open(os.path.join(outdir, f"{name}.md"), "w") as f:
        f.write(f"### {title}\n\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
        for r in rows:
            f.write("| " + " | ".join(fmt(r[k]) for k in keys) + " |\n")


def samples_key(setting: str, k: int, location_set: int) -> str:
    """The samples.npz key of one location set's images ("A/k3/set0"); "<key>/locations" and
    "<key>/colors" hold what was asked for, "<setting>/framing" the frame it was judged in."""
    return f"{setting}/k{int(k)}/set{int(location_set)}"


def parse_samples_key(key: str):
    """(setting, k, location set) of an images key of samples.npz, None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or not parts[1].startswith("k") or not parts[2].startswith("set"):
        return None
    return parts[0], int(parts[1][1:]), int(parts[2][3:])


def random_colors(k: int, location_set: int) -> list:
    """A colour per place for `--colors random`: drawn from CLEVR's eight by a seed of (k, set)."""
    from .clevr.scene import CLEVR_COLORS
    rng = np.random.default_rng([0xC010, int(k), int(location_set)])
    return [CLEVR_COLORS[i] for i in rng.integers(0, len(CLEVR_COLORS), size=k)]


def fig3(zoo: Zoo, settings: Sequence[str], ks: Sequence[int], seeds: Sequence[int], outdir: str,
         location_sets: int = 1, sampler: dict | None = None, resolution: int | None = None, batch: int = 16,
         weight: float = 1.0, colors: str | None = None, color_guidance: float = 1.0, log=print) -> list:
    """Fig 3 A/B/C and Table 1: detector counts per setting and k. `weight` is every term's w_i
    (1 = Def 5.1 as the paper uses it; w > 1 sharpens each p_i, CFG-style, and is not projective).
    colors='random' asks each place for a colour (nets with a colour per object; setting C's
    clutter net has none, so C keeps 'any colour') and scores the colour found at each hit;
    color_guidance g > 1 guides each asked colour inside its term (experiments.setting_spec)."""
    from PIL import Image

    os.makedirs(outdir, exist_ok=True)
    rows, per_image, samples = [], [], {}
    framings = {}
    for setting in settings:
        grid_rows = []
        # the places are drawn, and the samples judged, in the frame the setting's nets were trained on
        framing = framings[setting] = setting_framing(zoo, setting, resolution)
        for k in ks:
            stats = _new_stats()
            row_imgs = []
            for j in range(location_sets):
                locs = random_locations(k, seed=j, framing=framing)
                cols = None
                if colors == "random" and (zoo.entries[zoo.find(SETTINGS[setting]["terms"], resolution)]
                                           .get("condition") or {}).get("colors"):
                    cols = random_colors(k, j)
                spec = setting_spec(zoo, setting, locs, seeds, weights=[weight] * k, sampler=sampler, resolution=resolution,
                                    colors=cols, color_guidance=color_guidance)
                t0 = time.perf_counter()
                imgs = to_uint8(run_spec(spec, zoo, batch=batch))
                dt = time.perf_counter() - t0
                key = samples_key(setting, k, j)
                samples[key] = imgs
                samples[key + "/locations"] = np.asarray(locs, np.float64).reshape(-1, 2)
                if cols is not None:
                    samples[key + "/colors"] = np.asarray(cols)
                per_image += _judge_set(stats, imgs, locs, setting, j, seeds, cols, framing)
                if j == 0:
                    row_imgs = imgs
                log(f"setting {setting} k={k} set {j}: {len(seeds)} images in {dt:.1f}s")
            rows.append(_table_row(setting, k, stats))
            grid_rows.append(row_imgs)
        grid = _grid(np.concatenate(grid_rows), rows=len(ks), cols=len(seeds))
        Image.fromarray(grid).save(os.path.join(outdir, f"fig3_{setting}.png"))
    _write_table1(rows, per_image, outdir)
    # The samples themselves (uint8 NHWC per setting / k / location set, with the requested
    # locations), so that `rejudge` can count them again with another detector without sampling.
    np.savez_compressed(os.path.join(outdir, "samples.npz"), seeds=np.asarray(list(seeds)), **samples,
                        **{f"{s}/framing": np.asarray(f) for s, f in framings.items()})
    return rows


def _stored_framing(samples, setting: str) -> str:
    """The framing a fig3 run stored for a setting in samples.npz (runs before framings: centre)."""
    key = f"{setting}/framing"
    return str(samples[key]) if key in samples else "centre"


def rejudge(outdir: str, log=print) -> list:
    """Table 1 (and per_image.json) again from a fig3 run's samples.npz with the current detector
    (no sampling)."""
    path = os.path.join(outdir, "samples.npz")
    if not os.path.isfile(path):
        raise ValueError(f"{path!r}: not found (run `python -m projcomp.evaluate fig3 --outdir {outdir}` first)")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    seeds = data["seeds"].tolist()
    stats: dict = {}
    rows, per_image = [], []
    for key in data:  # images keys; ".../locations", ".../colors" -> what was asked for
        parsed = parse_samples_key(key)
        if parsed is not None:
            setting, k, j = parsed
            st = stats.setdefault((setting, k), _new_stats())
            cols = data[key + "/colors"].tolist() if key + "/colors" in data else None
            per_image += _judge_set(st, data[key], data[key + "/locations"].tolist(), setting, j, seeds, cols,
                                    _stored_framing(data, setting))
    for (setting, k), st in stats.items():
        rows.append(_table_row(setting, k, st))
        log(f"setting {setting} k={k}: exact {st['exact']}/{st['n']}")
    _write_table1(rows, per_image, outdir)
    return rows


# What must agree between fig3 runs for their samples to be one Table 1 (config.json keys).
MERGE_SAME = ("location_sets", "weight", "colors", "color_guidance", "steps", "bf16", "churn", "solver", "resolution")


def fig3_nets(zoo: Zoo, settings: Sequence[str], resolution: int | None = None) -> dict:
    """{setting: {"checkpoint": name, "weights_sha256": ...}} of the net that draws each setting (A, B
    and C's backgrounds come from the same nets as their terms), so that runs can be matched later."""
    from .checkpoint import WEIGHTS_NAME, file_sha256
    from .experiments import setting_term_model
    out = {}
    for s in settings:
        name = setting_term_model(zoo, s, resolution)
        path = os.path.join(zoo.root, name, WEIGHTS_NAME)
        out[s] = {"checkpoint": name, "weights_sha256": file_sha256(path) if os.path.isfile(path) else None}
    return out


def merge(inputs: Sequence[str], outdir: str, log=print) -> list:
    """One Table 1 from several fig3 runs of the same protocol that cover different seeds (or
    different k / settings): e.g. seeds 0-7 from one run and 8-31 from another, or k = 1..4 and
    5..9 sampled in two processes. A seed's image does not depend on the other seeds in its run
    (per-seed noise), so the merged samples are those one run over all the seeds would have made.
    Refuses, naming the run and the key, runs sampled differently (MERGE_SAME, the nets' weights
    where recorded, the places and colours asked for, the framing), a seed sampled twice, and a
    result whose parts cover different seeds. Writes samples.npz, Table 1, per_image.json, the
    grids (first 8 seeds of location set 0) and config.json with every input's command."""
    from PIL import Image

    if len(inputs) < 2:
        raise ValueError("merge: give at least two fig3 --outdir folders")
    out_real = os.path.realpath(outdir)
    configs, datas = [], []
    for d in inputs:
        if os.path.realpath(d) == out_real:
            raise ValueError(f"merge: --outdir {outdir!r} is one of the inputs; write the merged run to a new folder")
        path, cpath = os.path.join(d, "samples.npz"), os.path.join(d, "config.json")
        if not os.path.isfile(path) or not os.path.isfile(cpath):
            raise ValueError(f"{d!r}: no samples.npz and config.json there (not a fig3 --outdir)")
        with open(cpath) as f:
            configs.append(json.load(f))
        with np.load(path) as z:
            datas.append({k: z[k] for k in z.files})
    first = configs[0]
    for d, c in zip(inputs[1:], configs[1:]):
        for key in MERGE_SAME:
            if c.get(key) != first.get(key):
                raise ValueError(f"{d!r}: {key} = {c.get(key)!r} but {inputs[0]!r} has {first.get(key)!r}; "
                                 "merge only runs sampled alike")
    nets: dict = {}  # setting -> (weights sha, the run that recorded it)
    for d, c in zip(inputs, configs):
        for s, rec in (c.get("nets") or {}).items():
            sha = rec.get("weights_sha256")
            if sha and s in nets and nets[s][0] != sha:
                raise ValueError(f"{d!r}: setting {s} was sampled by other weights than in {nets[s][1]!r} "
                                 f"({sha[:12]} vs {nets[s][0][:12]})")
            if sha:
                nets.setdefault(s, (sha, d))
    parts: dict = {}  # "A/k3/set0" -> [(seeds, images)]
    asked: dict = {}  # "A/k3/set0/locations" (or /colors, A/framing) -> (value, the run it came from)
    for d, data in zip(inputs, datas):
        seeds = [int(s) for s in data["seeds"].tolist()]
        for key, val in data.items():
            if key == "seeds":
                continue
            if parse_samples_key(key) is not None:
                parts.setdefault(key, []).append((seeds, val))
                continue
            if key in asked and not (np.shape(asked[key][0]) == np.shape(val) and np.array_equal(asked[key][0], val)):
                raise ValueError(f"{d!r}: {key} differs from {asked[key][1]!r}'s; these runs asked for other places "
                                 "or colours")
            asked.setdefault(key, (val, d))
    merged, seed_list = {}, None
    for key, ps in parts.items():
        seeds = [s for ss, _ in ps for s in ss]
        dup = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
        if dup:
            raise ValueError(f"{key}: seed {dup[0]} was sampled by more than one input; give each seed once")
        order = np.argsort(seeds, kind="stable")
        merged[key] = np.concatenate([imgs for _, imgs in ps])[order]
        seeds = sorted(seeds)
        if seed_list is None:
            seed_list, seed_key = seeds, key
        elif seeds != seed_list:
            raise ValueError(f"{key} covers seeds {_span(seeds)} but {seed_key} covers {_span(seed_list)}; "
                             "the merged runs must give every setting, k and location set the same seeds")
    if not merged:
        raise ValueError("merge: the inputs hold no samples")
    # rows in (setting, k, location set) order whichever way the inputs split the work
    merged = dict(sorted(merged.items(), key=lambda kv: parse_samples_key(kv[0])))
    os.makedirs(outdir, exist_ok=True)
    np.savez_compressed(os.path.join(outdir, "samples.npz"), seeds=np.asarray(seed_list), **merged,
                        **{k: v for k, (v, _) in asked.items()})
    atomic_write_json(os.path.join(outdir, "config.json"), {
        "cmd": "merge", **{k: first.get(k) for k in MERGE_SAME}, "seeds": _span(seed_list),
        "nets": {s: {"weights_sha256": sha} for s, (sha, _) in nets.items()},
        # paths as given, but never this machine's absolute ones (results get shipped)
        "inputs": [_portable({"outdir": d, "command": c.get("command")}) for d, c in zip(inputs, configs)]})
    rows = rejudge(outdir, log=log)
    keys = [parse_samples_key(k) for k in merged]
    for setting in sorted({st for st, _, _ in keys}):
        # the first 8 seeds of location set 0, a row per k, as fig3 draws them
        grid_rows = [merged[samples_key(st, k, j)][:8] for st, k, j in keys if st == setting and j == 0]
        if grid_rows:
            grid = _grid(np.concatenate(grid_rows), rows=len(grid_rows), cols=min(8, len(seed_list)))
            Image.fromarray(grid).save(os.path.join(outdir, f"fig3_{setting}.png"))
    return rows


def _span(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (for messages and config.json)."""
    out, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        out.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(out)


def _new_stats() -> dict:
    return {"exact": 0, "hits": 0, "req": 0, "det": 0, "n": 0, "contrast": [], "col_ok": 0, "col_n": 0}


def _judge_set(stats: dict, imgs, locs: list, setting: str, location_set: int, seeds: Sequence[int],
               colors: Sequence | None = None, framing: str = "centre") -> list:
    """Judge one location set's samples, add them to `stats`; their per-image verdicts."""
    out = []
    for s, img in zip(seeds, imgs):
        v = judge_locations(img, locs, colors=colors, framing=framing)
        stats["exact"] += v["exact_count"]
        stats["hits"] += sum(v["hits"])
        stats["req"] += len(locs)
        stats["det"] += v["num_detected"]
        stats["n"] += 1
        stats["contrast"] += v["contrast"]
        for ok in v.get("color_match", []):
            if ok is not None:
                stats["col_ok"] += ok
                stats["col_n"] += 1
        out.append({"setting": setting, "k": len(locs), "location_set": location_set, "seed": int(s),
                    "locations": locs, **v})
    return out


def _table_row(setting: str, k: int, stats: dict) -> dict:
    ex_lo, ex_hi = wilson(stats["exact"], stats["n"])
    hit_lo, hit_hi = wilson(stats["hits"], stats["req"])
    return {"setting": setting, "k": k, "images": stats["n"],
            "exact_count_rate": stats["exact"] / stats["n"], "exact_ci95": f"{ex_lo:.2f}-{ex_hi:.2f}",
            "location_hit_rate": stats["hits"] / max(stats["req"], 1), "hit_ci95": f"{hit_lo:.2f}-{hit_hi:.2f}",
            "mean_detected": stats["det"] / stats["n"],
            "mean_contrast": float(np.mean(stats["contrast"])) if stats["contrast"] else 0.0,
            "color_match_at_hits": stats["col_ok"] / stats["col_n"] if stats["col_n"] else None}


LEAK_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
LEAK_SCENE_SEEDS = {"empty": 0x1EA4, "clutter": 0xC1A7}  # leak()'s renders: scene i of seed s is (this, s, i)


@torch.no_grad()
def leak(net, k: int = 4, location_sets: int = 4, images: int = 8, sigmas: Sequence[float] = LEAK_SIGMAS,
         radius: float = 0.15, seed: int = 0, scenes: str = "empty", background=None, framing: str = "centre") -> list:
    """What Def 5.1 multiplies: per noise level, the mean |D_i - D_b| AWAY from object i (pixels
    farther than `radius` image widths from its place: the leak, which k terms add k times) and
    NEAR it (within `radius`: the object the term is for). Exact factorized conditionals (Def 5.2)
    have zero leak. D_b is `background` (a condition; default the net's 'empty' label, else its
    null label). Returns one row per sigma.

    scenes='empty': x = x0 + sigma n over rendered empty scenes, k places per location set.
    scenes='clutter': x0 = rendered scenes of 3-5 objects, term i asks for object 0's place; the
    rows add |D_i - D_b| AT THE OTHER objects (within 0.09 image widths of them): the places where
    the other terms of a composition put their objects, which a single-object net never saw in
    training beside its own, and where Def 5.1 adds k - 1 such differences. They also say how much
    of those other objects each denoiser keeps: kept = <D - floor, x0 - floor> / |x0 - floor|^2 over
    their pixels (floor = the same scene rendered without objects; 1 = keeps the object, 0 = paints
    floor there, as the exact denoiser of an empty-scene or single-object distribution would), for
    D_i (kept_by_term) and D_b (kept_by_background). Their difference is the share of every other
    object that one term adds (> 0) or erases (< 0) in a composition, k - 1 times over."""
    R = net.img_resolution
    dev = next(net.parameters()).device
    if background is None:
        background = "empty" if getattr(net.encoder, "has_empty", False) else None
    yy, xx = torch.meshgrid((torch.arange(R) + 0.5) / R, (torch.arange(R) + 0.5) / R, indexing="ij")
    yy, xx = yy.to(dev), xx.to(dev)
    g = torch.Generator().manual_seed(seed)
    if scenes not in LEAK_SCENE_SEEDS:
        raise ValueError(f"scenes: {scenes!r} is not 'empty' or 'clutter'")
    if scenes == "clutter":
        imgs, places, bare = rendered_scenes(R, images * location_sets, [LEAK_SCENE_SEEDS[scenes], seed], floors=True,
                                             framing=framing)
        x0, floor = from_uint8(imgs), from_uint8(bare).to(dev)
        obj = x0.to(dev) - floor              # each scene's objects, x0 - floor
        energy = (obj ** 2).sum(1)            # [n, R, R]: |x0 - floor|^2 per pixel
        floor2, obj2 = floor.repeat(2, 1, 1, 1), obj.repeat(2, 1, 1, 1)  # for D_i and D_b alike
    else:
        x0 = from_uint8(empty_scenes(R, images, [LEAK_SCENE_SEEDS[scenes], seed], framing))
    rows = []
    for sigma in sigmas:
        far, near, others, kept_i, kept_b = [], [], [], [], []
        if scenes == "clutter":
            x = (x0 + sigma * torch.randn(x0.shape, generator=g)).to(dev)
            n = len(places)  # one batched call: D_i (object 0's place) and D_b for every scene
            c = torch.stack([net.encode_cond(list(p[0])) for p in places] + [net.encode_cond(background)] * n).to(dev)
            D = net(x.repeat(2, 1, 1, 1), torch.full((2 * n,), float(sigma), device=dev), c)
            diff = (D[:n] - D[n:]).abs().mean(1)  # [n, R, R], mean over channels
            kept = ((D - floor2) * obj2).sum(1)  # [2n, R, R]: <D - floor, x0 - floor> per pixel
            for n_, pl in enumerate(places):
                d = torch.stack([((xx - px) ** 2 + (yy - py) ** 2).sqrt() for px, py in pl])
                own = d[0] <= radius
                oth = (d[1:] <= 0.09).any(0) & ~own
                floor = d.min(0).values > radius
                near.append(float(diff[n_][own].mean()))
                others.append(float(diff[n_][oth].mean()))
                far.append(float(diff[n_][floor].mean()))
                e = float(energy[n_][oth].sum())
                if e > 0:
                    kept_i.append(float(kept[n_][oth].sum()) / e)
                    kept_b.append(float(kept[n + n_][oth].sum()) / e)
        else:
            for j in range(location_sets):
                locs = random_locations(k, seed=j, framing=framing)
                x = (x0 + sigma * torch.randn(x0.shape, generator=g)).to(dev)
                conds = [net.encode_cond(xy) for xy in locs] + [net.encode_cond(background)]
                xb = x.repeat(len(conds), 1, 1, 1)
                cb = torch.stack(conds).to(dev).repeat_interleave(images, 0)
                D = net(xb, torch.full((xb.shape[0],), float(sigma), device=dev), cb).reshape(len(conds), images, 3, R, R)
                for i, (px, py) in enumerate(locs):
                    diff = (D[i] - D[-1]).abs().mean(1)  # [images, R, R], mean over channels
                    mask = ((xx - px) ** 2 + (yy - py) ** 2) <= radius ** 2
                    near.append(float(diff[:, mask].mean()))
                    far.append(float(diff[:, ~mask].mean()))
        row = {"sigma": float(sigma), "leak_far": float(np.mean(far)), "signal_near": float(np.mean(near)),
               "leak_ratio": float(np.mean(far) / max(np.mean(near), 1e-12))}
        if scenes == "clutter":
            row.update({"at_other_objects": float(np.mean(others)),
                        "others_ratio": float(np.mean(others) / max(np.mean(near), 1e-12)),
                        "kept_by_term": float(np.mean(kept_i)), "kept_by_background": float(np.mean(kept_b)),
                        "term_minus_background": float(np.mean(kept_i) - np.mean(kept_b))})
        rows.append(row)
    return rows


RESPONSE_SIGMAS = (0.5, 1.0, 2.0, 5.0)
RESPONSE_SCENE_SEED = 0xC0105  # response()'s renders: scene i of seed s is (this, s, i)


def colour_response(net, scenes: int = 24, sigmas: Sequence[float] = RESPONSE_SIGMAS, radius_px: float = 1.6,
                    seed: int = 0, framing: str = "centre") -> list:
    """How strongly the colour label moves D where it asks for an object: the first thing a net
    with a colour per object must learn, and what decides the colour of a single term's sample.

    Renders `scenes` one-object scenes; each scene is also rendered with its object in every
    palette colour (same shape, size, material, place, camera and lights). At each sigma the net
    denoises x = x0 + sigma n (x0 the scene as drawn) once per asked colour, {"xy": object's place,
    "color": c}, and the mean predicted chroma (RGB minus its grey mean, [-1, 1] units) in a disc
    of `radius_px` around the place is read for each c. Reported per sigma:
      response  the spread of that chroma over the asked colours (std over colours, mean over RGB);
      data      the same spread for the renders themselves, averaged over scenes per colour first:
                E[x0 | colour, place] -- what the exact denoiser predicts as sigma grows, so
                gain = response / data is 1 for a net that has learnt the conditional at large sigma;
      recovered the fraction of (scene, colour) pairs whose predicted chroma, taken relative to the
                mean over asked colours and scaled by one factor per scene (least squares onto the
                data's), lies nearest the asked colour's among the data's eight: is each asked colour
                told apart from the others, whatever the response's strength."""
    from .clevr.render import render
    from .clevr.scene import sample_scene
    colors = list(getattr(net.encoder, "colors", None) or [])
    if not colors:
        raise ValueError("checkpoint: this net has no colour per object (its condition schema has no 'colors')")
    R = net.img_resolution
    dev = next(net.parameters()).device
    yy, xx = np.mgrid[0:R, 0:R] + 0.5
    x0s, places, by_colour = [], [], []
    for i in range(scenes):
        sc = sample_scene([RESPONSE_SCENE_SEED, seed, i], 1, resolution=R, framing=framing)
        ob = sc["objects"][0]
        places.append((ob["pixel_coords"][0] / R, ob["pixel_coords"][1] / R))
        by_colour.append([render({**sc, "objects": [{**ob, "color": c}]}, R) for c in colors])
        x0s.append(by_colour[-1][colors.index(ob["color"])] if ob["color"] in colors else render(sc, R))
    disc = torch.from_numpy(np.stack([((xx - px * R) ** 2 + (yy - py * R) ** 2 <= radius_px ** 2)
                                      for px, py in places]).astype(np.float32)).to(dev)  # [n, R, R]

    def chroma(img, d):  # [..., 3, R, R] and a disc broadcastable to it -> mean chroma in the disc, [..., 3]
        rgb = (img * d).sum((-2, -1)) / d.sum((-2, -1))
        return rgb - rgb.mean(-1, keepdim=True)

    C = len(colors)
    renders = from_uint8(np.stack(by_colour).reshape(-1, R, R, 3)).to(dev).reshape(scenes, C, 3, R, R)
    ref = chroma(renders, disc[:, None, None])              # [n, C, 3]
    ref_mean = ref.mean(0)                                  # [C, 3]: E[chroma | colour] over scenes
    data_spread = float(ref_mean.std(0).mean())
    ref_dev = ref_mean - ref_mean.mean(0, keepdim=True)     # [C, 3]
    labels = torch.stack([net.encode_cond({"xy": p, "color": c}) for p in places for c in colors]).to(dev)
    x0 = from_uint8(np.stack(x0s)).to(dev)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        x = x0 + sigma * torch.randn(x0.shape, generator=g).to(dev)
        with torch.no_grad():
            D = net(x.repeat_interleave(C, 0), torch.full((len(labels),), float(sigma), device=dev), labels)
        ch = chroma(D.reshape(len(places), C, 3, R, R), disc[:, None, None])      # [n, C, 3]
        spread = ch.std(1).mean(-1)                                             # [n]
        dev_ = ch - ch.mean(1, keepdim=True)                                   # [n, C, 3]
        scale = ((dev_ * ref_dev).sum((1, 2)) / (dev_ ** 2).sum((1, 2)).clamp_min(1e-12)).clamp_min(0)
        dist = torch.cdist(scale[:, None, None] * dev_, ref_dev[None].expand(len(places), -1, -1))  # [n, C, C]
        hit = dist.argmin(-1) == torch.arange(C, device=dev)                    # [n, C]
        rows.append({"sigma": float(sigma), "response": float(spread.mean()), "data": data_spread,
                     "gain": float(spread.mean()) / max(data_spread, 1e-12), "recovered": float(hit.float().mean())})
    return rows


def handcheck(outdir: str, n: int = 50, seed: int = 0, hand: Sequence[int] | None = None, log=print) -> dict:
    """Check the detector on GENERATED samples (it was tuned on clean renders): draw `n` images
    at random from a fig3 run's samples.npz, write them as a numbered sheet (handcheck.png) for a
    person to count, and the detector's counts to handcheck.json. With `hand` (the person's counts,
    in sheet order) also the agreement: exact-count agreement rate and mean |difference|."""
    from PIL import Image, ImageDraw

    from .clevr.detect import detect
    from .imageio import image_grid

    path = os.path.join(outdir, "samples.npz")
    if not os.path.isfile(path):
        raise ValueError(f"{path!r}: not found (run `python -m projcomp.evaluate fig3 --outdir {outdir}` first)")
    with np.load(path) as z:
        keys = [k for k in z.files if parse_samples_key(k) is not None]
        pool = [(k, i) for k in keys for i in range(len(z[k]))]
        rng = np.random.default_rng(seed)
        pick = [pool[j] for j in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]
        imgs = [z[k][i] for k, i in pick]
        framings = [_stored_framing(z, parse_samples_key(k)[0]) for k, _ in pick]
    det = [len(detect(img, framing=f)) for img, f in zip(imgs, framings)]
    scale, cols, label_h = 6, 10, 14
    tiles = []
    for j, img in enumerate(imgs):  # the number above each tile, so the sheet can be counted blind
        big = img.repeat(scale, 0).repeat(scale, 1)
        t = Image.new("RGB", (big.shape[1], big.shape[0] + label_h), "white")
        t.paste(Image.fromarray(big), (0, label_h))
        ImageDraw.Draw(t).text((2, 1), str(j), fill="black")
        tiles.append(np.asarray(t))
    Image.fromarray(image_grid(tiles, cols=cols, pad=6, border=True)).save(os.path.join(outdir, "handcheck.png"))
    out = {"images": [{"sheet_index": j, "sample": k, "index": int(i), "detected": d}
                      for j, ((k, i), d) in enumerate(zip(pick, det))], "seed": seed}
    if hand is not None:
        if len(hand) != len(det):
            raise ValueError(f"--hand: {len(hand)} counts for {len(det)} images on the sheet")
        hand = [int(h) for h in hand]
        out["hand"] = hand
        out["agreement"] = float(np.mean([h == d for h, d in zip(hand, det)]))
        out["mean_abs_difference"] = float(np.mean([abs(h - d) for h, d in zip(hand, det)]))
        out["detector_minus_hand"] = float(np.mean([d - h for h, d in zip(hand, det)]))
        log(f"detector vs hand: exact agreement {out['agreement']:.2f}, mean |diff| {out['mean_abs_difference']:.2f}")
    with open(os.path.join(outdir, "handcheck.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def _write_table1(rows: list, per_image: list, outdir: str) -> None:
    _write_table(rows, outdir, "table1", "Table 1 (detector counts): exact-count rate, per-location hit rate, mean detected count")
    with open(os.path.join(outdir, "per_image.json"), "w") as f:
        json.dump(per_image, f)


def _judge_colours(img: np.ndarray, base: str, other: str, framing: str = "centre") -> dict:
    """Detector verdict for one Fig 5 sample: objects, their colours and the outcome."""
    from .clevr.detect import detect

    cols = [d["color"] for d in detect(img, framing=framing)]
    two = len(cols) == 2 and sorted(cols) == sorted([base, other])
    return {"colours": cols, "two_objects": bool(two), "both_colours": base in cols and other in cols,
            "one_object": len(cols) == 1}


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"count": int(k), "rate": k / max(n, 1), "ci95": [lo, hi]}


def fig5_toy(stats: dict, base: str = "yellow", num_seeds: int = 256, num_steps: int = 32, log=print) -> dict:
    """The exact-score colour toy (projcomp.theory.colours) with the renders' measured colours:
    'renderer' = our floor (the empty scene under the objects) and object-minus-floor colours;
    'paper floor' = the same objects over a grey floor at the base colour's mean R/G level (the
    paper's premise that yellow differs from the floor only in B), the one controlled change."""
    from .clevr.colorstats import toy_colours
    from .theory.colours import colour_toy

    floor, cols = toy_colours(stats)
    objects = {c: stats["object_mean"][i] / 127.5 - 1.0 for i, c in enumerate(stats["colors"])}
    grey = float(stats["object_mean"][stats["colors"].index(base)][:2].mean()) / 127.5 - 1.0
    out = {}
    for name, f, c in (("renderer", floor, cols), ("paper_floor", np.full(3, grey), objects)):
        r = colour_toy(f, c, base=base, num_seeds=num_seeds, num_steps=num_steps)
        out[name] = r
        log(f"toy ({name}): " + ", ".join(f"{p['pair']} {p['two_objects']['rate']:.2f}" for p in r["pairs"]))
    return out


def fig5(zoo: Zoo, seeds: Sequence[int], outdir: str, base: str = "yellow", sampler: dict | None = None,
         resolution: int | None = None, batch: int = 16, background: str = "auto", toy_seeds: int = 256,
         stats_n: int = 24, grid_cols: int = 8, log=print) -> list:
    """Fig 5: `base` composed with each other colour over `background` (see color_spec).

    Success = the detector finds exactly two objects, one `base` and one of the other colour (rate
    with a 95 % Wilson interval); also reported: both colours present, one object. Beside it, from
    the renders (projcomp.clevr.colorstats): per-channel histograms and Lemma 8.1's cosines per
    pair; and the exact-score toy's rates. Grids show the first `grid_cols` seeds of every pair."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from .clevr.colorstats import albedo_matching, colour_statistics, histogram_figure, pair_verdicts, summary
    from .clevr.scene import CLEVR_COLORS
    from .theory.colours import strips_to_image

    if base not in CLEVR_COLORS:
        raise CompositionError(f"base: {base!r} is not one of {CLEVR_COLORS}")
    os.makedirs(outdir, exist_ok=True)
    others = [c for c in CLEVR_COLORS if c != base]
    specs = {o: color_spec(zoo, [base, o], seeds, sampler=sampler, resolution=resolution, background=background) for o in others}
    spec0 = specs[others[0]]
    bg_is_empty = spec0.background.cond == "empty" or zoo.role_of(spec0.background.model) == "empty"
    res = zoo.resolution_of(spec0.terms[0].model)
    framing = zoo.framing_of(spec0.terms[0].model)
    log(f"fig5: {spec0.terms[0].model} over {spec0.background.name} ({spec0.background.model}), {res}px")
    stats = colour_statistics(res, n=stats_n)
    verdicts = {v["pair"]: v for v in pair_verdicts(stats, base, others, "empty" if bg_is_empty else "any")}
    # Controlled change of the background only: the same scenes re-rendered with the floor at the
    # base colour's R/G level (the paper's premise); Lemma 8.1 over that empty scene.
    albedo = albedo_matching(stats, base)
    stats_ctrl = colour_statistics(res, n=stats_n, ground_albedo=albedo)
    ctrl = {v["pair"]: v for v in pair_verdicts(stats_ctrl, base, others, "empty")}
    toy = fig5_toy(stats, base, num_seeds=toy_seeds, log=log) if toy_seeds > 0 else {}

    rows, per_image, grids = [], [], []
    for o in others:
        imgs = to_uint8(run_spec(specs[o], zoo, batch=batch))
        judged = [_judge_colours(img, base, o, framing) for img in imgs]
        pair, n = f"{base}+{o}", len(imgs)
        two = _rate(sum(j["two_objects"] for j in judged), n)
        v = verdicts[pair]
        row = {"pair": pair, "images": n, "two_objects_rate": two["rate"], "ci95_lo": two["ci95"][0], "ci95_hi": two["ci95"][1],
               "both_colours_rate": sum(j["both_colours"] for j in judged) / n,
               "one_object_rate": sum(j["one_object"] for j in judged) / n,
               "mean_detected": float(np.mean([len(j["colours"]) for j in judged])),
               "lemma81_cos": v["cos"], "predicts": v["predicts"], "lemma81_cos_paper_floor": ctrl[pair]["cos"]}
        for name, r in toy.items():
            t = next(p for p in r["pairs"] if p["pair"] == pair)
            row[f"toy_{name}_two_objects"] = t["two_objects"]["rate"]
        rows.append(row)
        per_image += [{"pair": pair, "seed": int(s), **j} for s, j in zip(specs[o].seeds, judged)]
        grids.append(imgs[:grid_cols])
        log(f"{pair}: two objects (one of each) in {two['count']}/{n} [{two['ci95'][0]:.2f}, {two['ci95'][1]:.2f}], "
            f"cos {v['cos']:.2f} -> {v['predicts']}")
    # Control: each colour's conditional ALONE over the same background (one term: Def 5.1 gives
    # D_c itself). A pair can only show "one yellow and one c" as often as the net draws the colour
    # it is asked for; this rate separates the net's colour training from factorization.
    single = []
    for c in [base] + others:
        imgs = to_uint8(run_spec(color_spec(zoo, [c], seeds, sampler=sampler, resolution=resolution, background=background),
                                 zoo, batch=batch))
        found = [_judge_colours(img, c, c, framing)["colours"] for img in imgs]
        r = _rate(sum(c in f for f in found), len(imgs))
        single.append({"color": c, "images": len(imgs), "asked_colour_found_rate": r["rate"], "ci95_lo": r["ci95"][0],
                       "ci95_hi": r["ci95"][1], "one_object_of_it_rate": sum(f == [c] for f in found) / len(imgs),
                       "mean_detected": float(np.mean([len(f) for f in found]))})
    log("alone: " + ", ".join(f"{r['color']} {r['asked_colour_found_rate']:.2f}" for r in single))
    _write_table(single, outdir, "fig5_single", f"Fig 5 control: each colour's conditional alone over {spec0.background.name}; "
                 "how often the detector finds the colour asked for (95 % Wilson interval)")
    cols = min(grid_cols, len(seeds))
    Image.fromarray(_grid(np.concatenate(grids), rows=len(grids), cols=cols)).save(os.path.join(outdir, "fig5_grid.png"))
    _write_table(rows, outdir, "fig5", f"Fig 5: {base} + each colour over {spec0.background.name}; success = detector finds "
                 f"two objects, one of each colour (95 % Wilson interval)")
    fig = histogram_figure(stats, highlight=(base,), title=f"object pixels per colour vs the empty scene ({res}px renders, "
                           f"{stats_n} scenes each)")
    fig.savefig(os.path.join(outdir, "fig5_histograms.png"))
    plt.close(fig)
    fig = histogram_figure(stats_ctrl, highlight=(base,), title=f"control: floor albedo {albedo:.3f} (floor at {base}'s R/G level)")
    fig.savefig(os.path.join(outdir, "fig5_histograms_paper_floor.png"))
    plt.close(fig)
    toy_rows = []
    for name, r in toy.items():
        for p in r["pairs"]:
            toy_rows.append({"floor": name, "pair": p["pair"], "seeds": p["seeds"], "two_objects_rate": p["two_objects"]["rate"],
                             "ci95_lo": p["two_objects"]["ci95"][0], "ci95_hi": p["two_objects"]["ci95"][1],
                             "one_blended_rate": p["one_blended"]["rate"], "target_two_objects": p["target"]["two_objects"],
                             "cos_object_minus_floor": p["target"]["cos"]})
    if toy:
        _write_table(toy_rows, outdir, "fig5_toy", "Fig 5 exact-score strip toy: two objects (one of each colour) sampled "
                     "vs the exact target C[p]")
        strips = [np.concatenate([strips_to_image(r["samples"][f"{base}+{o}"][:grid_cols])]) for r in toy.values() for o in others]
        width = max(a.shape[1] for a in strips)
        strips = [np.pad(a, ((0, 12), (0, width - a.shape[1]), (0, 0)), constant_values=255) for a in strips]
        Image.fromarray(np.concatenate(strips)).save(os.path.join(outdir, "fig5_toy_grid.png"))
    results = {
        "base": base, "background": {"model": spec0.background.model, "cond": spec0.background.cond, "name": spec0.background.name},
        "colour_model": spec0.terms[0].model, "resolution": res, "seeds": [int(s) for s in seeds],
        "sampler": spec0.sampler if isinstance(spec0.sampler, dict) else dict(sampler or {}),
        "nets": rows, "single_colour_control": single, "per_image": per_image, "lemma81": list(verdicts.values()),
        "lemma81_background": "empty scene" if bg_is_empty else "one object of any colour",
        "histograms": summary(stats),
        "paper_floor_renders": {"ground_albedo": albedo, "lemma81": list(ctrl.values()), "histograms": summary(stats_ctrl)},
        "toy": {name: {"config": r["config"], "pairs": r["pairs"]} for name, r in toy.items()},
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=lambda o: o.__dict__ if hasattr(o, "__dict__") else str(o))
    return rows


def _portable(config: dict) -> dict:
    """The config with this machine's absolute paths replaced (relative to the working directory
    when inside it, else the base name), so that results can be shipped."""
    def fix(v):
        if isinstance(v, str):
            out = []
            for tok in v.split(" "):
                if os.path.isabs(tok):
                    rel = os.path.relpath(tok)
                    tok = rel if not rel.startswith("..") else os.path.basename(tok.rstrip(os.sep))
                out.append(tok)
            return " ".join(out)
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return {k: fix(v) for k, v in config.items()}


def _per_checkpoint(folders: Sequence[str], device, measure) -> list:
    """`measure(net, framing)` rows for each checkpoint folder, each row tagged with the folder's
    name and images seen; every net is read in the framing it was trained on."""
    from .checkpoint import load
    rows = []
    for folder in folders:
        net = load(folder, channels_last=False, device=device)
        cfg = getattr(net, "config", {}) or {}
        framing = (cfg.get("dataset") or {}).get("framing", "centre")
        rows += [{"checkpoint": os.path.basename(os.path.normpath(folder)), "images_seen": cfg.get("images_seen"), **r}
                 for r in measure(net, framing)]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m projcomp.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("fig3", "table1"):
        p = sub.add_parser(name, help="Fig 3 settings A/B/C and Table 1 counts")
        p.add_argument("--settings", nargs="+", default=["A", "B", "C"], choices=sorted(SETTINGS))
        p.add_argument("--k", nargs="+", default=["1-9"], help="object counts, e.g. 1-9")
        p.add_argument("--location-sets", type=int, default=1, help="random location sets per k")
        p.add_argument("--weight", type=float, default=1.0, help="every term's weight w_i (1 = the paper's operator)")
        p.add_argument("--colors", choices=["any", "random"], default="any",
                       help="'random': ask each place for a random colour (nets with a colour per object) and "
                            "score the colour detected at each hit")
        p.add_argument("--color-guidance", type=float, default=1.0,
                       help="with --colors random: each term D_xy + g (D_xyc - D_xy), classifier-free guidance of "
                            "the colour inside the term (1 = the plain colour term)")
    p5 = sub.add_parser("fig5", help="Fig 5 colour composition + per-channel histograms + exact-score toy")
    p5.add_argument("--base", default="yellow")
    p5.add_argument("--background", default="auto", choices=["auto", "empty", "null"],
                    help="what the colours are composed over (auto: the colour net's 'empty' label when it has one)")
    p5.add_argument("--toy-seeds", type=int, default=256, help="seeds per pair for the exact-score toy (0: skip it)")
    p5.add_argument("--stats-scenes", type=int, default=24, help="rendered scenes per colour for histograms / Lemma 8.1")
    p5.add_argument("--grid-cols", type=int, default=8, help="first N seeds per pair in the grids")
    pt = sub.add_parser("theory", help="the exact-score toys (App. G eq. 17/18, 2-D experts, feature maps)")
    pr = sub.add_parser("rejudge", help="Table 1 again from a fig3 --outdir's samples.npz with the current detector")
    pm = sub.add_parser("merge", help="one Table 1 from fig3 runs of the same protocol over different seeds (or k)")
    pm.add_argument("--inputs", nargs="+", required=True, help="fig3 --outdir folders to merge")
    ph = sub.add_parser("handcheck", help="a numbered sheet of N generated samples from a fig3 --outdir, to count by "
                        "hand; with --hand, the detector's agreement")
    ph.add_argument("--n", type=int, default=50)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--hand", nargs="+", type=int, help="the hand counts, in sheet order")
    pl = sub.add_parser("leak", help="|D_i - D_b| away from / near object i per noise level (what Def 5.1 adds k times)")
    pl.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint folder(s) of a net with an 'empty' label")
    pl.add_argument("--k", type=int, default=4, help="places per location set")
    pl.add_argument("--location-sets", type=int, default=4)
    pl.add_argument("--scenes", choices=["empty", "clutter"], default="empty",
                    help="noisy empty renders (default), or renders of 3-5 objects: then also |D_i - D_b| at the OTHER objects")
    pc = sub.add_parser("response", help="how strongly the colour label moves D at the asked place, per noise level "
                        "(gain 1 = the renders' own E[x0 | colour, place])")
    pc.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint folder(s) of a net with a colour per object")
    pc.add_argument("--scenes", type=int, default=24, help="rendered one-object scenes")
    for p in list(sub.choices.values()):
        p.add_argument("--outdir", required=True)
        if p not in (pt, pr, ph, pm):
            p.add_argument("--device", default="cpu", help="where the nets sample: cpu (default) or cuda; the noise "
                           "comes from per-seed CPU generators, so a seed gives the same image on either")
        if p in (pt, pr, pl, ph, pc, pm):
            continue
        p.add_argument("--seeds", nargs="+", default=["0-7"])
        p.add_argument("--steps", type=int, default=32)
        p.add_argument("--bf16", action="store_true")
        p.add_argument("--churn", type=float, default=0.0, help="S_churn of EDM's stochastic sampler (Alg. 2; churn for "
                       "sigma in [0.05, 50]); 0 = the deterministic ODE (default)")
        p.add_argument("--solver", choices=list(SOLVERS), default="heun",
                       help="ODE solver: heun (default, 2N-1 calls), euler, dpm2m (DPM-Solver++(2M), N calls)")
        p.add_argument("--resolution", type=int)
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--checkpoints", default=os.environ.get("PROJCOMP_CHECKPOINTS", "checkpoints"))
    p5.set_defaults(seeds=["0-31"], steps=16)
    args = ap.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    config = {k: v for k, v in vars(args).items()}
    config["command"] = "python -m projcomp.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.cmd == "fig5":
        config = _portable(config)
    # rejudge keeps the fig3 run's config.json (it did the sampling) and records itself beside it.
    # handcheck likewise reads a fig3 run's folder: its own record goes beside, not over, config.json.
    # merge writes its own config.json (the inputs' commands) once the inputs are checked.
    own = {"rejudge": "rejudge.json", "handcheck": "handcheck_command.json"}.get(args.cmd, "config.json")
    if args.cmd != "merge":
        with open(os.path.join(args.outdir, own), "w") as f:
            json.dump(config, f, indent=2)
    try:
        if args.cmd == "merge":
            for r in merge(args.inputs, args.outdir):
                print(json.dumps(r))
            return 0
        if args.cmd == "rejudge":
            rows = rejudge(args.outdir)
            for r in rows:
                print(json.dumps(r))
            return 0
        if args.cmd == "handcheck":
            r = handcheck(args.outdir, args.n, args.seed, args.hand)
            print(json.dumps({k: v for k, v in r.items() if k != "images"}))
            return 0
        if args.cmd in ("leak", "response"):
            if args.cmd == "leak":
                measure, title = (lambda net, framing: leak(net, k=args.k, location_sets=args.location_sets,
                                                            scenes=args.scenes, framing=framing),
                                  "Leak |D_i - D_b| away from object i vs near it, per sigma")
            else:
                measure, title = (lambda net, framing: colour_response(net, scenes=args.scenes, framing=framing),
                                  "Colour response of D at the asked place, per sigma (gain = response / the renders' own spread)")
            rows = _per_checkpoint(args.checkpoint, torch_device(args.device), measure)
            _write_table(rows, args.outdir, args.cmd, title)
            for r in rows:
                print(json.dumps(r))
            return 0
        if args.cmd == "theory":
            from .theory.__main__ import main as theory_main
            return theory_main(["--outdir", args.outdir])
        zoo = Zoo(args.checkpoints, device=args.device)
        sampler = {"num_steps": args.steps, "solver": args.solver, "dtype": "bfloat16" if args.bf16 else "float32",
                   **churn_settings(args.churn)}
        seeds = parse_seeds(args.seeds)
        if args.cmd in ("fig3", "table1"):
            ks = parse_seeds(args.k)
            # the nets' weights, so that runs over other seeds can be merged with this one (merge)
            config["nets"] = fig3_nets(zoo, args.settings, args.resolution)
            atomic_write_json(os.path.join(args.outdir, "config.json"), config)
            rows = fig3(zoo, args.settings, ks, seeds, args.outdir, args.location_sets, sampler, args.resolution, args.batch,
                        weight=args.weight, colors=None if args.colors == "any" else args.colors,
                        color_guidance=args.color_guidance)
        else:
            rows = fig5(zoo, seeds, args.outdir, args.base, sampler, args.resolution, args.batch, background=args.background,
                        toy_seeds=args.toy_seeds, stats_n=args.stats_scenes, grid_cols=args.grid_cols)
    except (CompositionError, SamplingError, ZooError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
