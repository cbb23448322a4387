"""Two objects asked close together: when does setting A still draw two? The same place pairs
rendered (ground truth: two objects) and composed (Def 5.1, k = 2), judged by the same detector,
binned by the distance between the two places. (docs/clevr-models.md, "The judge, once more".)

    python scripts/overlap_probe.py --checkpoints checkpoints --out docs/results/overlap_probe

Place pairs come from two-object scenes of the CLEVR scene sampler (the distribution Table 1's
location sets are drawn from, which keeps pairs at least 0.12 image widths apart); each pair is
rendered as sampled (its own shapes, sizes and colours) and composed over the empty scene with the
shipped object net: any colour (g = 1), and each place asked for its render's colour with colour
guidance g = 3. Writes OUT.md (per distance bin: scenes, exact count of the renders, of the
compositions) and OUT.json (per scene and seed). Where renders of a pair are counted right and the
compositions of the same pair are not, the composition drew the pair as one object.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projcomp.clevr import render, sample_scene  # noqa: E402
from projcomp.clevr.detect import detect, match  # noqa: E402
from projcomp.evaluate import judge_locations  # noqa: E402
from projcomp.experiments import setting_spec  # noqa: E402
from projcomp.generate import run_spec  # noqa: E402
from projcomp.imageio import to_uint8  # noqa: E402
from projcomp.stats import wilson  # noqa: E402
from projcomp.zoo import Zoo  # noqa: E402

R = 32
BINS = [(3.84, 5.0), (5.0, 6.0), (6.0, 8.0), (8.0, 11.0), (11.0, 40.0)]  # px at 32 x 32; 3.84 = 0.12 widths


def pairs(per_bin: int, max_scenes: int = 20000) -> list:
    """Two-object scenes, `per_bin` in each distance bin, in the order the sampler gives them."""
    out, count = [], [0] * len(BINS)
    for i in range(max_scenes):
        s = sample_scene([0x0B5E, i], 2, jitter=False, resolution=R)
        a, b = (np.asarray(o["pixel_coords"][:2], np.float64) for o in s["objects"])
        d = float(np.hypot(*(a - b)))
        j = next((j for j, (lo, hi) in enumerate(BINS) if lo <= d < hi), None)
        if j is not None and count[j] < per_bin:
            count[j] += 1
            out.append((j, d, s))
        if min(count) >= per_bin:
            return out
    raise RuntimeError(f"only {count} scenes per bin after {max_scenes} draws")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", default="checkpoints", help="folder holding the object net")
    ap.add_argument("--out", required=True, help="output path without extension (.md and .json are written)")
    ap.add_argument("--per-bin", type=int, default=8, help="place pairs per distance bin")
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per pair and mode")
    ap.add_argument("--steps", type=int, default=16, help="Heun steps")
    args = ap.parse_args()
    zoo = Zoo(args.checkpoints, resolution=R)
    seeds = list(range(args.seeds))
    rows = []
    for j, d, s in pairs(args.per_bin):
        locs = [[o["pixel_coords"][0] / R, o["pixel_coords"][1] / R] for o in s["objects"]]
        gt = [o["pixel_coords"][:2] for o in s["objects"]]
        rendered = match(detect(render(s, R)), gt, 0.08 * R)["exact_count"]
        row = {"bin": j, "distance_px": d, "locations": locs, "colors": [o["color"] for o in s["objects"]],
               "render_exact": bool(rendered)}
        for mode, kw in (("any", {}), ("color_g3", {"colors": row["colors"], "color_guidance": 3.0})):
            spec = setting_spec(zoo, "A", locs, seeds, sampler={"num_steps": args.steps}, **kw)
            imgs = to_uint8(run_spec(spec, zoo, batch=len(seeds)))
            v = [judge_locations(im, locs) for im in imgs]
            row[mode] = [int(x["num_detected"]) for x in v]
        rows.append(row)
        print(f"bin {j} d={d:.1f}px render {'ok' if rendered else 'MISS'} any {row['any']} colour {row['color_g3']}",
              flush=True)
    lines = ["| distance between the two places (px at 32) | pairs | renders counted 2 | composed, any colour: exact 2 [95 %] | "
             "composed, colour asked, g = 3: exact 2 [95 %] | composed: one object (any / colour) |",
             "|---|---|---|---|---|---|"]
    for j, (lo, hi) in enumerate(BINS):
        rs = [r for r in rows if r["bin"] == j]
        n = len(rs) * len(seeds)
        cells = []
        for mode in ("any", "color_g3"):
            k = sum(c == 2 for r in rs for c in r[mode])
            lo_, hi_ = wilson(k, n)
            cells.append(f"{k / n:.2f} [{lo_:.2f}-{hi_:.2f}]")
        ones = [sum(c == 1 for r in rs for c in r[m]) / n for m in ("any", "color_g3")]
        label = f"{lo:.1f}–{hi:.0f}" if hi < 40 else f"≥ {lo:.0f}"
        lines.append(f"| {label} | {len(rs)} | {sum(r['render_exact'] for r in rs)} / {len(rs)} | {cells[0]} | {cells[1]} | "
                     f"{ones[0]:.2f} / {ones[1]:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    with open(args.out + ".md", "w") as f:
        f.write(f"### Two places close together: renders vs setting A (`python scripts/overlap_probe.py --per-bin "
                f"{args.per_bin} --seeds {args.seeds} --steps {args.steps}`; {len(seeds)} seeds per pair and mode, "
                f"16 Heun steps unless stated)\n\n" + table)
    with open(args.out + ".json", "w") as f:
        json.dump({"command": " ".join(["python", "scripts/overlap_probe.py"] + sys.argv[1:]), "bins_px": BINS,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
