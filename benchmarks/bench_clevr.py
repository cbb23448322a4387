"""CLEVR world benchmark: render throughput, the 50k `empty` set, detector accuracy.

    python benchmarks/bench_clevr.py [--scenes 500] [--scenes128 200] [--empty 2000] [--workers 2] [--detector-only | --throughput-only]

Prints scenes/s at 32/64/128 (3-10 objects, CLEVR's default count, sampling + render + PNG,
`--workers` processes), the time to write a 2,000-image `empty` zip at 64x64 extrapolated to
50,000, and the detector table on held-out scenes with 0-9 objects at 32/64/128 (seeds 10000..:
never used to tune the detector or train its centre net, which saw seeds [7777, ...] and was
validated on [8888, ...]); ms/image is detect() alone, in this process.
"""

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time


sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from projcomp.clevr import render, sample_scene   # noqa: E402
from projcomp.clevr.datasets import make_dataset, png_bytes   # noqa: E402
from projcomp.clevr.detect import detect, evaluate_scenes   # noqa: E402


def _one(args):
    i, R = args
    s = sample_scene([555, i], (3, 10), resolution=R)
    return len(png_bytes(render(s, R)))


def _eval_item(args):
    i, R, framing = args
    s = sample_scene(10000 + i, (0, 9), resolution=R, framing=framing)  # held out: tuning/training used other seeds
    return s, render(s, R)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--scenes', type=int, default=500)
    ap.add_argument('--empty', type=int, default=2000)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--scenes128', type=int, default=200, help='detector scenes at 128 (slow to render)')
    ap.add_argument('--throughput', type=int, default=200, help='scenes per resolution for scenes/s')
    ap.add_argument('--detector-only', action='store_true', help='only the detector table')
    ap.add_argument('--throughput-only', action='store_true', help='only scenes/s and the empty set')
    a = ap.parse_args()
    print(f'cpus={os.cpu_count()} workers={a.workers} load={os.getloadavg()[0]:.1f}')
    with mp.get_context('fork').Pool(a.workers) as pool:
        if not a.detector_only:
            throughput(pool, a)
        if a.throughput_only:
            return
        print(f'\n| framing | resolution | scenes | objects | exact count | centre err px (mean / p95) | colour acc | size acc | recall | ms/image |'
              f'\n|---|---|---|---|---|---|---|---|---|---|')
        for framing, R in (('centre', 32), ('centre', 64), ('centre', 128), ('floor', 32), ('floor', 64)):
            n = a.scenes if R < 128 else a.scenes128
            items = pool.map(_eval_item, [(i, R, framing) for i in range(n)], chunksize=8)
            imgs = [im for _, im in items]
            detect(imgs[0])                        # load the centre net once
            t = time.perf_counter()
            for im in imgs:
                detect(im, framing=framing)
            ms = (time.perf_counter() - t) / len(imgs) * 1000
            r = evaluate_scenes([s for s, _ in items], imgs)
            print(f"| {framing} | {R} | {r['n_scenes']} | {r['n_objects']} | {r['count_acc']:.3f} | {r['center_err']:.2f} / {r['center_err_p95']:.2f} "
                  f"| {r['color_acc']:.3f} | {r['size_acc']:.3f} | {r['recall']:.3f} | {ms:.0f} |", flush=True)


def throughput(pool, a):
    print('\n| resolution | scenes/s (3-10 objects, sample+render+png) |\n|---|---|')
    for R in (32, 64, 128):
        n = a.throughput if R < 128 else a.throughput // 2
        t = time.time(); pool.map(_one, [(i, R) for i in range(n)], chunksize=4)
        print(f'| {R} | {n / (time.time() - t):.1f} |')
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        make_dataset('empty', a.empty, 64, os.path.join(d, 'e.zip'), workers=a.workers, progress=False)
        dt = time.time() - t
    print(f'\nempty 64x64: {a.empty} images in {dt:.1f} s -> 50,000 in {dt * 50000 / a.empty / 60:.1f} min (extrapolated)')


if __name__ == '__main__':
    main()
