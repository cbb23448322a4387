"""Training throughput and model size per preset.

    python benchmarks/bench_train.py [--preset cpu-32] [--rounds 6] [--threads 0]

Prints, for every preset in projcomp.train.PRESETS: parameters and FLOPs per image (forward, and a
training step = forward + backward, counted with torch.utils.flop_counter.FlopCounterMode on the
meta device, so even paper-xs costs nothing to count). Then the training images/s of one preset
on this machine in fp32 and bf16 autocast, measured in ONE run with the two interleaved step by
step (so load from other processes hits both alike), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projcomp.nn import Precond, normalize_weights_  # noqa: E402
from projcomp.nn.conditions import make_condition_encoder  # noqa: E402
from projcomp.train import PRESETS, EDM2Loss, network_kwargs, resolve_config  # noqa: E402

LOCATION = {"type": "location", "dim": 2}


def build(cfg: dict, device=None) -> Precond:
    label_dim = make_condition_encoder(LOCATION).label_dim
    with torch.device(device or "cpu"):
        return Precond(**network_kwargs(cfg, label_dim, LOCATION))


def count_flops(cfg: dict) -> tuple[int, int, int]:
    net = build(cfg, "meta").train()
    R = cfg["resolution"]
    B = 2
    with torch.device("meta"):
        x = torch.randn(B, 3, R, R)
        sigma = torch.ones(B)
        cond = torch.ones(B, net.label_dim)
        with FlopCounterMode(display=False) as fwd:
            D, logvar = net(x, sigma, cond, return_logvar=True)
        with FlopCounterMode(display=False) as both:
            D, logvar = net(x, sigma, cond, return_logvar=True)
            ((D - x) ** 2 / logvar.exp() + logvar).sum().backward()
    params = sum(p.numel() for p in net.parameters())
    return params, fwd.get_total_flops() // B, both.get_total_flops() // B


def throughput(cfg: dict, rounds: int, warmup: int = 2) -> dict:
    torch.manual_seed(0)
    net = build(cfg).train()
    normalize_weights_(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8)
    loss_fn = EDM2Loss(cfg["P_mean"], cfg["P_std"], cfg["sigma_data"])
    B, R = cfg["batch_gpu"], cfg["resolution"]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, R, R, generator=g) * 2 - 1
    labels = make_condition_encoder(LOCATION).encode_batch(torch.rand(B, 2, generator=g).tolist())
    times = {False: [], True: []}

    def step(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(net, x, labels, torch.randn(B, generator=g), torch.randn(B, 3, R, R, generator=g))
        loss.sum().div(B).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        normalize_weights_(net)
        return time.perf_counter() - t0

    for _ in range(warmup):
        step(False), step(True)
    for _ in range(rounds):  # interleaved: fp32, bf16, fp32, bf16, ...
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    fp32 = B / statistics.median(times[False])
    bf16 = B / statistics.median(times[True])
    return {"batch": B, "fp32_img_s": fp32, "bf16_img_s": bf16, "bf16_over_fp32": bf16 / fp32,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-32", help="preset whose training speed is measured")
    ap.add_argument("--rounds", type=int, default=6, help="timed steps per precision")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sizes = {}
    for name in PRESETS:
        params, fwd, train = count_flops(resolve_config(name))
        sizes[name] = {"params": params, "gflops_fwd_per_img": fwd / 1e9, "gflops_train_per_img": train / 1e9}
    speed = throughput(resolve_config(args.preset), args.rounds)
    if args.json:
        print(json.dumps({"sizes": sizes, "speed": {args.preset: speed}}, indent=2))
        return
    print(f"{'preset':<10} {'res':>4} {'params':>12} {'GFLOP fwd/img':>14} {'GFLOP train/img':>16}")
    for name, s in sizes.items():
        R = resolve_config(name)["resolution"]
        print(f"{name:<10} {R:>4} {s['params']:>12,} {s['gflops_fwd_per_img']:>14.3f} {s['gflops_train_per_img']:>16.3f}")
    print(f"\n{args.preset} training (batch {speed['batch']}, {speed['threads']} threads, median of {args.rounds} "
          f"interleaved steps): fp32 {speed['fp32_img_s']:.1f} img/s, bf16 {speed['bf16_img_s']:.1f} img/s, "
          f"bf16/fp32 = {speed['bf16_over_fp32']:.2f}x")


if __name__ == "__main__":
    main()
