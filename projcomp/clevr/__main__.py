"""`python -m projcomp.clevr make PRESET ...` / `import DIR ...` / `grid ...`.

Errors print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from .datasets import PRESETS


def _parser():
    ap = argparse.ArgumentParser(prog='python -m projcomp.clevr', description=__doc__)
    sub = ap.add_subparsers(dest='cmd', required=True)
    mk = sub.add_parser('make', help='render a dataset preset to an EDM2-style zip')
    mk.add_argument('preset', help=' | '.join(PRESETS))
    mk.add_argument('--n', type=int, required=True, help='number of images')
    mk.add_argument('--resolution', type=int, default=64, help='output side R (square)')
    mk.add_argument('--out', required=True, help='output zip path')
    mk.add_argument('--seed', type=int, default=0, help='dataset seed; image i uses seed sequence (seed, i)')
    mk.add_argument('--workers', type=int, default=None, help='processes (default: min(2, cpus))')
    mk.add_argument('--framing', default='centre', help="square of CLEVR's 320x240 frame kept: centre (its centred "
                    "240x240, CLEVR's look) | floor (160x160 fitted to where objects stand: objects 1.5x larger)")
    im = sub.add_parser('import', help='convert clevr-dataset-gen output (images/ + scenes)')
    im.add_argument('dir')
    im.add_argument('--out', required=True)
    im.add_argument('--labels', default='none', help='location | color | none')
    im.add_argument('--resolution', type=int, default=64)
    gr = sub.add_parser('grid', help='write a PNG grid of sample scenes')
    gr.add_argument('--out', required=True)
    gr.add_argument('--resolution', type=int, default=64)
    gr.add_argument('--rows', type=int, default=4)
    gr.add_argument('--objects', default='3-8', help='object count or range, e.g. 3-8')
    gr.add_argument('--seed', type=int, default=0)
    gr.add_argument('--framing', default='centre', help='centre | floor (see make --framing)')
    return ap




def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = _parser()
    # argparse errors are already one usage line + one message; make them a single line.
    ap.error = lambda msg: (print(f'error: {msg}', file=sys.stderr), sys.exit(2))  # type: ignore[assignment]
    for a in ap._subparsers._group_actions[0].choices.values():   # noqa: SLF001
        a.error = ap.error
    args = ap.parse_args(argv)
    command = 'python -m projcomp.clevr ' + ' '.join(shlex.quote(a) for a in argv)
    from .datasets import DatasetError
    from .scene import SceneError
    try:
        if args.cmd == 'make':
            from .datasets import get_preset, make_dataset
            get_preset(args.preset)
            meta = make_dataset(args.preset, args.n, args.resolution, args.out, seed=args.seed,
                                workers=args.workers, command=command, framing=args.framing)
            print(f'wrote {args.out}: {meta["num_images"]} images, {args.preset}, {args.resolution}x{args.resolution}')
        elif args.cmd == 'import':
            from .importer import import_clevr
            meta = import_clevr(args.dir, args.out, labels=args.labels, resolution=args.resolution,
                                command=command)
            print(f'wrote {args.out}: {meta["num_images"]} images ({meta["skipped"]} skipped)')
        elif args.cmd == 'grid':
            import numpy as np
            from PIL import Image
            from .render import render
            from .scene import sample_scene
            lo, _, hi = args.objects.partition('-')
            count = (int(lo), int(hi or lo))
            R, k = args.resolution, args.rows
            imgs = [render(sample_scene([args.seed, i], count, resolution=R, framing=args.framing), R) for i in range(k * k)]
            grid = np.concatenate([np.concatenate(imgs[r * k:(r + 1) * k], 1) for r in range(k)], 0)
            Image.fromarray(grid).save(args.out)
            print(f'wrote {args.out}')
    except (DatasetError, SceneError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
