"""Training speed: projcomp's training step against NVlabs EDM2's reference network (and against an
older projcomp), in ONE interleaved run, plus model size and FLOPs per preset.

    python benchmarks/bench_train.py --edm2 /path/to/edm2 [--old-rev ec712be] \
        [--preset cpu-32] [--threads 1,2] [--resolutions 32,64] [--rounds 6] [--json]

Contestants, all fp32, batch `batch_gpu` of the preset (64 for cpu-32), the same inputs, Adam, the
same EDM2 loss (Eq. 21, learned uncertainty), one update per step with NaN scrubbing as the loop does:
  projcomp   this tree's training step (projcomp.training.loop: the layout the loop trains in,
             forced weight normalisation *after* the update, as the paper).
  old        projcomp's network and step at git revision --old-rev (read with `git show` into a
             temporary package; needs this checkout's git history).
  projcomp-bf16  (--bf16) the same step with the forward under CPU bf16 autocast.
  edm2       NVlabs EDM2's training/networks_edm2.py imported from --edm2 DIR at run time (a local
             checkout of github.com/NVlabs/edm2; never copied here: its licence is not ours), with
             its own forced weight normalisation inside forward, as EDM2 trains.
Every network is the preset's (label_dim 18, the location + colour + empty schema's width); the
parameter counts are printed and must agree. At each (threads, resolution) the contestants step in
turn, round by round, so load from other processes hits all alike; img/s is batch / median step,
and each ratio is printed twice: of the median img/s, and the median over rounds of the ratio of
step times within a round (the steadier of the two on a loaded machine).

GFLOP/s: FLOPs per training step counted once with torch.utils.flop_counter on the meta device
(projcomp's count for every contestant: the same useful work), divided by the median step time,
against the machine's fp32 peak MEASURED in the same run (a 2048^3 sgemm, median of 5, at the same
thread count) and the nominal peak computed from /proc/cpuinfo (SIMD fp32 lanes from the ISA flags
x 2 FMA pipes x 2 FLOP x the reported clock x threads; an estimate: turbo and pipe count vary).

Ceiling: one profiled projcomp step gives the convolutions' share of the operator time (forward and
backward); batch / (median step x that share) is what the step would reach if everything else --
activations, normalisation, attention, the optimiser -- cost nothing: the most fusing element-wise
work can buy while the convolutions run as they do.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from projcomp.nn import Precond, normalize_weights_  # noqa: E402
from projcomp.train import PRESETS, EDM2Loss, network_kwargs, resolve_config  # noqa: E402
from projcomp.training import loop as L  # noqa: E402

LABEL_DIM = 18  # the location schema with the 'empty' scene and colours: what cpu-32 nets take

#----------------------------------------------------------------------------
# Networks.


def net_kwargs(cfg: dict) -> dict:
    return network_kwargs(cfg, LABEL_DIM, None)


def load_old(rev: str):
    """projcomp.nn at git revision `rev`, imported as a separate package (the tree's own stays)."""
    files = subprocess.run(["git", "-C", ROOT, "ls-tree", "-r", "--name-only", rev, "projcomp/"],
                           check=True, capture_output=True, text=True).stdout.split()
    tmp = tempfile.mkdtemp(prefix="projcomp-old-")
    for f in files:
        if f.endswith(".py") and (f.startswith("projcomp/nn/") or f == "projcomp/errors.py"):
            dst = os.path.join(tmp, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as fh:
                fh.write(subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{f}"], check=True, capture_output=True).stdout)
    name = "_projcomp_at_" + rev.replace("/", "_")
    pkg = types.ModuleType(name)  # a bare parent package: nn/ and errors.py only, no projcomp/__init__
    pkg.__path__ = [os.path.join(tmp, "projcomp")]
    sys.modules[name] = pkg
    return importlib.import_module(name + ".nn")


def load_edm2(path: str):
    """NVlabs EDM2's networks_edm2 module from a local checkout (imported at run time, not copied)."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "training", "networks_edm2.py")):
        raise SystemExit(f"--edm2 {path}: no training/networks_edm2.py there (want a checkout of NVlabs/edm2)")
    sys.path.insert(0, path)
    try:
        return importlib.import_module("training.networks_edm2")
    finally:
        sys.path.remove(path)


def edm2_kwargs(cfg: dict) -> dict:
    k = net_kwargs(cfg)
    k.pop("condition")
    k["use_fp16"] = False
    return k

#----------------------------------------------------------------------------
# Steps: one optimiser update on a fixed batch, as the training loop does it.


class Contestant:
    def __init__(self, name: str, net: torch.nn.Module, step_fn, prepare=None):
        self.name, self.net, self.step_fn = name, net, step_fn
        self.net.train().requires_grad_(True)
        if prepare is not None:
            prepare(self.net)
        self.params = list(self.net.parameters())
        self.opt = torch.optim.Adam(self.params, lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
        self.times: list[float] = []

    def step(self, batch) -> float:
        t0 = time.perf_counter()
        self.step_fn(self, *batch)
        dt = time.perf_counter() - t0
        self.times.append(dt)
        return dt


def step_projcomp(c: Contestant, x, labels, rnd_normal, noise, loss_fn) -> None:
    """This tree's step: the loop's own forward/backward and update functions."""
    c.opt.zero_grad(set_to_none=True)
    L.forward_backward(c.net, loss_fn, x, labels, rnd_normal, noise, scale=1.0 / x.shape[0])
    L.optimizer_update(c.net, c.params, c.opt, force_wn="after")


def step_projcomp_bf16(c: Contestant, x, labels, rnd_normal, noise, loss_fn) -> None:
    """This tree's step with the forward under CPU bf16 autocast (the loop's --bf16)."""
    c.opt.zero_grad(set_to_none=True)
    L.forward_backward(c.net, loss_fn, x, labels, rnd_normal, noise, scale=1.0 / x.shape[0],
                       autocast=torch.autocast("cpu", dtype=torch.bfloat16))
    L.optimizer_update(c.net, c.params, c.opt, force_wn="after")


def step_plain(force_wn_after):
    """The step as projcomp's loop did it at ec712be (and as EDM2's loop does it, where the
    forced weight normalisation happens inside forward instead)."""
    def step(c: Contestant, x, labels, rnd_normal, noise, loss_fn) -> None:
        c.opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(c.net, x, labels, rnd_normal, noise)
        loss.sum().mul(1.0 / x.shape[0]).backward()
        for p in c.params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
        c.opt.step()
        if force_wn_after is not None:
            force_wn_after(c.net)
    return step


def convolution_share(c: Contestant, batch) -> float:
    """Fraction of one step's operator time spent in convolutions, forward and backward (torch
    profiler, self CPU time of the oneDNN convolution ops over all ops), from one profiled step."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        c.step_fn(c, *batch)
    conv = total = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total
        if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
                     "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward"):
            conv += e.self_cpu_time_total
    return conv / total if total else float("nan")

