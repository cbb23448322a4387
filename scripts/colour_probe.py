"""One object asked in each of the 8 CLEVR colours, at a near and a far place, same seeds: does
the colour follow the label or the noise? (docs/clevr-models.md, "Where the loss listens".)

    python scripts/colour_probe.py --checkpoints ZOO_DIR --out docs/results/probe_colours_NAME

ZOO_DIR holds one object net with a colour per object (e.g. a folder with a copy of
checkpoints/clevr-object-32). Writes OUT.png (rows: the 8 colours; columns: the near place's
seeds, then the far place's; setting A at k = 1, i.e. the term's own D alone, 16 Heun steps)
and OUT.json (the colour the project's detector reads at the place, per colour and seed).
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projcomp.clevr.world import CLEVR_COLORS  # noqa: E402
from projcomp.errors import ProjcompError  # noqa: E402
from projcomp.evaluate import judge_locations  # noqa: E402
from projcomp.experiments import setting_spec  # noqa: E402
from projcomp.generate import run_spec  # noqa: E402
from projcomp.imageio import to_uint8  # noqa: E402
from projcomp.zoo import Zoo  # noqa: E402

PLACES = [(0.45, 0.75), (0.6, 0.4)]  # near the camera (large objects), far (small ones)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", required=True, help="folder holding one object net")
    ap.add_argument("--out", required=True, help="output path without extension (.png and .json are written)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per colour and place")
    ap.add_argument("--steps", type=int, default=16, help="Heun steps")
    args = ap.parse_args()
    zoo = Zoo(args.checkpoints)
    R = None
    cells, found = {}, {}
    for xy in PLACES:
        for c in CLEVR_COLORS:
            spec = setting_spec(zoo, "A", [xy], list(range(args.seeds)), colors=[c],
                                sampler={"num_steps": args.steps})
            imgs = to_uint8(run_spec(spec, zoo, batch=args.seeds))
            R = imgs.shape[1]
            key = f"{xy[0]},{xy[1]}/{c}"
            found[key] = [judge_locations(im, [xy], colors=[c])["colors_at_hits"][0] for im in imgs]
            cells[(xy, c)] = np.concatenate(list(imgs), axis=1)
            print(key, found[key], flush=True)
    gap = np.full((R, 4, 3), 255, np.uint8)
    grid = np.concatenate([np.concatenate([cells[(PLACES[0], c)], gap, cells[(PLACES[1], c)]], axis=1)
                           for c in CLEVR_COLORS], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(args.out + ".png")
    with open(args.out + ".json", "w") as f:
        json.dump({"places": PLACES, "colors": list(CLEVR_COLORS), "seeds": list(range(args.seeds)),
                   "steps": args.steps, "detected": found}, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except ProjcompError as e:  # a bad folder, a net without colours: one line, no traceback
        sys.exit(f"error: {e}")
