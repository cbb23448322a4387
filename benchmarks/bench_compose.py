"""Composed sampling cost, measured side by side in one run (issue 2).

For k = 1, 2, 4, 8 terms and B images, prints
  ratio_plain = time(compose k terms, B images) / time(plain sampling of (k+1)·B images in one batch)
      goal ≤ 1.15: composition costs no more than the batched network work it needs;
  speedup_anchor = time(the anchors' loop) / time(compose)
      goal ≥ 2 at k = 4: batching the k+1 evaluations into one call is faster than a loop;
  speedup_loop = time(a per-term loop over B-image batches) / time(compose), a stricter baseline.
The anchors' loop is what Composable Diffusion's CLEVR/SD scripts and diffusers' community
ComposableStableDiffusionPipeline do (github.com/energy-based-model/Compositional-Visual-Generation-with-Composable-Diffusion-Models-PyTorch,
diffusers examples/community/composable_stable_diffusion.py): one network call
per term per step at batch 1 ("computing score one by one"; their samplers take one image at a
time), so B images cost B·(k+1) calls per step. The per-term loop batches the B images of each
term (k+1 calls per step). At B = 1 the two are the same loop.
Two networks, one table each: `conv`, a 5-layer conv net (cost linear in the batch: the floor of
what batching can save), and `unet`, the shipped CLEVR checkpoints' EDM2 U-Net (cpu-32 layout,
1.7 M parameters, random weights) -- the network the app and the CLI actually compose.

    python benchmarks/bench_compose.py [--nets conv unet] [--steps 8] [--images 4 1] [--res 32]
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
    """D_b + Σ w_i (D_i − D_b) with one network call per term per step, each over all B images."""

    def __init__(self, net, conds):
        self.net, self.conds = net, conds

    def __call__(self, x, sigma, cond=None):
        Db = self.net(x, sigma, None)
        out = Db.clone()
        for c in self.conds:
            out = out + (self.net(x, sigma, c.expand(x.shape[0], -1)) - Db)
        return out


class AnchorLoop(PerTermLoop):
    """The anchors' loop: every term of every image is its own batch-1 network call."""

    def __call__(self, x, sigma, cond=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return torch.cat([super(AnchorLoop, self).__call__(x[b:b + 1], sigma[b:b + 1]) for b in range(x.shape[0])])


def edm2_unet(res, device):
    """The shipped CLEVR location models' network (cpu-32 preset, location-empty conditioning) with
    random weights and opened gains, in the layout `projcomp.load` gives it on `device`."""
    from projcomp.checkpoint import set_inference_layout
    from projcomp.demo import random_net
    net, _ = random_net("cpu-32", "location-empty", seed=0, resolution=res)
    return set_inference_layout(net.eval().to(device))


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_interleaved(fns, repeats, device="cpu"):
    """Best-of-N wall time of each fn, run in alternation so that load changes hit all alike
    (also used by bench_sample.py)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[j] = min(best[j], time.perf_counter() - t0)
    return best


def bench(net, conds_for, args, images, log):
    dev = args.device
    shape = (3, args.res, args.res)
    seeds = list(range(images))
    rows = []
    log(f"{'k':>3} {'compose s':>10} {'plain (k+1)B s':>15} {'loop s':>8} {'anchor s':>9} {'ratio_plain':>12} "
        f"{'speedup_loop':>13} {'speedup_anchor':>15}")
    for k in args.ks:
        conds = conds_for(k)
        comp = compose(Term(net, None), [Term(net, c) for c in conds])
        loop = PerTermLoop(net, conds)
        anchor = AnchorLoop(net, conds)
        plain_seeds = list(range((k + 1) * images))
        fns = [
            lambda: sample(comp, seeds, shape, num_steps=args.steps, device=dev),
            lambda: sample(net, plain_seeds, shape, num_steps=args.steps, device=dev),
            lambda: sample(loop, seeds, shape, num_steps=args.steps, device=dev),
        ]
        if images > 1:  # at B = 1 the anchors' loop is the per-term loop
            fns.append(lambda: sample(anchor, seeds, shape, num_steps=args.steps, device=dev))
        with torch.no_grad():
            sample(comp, seeds, shape, num_steps=2, device=dev)  # warm-up
            times = timed_interleaved(fns, args.repeats, dev)
        t_comp, t_plain, t_loop = times[:3]
        t_anchor = times[3] if images > 1 else t_loop
        r = {"k": k, "images": images, "compose_s": t_comp, "plain_s": t_plain, "loop_s": t_loop, "anchor_s": t_anchor,
             "ratio_plain": t_comp / t_plain, "speedup_loop": t_loop / t_comp, "speedup_anchor": t_anchor / t_comp}
        rows.append(r)
        log(f"{k:>3} {t_comp:>10.3f} {t_plain:>15.3f} {t_loop:>8.3f} {t_anchor:>9.3f} {r['ratio_plain']:>12.3f} "
            f"{r['speedup_loop']:>13.2f} {r['speedup_anchor']:>15.2f}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=["conv", "unet"], choices=["conv", "unet"], help="networks to time")
    ap.add_argument("--steps", type=int, default=8, help="Heun steps per run")
    ap.add_argument("--images", type=int, nargs="+", default=[4, 1], help="images B per run (one table each)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="numbers of composed terms")
    ap.add_argument("--res", type=int, default=32, help="image resolution")
    ap.add_argument("--repeats", type=int, default=5, help="best of N, interleaved")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (GPU timings are synchronised)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    dev = args.device
    where = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else f"cpu, torch threads={torch.get_num_threads()}"
    results = []
    for name in args.nets:
        torch.manual_seed(0)
        if name == "conv":
            net = SmallConvNet().eval().to(dev)
            conds_for = lambda k: [(torch.eye(3)[i % 3] + 0.1 * i).to(dev) for i in range(k)]  # noqa: E731
        else:
            net = edm2_unet(args.res, dev)
            conds_for = lambda k: [net.encode_cond(((i + 0.5) / k, 0.5)).to(dev) for i in range(k)]  # noqa: E731
        for images in args.images:
            print(f"# net={name}, {images} images, {args.res}x{args.res}, {args.steps}-step Heun, {where}")
            rows = bench(net, conds_for, args, images, print)
            results += [{"net": name, **r} for r in rows]
            k4 = [r for r in rows if r["k"] == 4]
            print(f"goal ratio_plain <= 1.15 for all k: {'met' if all(r['ratio_plain'] <= 1.15 for r in rows) else 'MISSED'}"
                  + (f"; goal speedup_anchor >= 2 at k=4: {'met' if k4[0]['speedup_anchor'] >= 2 else 'MISSED'} "
                     f"({k4[0]['speedup_anchor']:.2f}x; per-term loop {k4[0]['speedup_loop']:.2f}x)" if k4 else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()