#----------------------------------------------------------------------------
# FLOPs and the fp32 peak.


def count_flops(cfg: dict, batch: int = 2) -> tuple[int, int, int]:
    """(parameters, forward FLOPs per image, training-step FLOPs per image) of projcomp's net."""
    with torch.device("meta"):
        net = Precond(**net_kwargs(cfg)).train()
        R = cfg["resolution"]
        x = torch.randn(batch, 3, R, R)
        sigma = torch.ones(batch)
        cond = torch.ones(batch, net.label_dim)
        with FlopCounterMode(display=False) as fwd:
            net(x, sigma, cond, return_logvar=True)
        with FlopCounterMode(display=False) as both:
            D, logvar = net(x, sigma, cond, return_logvar=True)
            ((D - x) ** 2 / logvar.exp() + logvar).sum().backward()
    params = sum(p.numel() for p in net.parameters())
    return params, fwd.get_total_flops() // batch, both.get_total_flops() // batch


def measured_peak(n: int = 2048, reps: int = 5) -> float:
    """fp32 GFLOP/s of a large sgemm at the current thread count (median of `reps`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def nominal_peak(threads: int) -> tuple[float, str]:
    """fp32 GFLOP/s from /proc/cpuinfo: lanes (AVX-512 16, AVX2+FMA 8) x 2 FMA pipes x 2 x GHz x threads."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return float("nan"), "unknown (no /proc/cpuinfo)"
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    mhz = next((float(ln.split(":", 1)[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")), float("nan"))
    isa, lanes = ("AVX-512", 16) if "avx512f" in flags else ("AVX2+FMA", 8) if "fma" in flags else ("SSE", 4)
    peak = lanes * 2 * 2 * mhz / 1e3 * threads
    return peak, f"{isa}: {lanes} fp32 lanes x 2 FMA pipes x 2 FLOP x {mhz / 1e3:.2f} GHz x {threads} cores"

#----------------------------------------------------------------------------


def compare(cfg: dict, contestants: dict, rounds: int, warmup: int, threads: int, flops_step: int) -> dict:
    """Interleaved timing of every contestant at one (threads, resolution)."""
    torch.set_num_threads(threads)
    B, R = cfg["batch_gpu"], cfg["resolution"]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, R, R, generator=g) * 2 - 1
    labels = torch.nn.functional.normalize(torch.randn(B, LABEL_DIM, generator=g), dim=1)
    loss_fn = EDM2Loss(cfg["P_mean"], cfg["P_std"], cfg["sigma_data"])
    peak = measured_peak()
    for c in contestants.values():
        c.times = []
    for r in range(warmup + rounds):
        batch = (x, labels, torch.randn(B, generator=g), torch.randn(B, 3, R, R, generator=g), loss_fn)
        for c in contestants.values():
            c.step(batch)
    peak = max(peak, measured_peak())  # before and after: the less disturbed of the two
    conv_share = convolution_share(contestants["projcomp"], batch)
    out = {"threads": threads, "resolution": R, "batch": B, "rounds": rounds, "peak_measured_gflops": peak,
           "gflop_per_step": flops_step / 1e9, "img_s": {}, "gflops": {}, "step_ms": {}}
    ours = contestants["projcomp"].times[warmup:]
    # The ceiling of element-wise fusion: were every op but the convolutions free, projcomp's step
    # would take conv_share of its time (the convolutions already run near the sgemm rate).
    out["conv_share"] = conv_share
    out["ceiling_img_s"] = B / (statistics.median(ours) * conv_share)
    out["paired_ratio"] = {}
    for name, c in contestants.items():
        med = statistics.median(c.times[warmup:])
        out["img_s"][name] = B / med
        out["step_ms"][name] = med * 1e3
        out["gflops"][name] = flops_step / med / 1e9
        if name != "projcomp":  # median over rounds of (their step time / ours) within the same round
            out["paired_ratio"][name] = statistics.median(t / o for t, o in zip(c.times[warmup:], ours))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-32", help="network and batch of this preset (default: cpu-32)")
    ap.add_argument("--edm2", metavar="DIR", help="a local checkout of NVlabs/edm2 to compare against")
    ap.add_argument("--old-rev", default="ec712be", help="git revision of the older projcomp step ('' = none)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    ap.add_argument("--resolutions", default="32,64", help="comma-separated image sizes (default: 32,64)")
    ap.add_argument("--batch", type=int, default=0, help="batch per step (0 = the preset's batch_gpu)")
    ap.add_argument("--rounds", type=int, default=6, help="timed steps per contestant (default: 6)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per contestant first (default: 1)")
    ap.add_argument("--bf16", action="store_true", help="also time this tree's step under bf16 autocast")
    ap.add_argument("--sizes", action="store_true", help="also print parameters and FLOPs of every preset")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()

    edm2 = load_edm2(args.edm2) if args.edm2 else None
    old = load_old(args.old_rev) if args.old_rev else None
    report: dict = {"preset": args.preset, "torch": torch.__version__, "runs": []}
    if args.sizes:
        report["sizes"] = {}
        for name in PRESETS:
            p, f, t = count_flops(resolve_config(name))
            report["sizes"][name] = {"params": p, "gflops_fwd_per_img": f / 1e9, "gflops_train_per_img": t / 1e9}

    for R in [int(r) for r in args.resolutions.split(",")]:
        cfg = resolve_config(args.preset, {"resolution": R})
        if args.batch:
            cfg["batch_gpu"] = args.batch
        torch.manual_seed(0)
        ours = Precond(**net_kwargs(cfg))
        normalize_weights_(ours)
        state = {k: v.clone() for k, v in ours.state_dict().items()}
        contestants = {"projcomp": Contestant("projcomp", ours, step_projcomp, prepare=L.prepare_for_training)}
        if args.bf16:
            contestants["projcomp-bf16"] = Contestant("projcomp-bf16", copy.deepcopy(ours), step_projcomp_bf16,
                                                      prepare=L.prepare_for_training)
        if old is not None:
            o = old.Precond(**net_kwargs(cfg))
            o.load_state_dict(state)
            contestants["old"] = Contestant("old", o, step_plain(old.normalize_weights_))
        if edm2 is not None:
            e = edm2.Precond(**edm2_kwargs(cfg))
            e.load_state_dict({k: v for k, v in state.items() if not k.startswith("encoder.")}, strict=True)
            contestants["edm2"] = Contestant("edm2", e, step_plain(None))
        nparams = {k: sum(p.numel() for p in c.params) for k, c in contestants.items()}
        if len(set(nparams.values())) != 1:
            raise SystemExit(f"parameter counts differ: {nparams}")
        _, fwd, train = count_flops(cfg)
        for T in [int(t) for t in args.threads.split(",")]:
            run = compare(cfg, contestants, args.rounds, args.warmup, T, train * cfg["batch_gpu"])
            run["params"] = next(iter(nparams.values()))
            run["nominal_peak_gflops"], run["nominal_peak_how"] = nominal_peak(T)
            report["runs"].append(run)
            if not args.json:
                print_run(run)
    if args.json:
        print(json.dumps(report, indent=2))
    elif "sizes" in report:
        print(f"\n{'preset':<12} {'params':>12} {'GFLOP fwd/img':>14} {'GFLOP train/img':>16}")
        for name, s in report["sizes"].items():
            print(f"{name:<12} {s['params']:>12,} {s['gflops_fwd_per_img']:>14.3f} {s['gflops_train_per_img']:>16.3f}")


def print_run(run: dict) -> None:
    R, T = run["resolution"], run["threads"]
    print(f"\n{R}x{R}, {T} thread{'s' if T > 1 else ''}, batch {run['batch']}, {run['params']:,} params, "
          f"{run['gflop_per_step']:.1f} GFLOP/step, median of {run['rounds']} interleaved steps")
    print(f"  fp32 peak: measured (2048^3 sgemm) {run['peak_measured_gflops']:.1f} GFLOP/s; nominal "
          f"{run['nominal_peak_gflops']:.1f} GFLOP/s ({run['nominal_peak_how']})")
    print(f"  {'':<10} {'img/s':>8} {'ms/step':>9} {'GFLOP/s':>8} {'% meas.':>8} {'% nom.':>7}")
    for name in run["img_s"]:
        gf = run["gflops"][name]
        print(f"  {name:<10} {run['img_s'][name]:>8.2f} {run['step_ms'][name]:>9.0f} {gf:>8.1f} "
              f"{100 * gf / run['peak_measured_gflops']:>7.0f}% {100 * gf / run['nominal_peak_gflops']:>6.0f}%")
    ours = run["img_s"]["projcomp"]
    for name in run["img_s"]:
        if name != "projcomp":
            print(f"  projcomp / {name}: {ours / run['img_s'][name]:.2f}x img/s (ratio of medians), "
                  f"{run['paired_ratio'][name]:.2f}x (median of per-round ratios)")
    ceil = run["ceiling_img_s"]
    print(f"  convolutions (fwd + bwd): {100 * run['conv_share']:.0f}% of projcomp's step; were everything else free: "
          f"{ceil:.2f} img/s" + "".join(f", {ceil / run['img_s'][n]:.2f}x {n}" for n in run["img_s"] if n != "projcomp"))


if __name__ == "__main__":
    main()
