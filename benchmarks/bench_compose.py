"""Composed sampling cost, measured side by side in one run (issue 2).

For k = 1, 2, 4, 8 terms and B images, prints
  ratio_plain = time(compose k terms, B images) / time(plain sampling of (k+1)·B images in one batch)
      goal ≤ 1.15: composition costs no more than the batched network work it needs;
  speedup_loop = time(per-term loop, as the anchors do it) / time(compose)
      goal ≥ 2 at k = 4: batching the k+1 evaluations into one call is faster than a loop.
The per-term loop is what Composable-Diffusion / R3 do: one network call per term per step.

    python benchmarks/bench_compose.py [--steps 8] [--images 4] [--res 32] [--repeats 3]
"""

import argparse
import json
import time

import torch

from projcomp.compose import Term, compose
from projcomp.sampling import sample


class SmallConvNet(torch.nn.Module):
    """A small conditional conv denoiser (random weights): the benchmark's stand-in network."""

    def __init__(self, channels=32, label_dim=3):
        super().__init__()
        self.label_dim = label_dim
        self.inp = torch.nn.Conv2d(3, channels, 3, padding=1)
        self.mid = torch.nn.Sequential(*[torch.nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3)])
        self.out = torch.nn.Conv2d(channels, 3, 3, padding=1)
        self.emb = torch.nn.Linear(label_dim + 1, channels)

    def forward(self, x, sigma, cond=None):
        if cond is None:
            cond = torch.zeros(x.shape[0], self.label_dim, device=x.device)
        h = self.inp(x / torch.sqrt(1 + sigma[:, None, None, None] ** 2))
        h = h + self.emb(torch.cat([cond, sigma.log()[:, None] / 4], 1))[:, :, None, None]
        for conv in self.mid:
            h = h + torch.nn.functional.silu(conv(h))
        return self.out(h)


class PerTermLoop:
    """The anchors' way: D_b + Σ w_i (D_i − D_b) with one network call per term per step."""

    def __init__(self, net, conds):
        self.net, self.conds = net, conds

    def __call__(self, x, sigma, cond=None):
        Db = self.net(x, sigma, None)
        out = Db.clone()
        for c in self.conds:
            out = out + (self.net(x, sigma, c.expand(x.shape[0], -1)) - Db)
        return out


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_interleaved(fns, repeats, device="cpu"):
    """Best-of-N wall time of each fn, run in alternation so that load changes hit all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[j] = min(best[j], time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="Heun steps per run")
    ap.add_argument("--images", type=int, default=4, help="images B per run")
    ap.add_argument("--res", type=int, default=32, help="image resolution")
    ap.add_argument("--repeats", type=int, default=5, help="best of N, interleaved")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (GPU timings are synchronised)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = args.device
    net = SmallConvNet().eval().to(dev)
    shape = (3, args.res, args.res)
    seeds = list(range(args.images))
    rows = []
    where = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else f"cpu, torch threads={torch.get_num_threads()}"
    print(f"# {args.images} images, {args.res}x{args.res}, {args.steps}-step Heun, {where}")
    print(f"{'k':>3} {'compose s':>10} {'plain (k+1)B s':>15} {'loop s':>8} {'ratio_plain':>12} {'speedup_loop':>13}")
    for k in (1, 2, 4, 8):
        conds = [(torch.eye(3)[i % 3] + 0.1 * i).to(dev) for i in range(k)]
        comp = compose(Term(net, None), [Term(net, c) for c in conds])
        loop = PerTermLoop(net, conds)
        plain_seeds = list(range((k + 1) * args.images))
        with torch.no_grad():
            sample(comp, seeds, shape, num_steps=2, device=dev)  # warm-up
            t_comp, t_plain, t_loop = timed_interleaved([
                lambda: sample(comp, seeds, shape, num_steps=args.steps, device=dev),
                lambda: sample(net, plain_seeds, shape, num_steps=args.steps, device=dev),
                lambda: sample(loop, seeds, shape, num_steps=args.steps, device=dev),
            ], args.repeats, dev)
        r = {"k": k, "compose_s": t_comp, "plain_s": t_plain, "loop_s": t_loop,
             "ratio_plain": t_comp / t_plain, "speedup_loop": t_loop / t_comp}
        rows.append(r)
        print(f"{k:>3} {t_comp:>10.3f} {t_plain:>15.3f} {t_loop:>8.3f} {r['ratio_plain']:>12.3f} {r['speedup_loop']:>13.2f}")
    k4 = next(r for r in rows if r["k"] == 4)
    print(f"goal ratio_plain <= 1.15 for all k: {'met' if all(r['ratio_plain'] <= 1.15 for r in rows) else 'MISSED'}; "
          f"goal speedup_loop >= 2 at k=4: {'met' if k4['speedup_loop'] >= 2 else 'MISSED'} ({k4['speedup_loop']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
