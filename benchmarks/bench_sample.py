"""Time to sample one 3-object CLEVR image with the shipped location model (issue 6 target: < 2 s).

    python benchmarks/bench_sample.py [--checkpoints checkpoints] [--repeats 3] [--dtypes float32]

Prints, side by side in one run, the best-of-N wall time of setting A (empty background, 3 terms,
one batched call per step) for 32-step Heun (63 calls, the paper's sampler), 16 and 12 steps, fp32 and
bf16, with the conv weights in the default layout (NCHW) and in channels_last (the CPU default of
projcomp.load), and the speed-up of the second. Then, channels_last fp32, the solvers side by side:
16-step Heun (31 calls, the app's and Table 1's sampler) against DPM-Solver++(2M) at 16 and 20 steps
(one call per step), each as a ratio to Heun 16.
"""

import argparse

import torch
from bench_compose import timed_interleaved  # this folder is on sys.path when run as a script

from projcomp.experiments import setting_spec
from projcomp.generate import prepare
from projcomp.sampling import SamplerConfig, bf16_is_fast, num_network_calls, sample
from projcomp.zoo import Zoo


def _runner(zoo, locs, sampler):
    """A timed run of one 3-object image under these sampler settings (built and warmed up once)."""
    spec = setting_spec(zoo, "A", locs, [0], sampler=sampler)
    den, shape = prepare(spec, zoo)
    sample(den, [0], shape, spec.sampler, num_steps=2)  # warm-up
    return lambda: sample(den, [0], shape, spec.sampler)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", default="checkpoints")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,bfloat16",
                    help="comma-separated; emulated bf16 (no AVX512-BF16) takes minutes per row, so 'float32' skips it")
    args = ap.parse_args()
    zoos = {"nchw": Zoo(args.checkpoints, channels_last=False), "nhwc": Zoo(args.checkpoints, channels_last=True)}
    locs = [[0.3, 0.55], [0.7, 0.55], [0.5, 0.75]]
    print(f"# one 3-object image, setting A, torch threads={torch.get_num_threads()}, "
          f"native bf16 on this CPU: {bf16_is_fast('cpu')}")
    print(f"{'steps':>5} {'dtype':>9} {'calls':>5} {'NCHW s':>7} {'NHWC s':>7} {'speed-up':>8}")
    for steps in (32, 16, 12):
        for dtype in args.dtypes.split(","):
            runs = [_runner(zoo, locs, {"num_steps": steps, "dtype": dtype}) for zoo in zoos.values()]
            best = timed_interleaved(runs, args.repeats)
            print(f"{steps:>5} {dtype:>9} {2 * steps - 1:>5} {best[0]:>7.2f} {best[1]:>7.2f} {best[0] / best[1]:>7.2f}x")
    solvers = [("heun", 16), ("dpm2m", 16), ("dpm2m", 20)]
    runs = [_runner(zoos["nhwc"], locs, {"num_steps": steps, "solver": solver}) for solver, steps in solvers]
    best = timed_interleaved(runs, args.repeats)
    print(f"\n{'solver':>7} {'steps':>5} {'calls':>5} {'NHWC s':>7} {'vs heun 16':>10}")
    for (solver, steps), t in zip(solvers, best):
        calls = num_network_calls(SamplerConfig(num_steps=steps, solver=solver))
        print(f"{solver:>7} {steps:>5} {calls:>5} {t:>7.2f} {best[0] / t:>9.2f}x")


if __name__ == "__main__":
    main()
