"""The EDM2 training loop with the paper's two changes, resumable bit-exactly and DDP-aware.

The paper (Bradley et al. 2025, App. L) trains EDM2's edm2-img64-xs network with EDM2's loop,
two changes: forced weight normalisation *after* each update, and final weights = the plain
average of the last 4096 updates instead of post-hoc EMA. Both are defaults (`force_wn`,
`avg_last`); EDM2's originals remain options (force_wn='before', ema_stds=...).

Everything random about training image number i (its dataset index, ln sigma, noise, dropout
coins) is a function of (seed, i) only, so a run is identical for any micro-batch size, any
number of DDP ranks, and across a SIGKILL and resume (the state I/O is in state.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Optional

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..nn import ConditionEncoder, ConditionError, Precond, normalize_weights_, set_force_wn_in_forward
from . import state as S
from .config import TrainError, network_kwargs

__all__ = ["learning_rate", "std_to_exp", "power_ema_beta", "DataOrder", "EDM2Loss", "prepare_for_training",
           "forward_backward", "optimizer_update", "Trainer", "training_loop"]

#----------------------------------------------------------------------------
# Learning-rate schedule (EDM2 Eq. 67 + linear warm-up): alpha_ref / sqrt(max(t / t_ref, 1)),
# t in updates = cur_nimg / batch; times min(cur_nimg / rampup, 1).

def learning_rate(cur_nimg: int, batch: int, ref_lr: float, t_ref: float, rampup_nimg: int) -> float:
    lr = ref_lr
    if t_ref > 0:
        lr /= math.sqrt(max(cur_nimg / (t_ref * batch), 1))
    if rampup_nimg > 0:
        lr *= min(cur_nimg / rampup_nimg, 1)
    return lr

#----------------------------------------------------------------------------
# Power-function EMA (EDM2 §3.1, Eqs. 3-4): profile exponent gamma for a relative std, and the
# per-update decay beta = (1 - delta/t)^(gamma + 1) with t in images.

def std_to_exp(std: float) -> float:
    t = float(std) ** -2
    roots = np.roots([1, 7, 16 - t, 12 - t])
    return float(roots.real.max())


def power_ema_beta(std: float, cur_nimg: int, batch: int) -> float:
    return (1 - batch / cur_nimg) ** (std_to_exp(std) + 1)

#----------------------------------------------------------------------------
# Deterministic per-image randomness: seeds are hashes of (seed, stream, image index).

def _mix(*xs: int) -> int:
    h = 0x243F6A8885A308D3
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


class DataOrder:
    """Image index -> dataset index: a fresh seeded permutation per epoch (no augmentation:
    flips would corrupt location labels)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cache: dict[int, torch.Tensor] = {}

    def __call__(self, i: int) -> int:
        epoch, pos = divmod(int(i), self.n)
        perm = self._cache.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed(_mix(self.seed, 1, epoch))
            perm = torch.randperm(self.n, generator=g)
            self._cache = {epoch: perm}  # keep one epoch in memory
        return int(perm[pos])

#----------------------------------------------------------------------------
# EDM2 loss with learned uncertainty (EDM2 Eq. 21): per pixel
#     weight(sigma) / exp(u(sigma)) * (D(y + n; sigma) - y)^2 + u(sigma),
# weight = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2, ln sigma ~ N(P_mean, P_std^2).
# An optional per-pixel weight w(label, pixel) multiplies the squared error. As it depends on the
# label only (never on x0), for each label, sigma and pixel it is a constant factor, and the
# minimiser stays E[x0 | x_t, label]: the optimum denoiser, hence Def 5.1, is unchanged; only
# which pixels the finite-budget gradient listens to moves (`place_weight`).

class EDM2Loss:
    def __init__(self, P_mean: float = -0.8, P_std: float = 1.6, sigma_data: float = 0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

    def __call__(self, net, images: torch.Tensor, labels: Optional[torch.Tensor], rnd_normal: torch.Tensor,
                 noise: torch.Tensor, pixel_weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, raw) per pixel; raw is the unweighted lambda(sigma) * squared error (the stats' loss_raw)."""
        sigma = (rnd_normal * self.P_std + self.P_mean).exp().reshape(-1, 1, 1, 1)
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        D, logvar = net(images + noise * sigma, sigma.flatten(), labels, return_logvar=True)
        raw = weight * (D - images) ** 2
        fit = raw if pixel_weight is None else raw * pixel_weight
        loss = fit / logvar.exp() + logvar
        return loss, raw

#----------------------------------------------------------------------------
# One training step, in three parts shared by Trainer.run and benchmarks/bench_train.py.

def prepare_for_training(net: torch.nn.Module) -> torch.nn.Module:
    """The layout the network trains in: on the CPU, convolution weights stored NHWC (channels
    last), so oneDNN runs every convolution, forward and backward, NHWC and the activations stay
    NHWC between them (no reorder around each convolution). Parameters, gradients, Adam moments and
    averages keep their logical values; state files store them contiguous as before."""
    if next(net.parameters()).device.type == "cpu":
        net.to(memory_format=torch.channels_last)
    return net


def forward_backward(net, loss_fn: EDM2Loss, x: torch.Tensor, labels: Optional[torch.Tensor], rnd_normal: torch.Tensor,
                     noise: torch.Tensor, scale: float, autocast=None,
                     pixel_weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one micro-batch (forward under `autocast`, if given) and its gradient, accumulated
    into .grad: d(scale * sum(loss))."""
    with autocast if autocast is not None else contextlib.nullcontext():
        loss, raw = loss_fn(net, x, labels, rnd_normal, noise, pixel_weight=pixel_weight)
    loss.sum().mul(scale).backward()
    return loss, raw


def optimizer_update(net: torch.nn.Module, params: list, opt: torch.optim.Optimizer, force_wn: str) -> None:
    """NaN/inf gradients to zero, one optimiser step, then (force_wn='after', the paper's change)
    forced weight normalisation of every MPConv."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
    opt.step()
    if force_wn == "after":
        normalize_weights_(net)

#----------------------------------------------------------------------------
# Distributed helpers (torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; plain python = 1 process).

def _dist_init() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False  # as EDM2: no TF32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()

#----------------------------------------------------------------------------

class Trainer:
    """The EDM2 training loop with the paper's changes, resumable and DDP-aware."""

    def __init__(
        self,
        cfg: dict,                  # A resolved config (config.resolve_config).
        data: str,                  # Dataset zip; recorded by this path as given + its sha256.
        outdir: str,                # Run folder: states, stats.jsonl, snapshot/, checkpoint/.
        command: str = "",          # The command line, recorded for provenance.
        progress: bool = True,      # tqdm bar on rank 0.
    ):
        self.cfg, self.data, self.outdir, self.command, self.progress = cfg, data, outdir, command, progress
        self.rank, self.world, self.device = _dist_init()
        if cfg["num_threads"]:
            torch.set_num_threads(int(cfg["num_threads"]))
        if cfg["batch"] % self.world != 0:
            raise TrainError(f"--batch {cfg['batch']}: not divisible by the {self.world} processes")
        self.batch_rank = cfg["batch"] // self.world
        self.batch_gpu = min(cfg["batch_gpu"], self.batch_rank)
        if self.batch_rank % self.batch_gpu != 0:
            raise TrainError(f"--batch-gpu {cfg['batch_gpu']}: must divide the per-process batch {self.batch_rank}")
        self.num_accum = self.batch_rank // self.batch_gpu
        self.total_nimg = cfg["duration"]
        self.total_updates = self.total_nimg // cfg["batch"]
        self.avg_start = max(self.total_updates - cfg["avg_last"], 0) if cfg["avg_last"] > 0 else None

        self._load_data()
        torch.manual_seed(cfg["seed"])  # initial weights depend on the seed only
        self.net = Precond(**network_kwargs(cfg, self.encoder.label_dim, self.condition)).to(self.device).train()
        prepare_for_training(self.net)
        self.net.requires_grad_(True)
        if cfg["force_wn"] == "after":
            normalize_weights_(self.net)  # start from the normalised point, as after every update
        else:
            set_force_wn_in_forward(self.net, True)
        self.params = [p for p in self.net.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=0.0, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        self.loss_fn = EDM2Loss(P_mean=cfg["P_mean"], P_std=cfg["P_std"], sigma_data=cfg["sigma_data"])
        self.avg = [torch.zeros_like(p, dtype=torch.float32) for p in self.params] if self.avg_start is not None else None
        self.avg_count = 0
        self.emas = [[p.detach().clone().float() for p in self.params] for _ in cfg["ema_stds"]]
        self.cur_nimg = 0
        self.step = 0
        self.warm_start = None      # provenance of --init-from (set in run(); kept in training_options.json)

    #------------------------------------------------------------------
    # Data.

    def _load_data(self) -> None:
        from ..clevr.datasets import DatasetError, load_dataset
        try:
            imgs, labels, meta = load_dataset(self.data)
        except DatasetError as e:
            raise TrainError(str(e)) from None
        if imgs.ndim != 4 or imgs.shape[0] == 0:
            raise TrainError(f"{self.data}: dataset has no images")
        R = self.cfg["resolution"]
        if imgs.shape[1] != R or imgs.shape[2] != R:
            raise TrainError(f"{self.data}: images are {imgs.shape[2]}x{imgs.shape[1]} but preset "
                             f"{self.cfg['preset']!r} trains at {R}x{R} (pass --resolution {imgs.shape[1]} "
                             f"or use a matching dataset)")
        self.meta = meta or {}
        # The dataset is recorded by the path as given plus its content hash (never an absolute
        # path of this machine): a reader can check a re-rendered zip is the same bytes.
        self.data_sha256 = ckpt.file_sha256(self.data)
        self.condition = self.meta.get("condition") if labels is not None else None
        enc = self.cfg["cond_encoding"]
        if enc != "global":
            if not self.condition or self.condition.get("type") != "location":
                raise TrainError(f"--cond-encoding {enc}: {self.data} has no location labels (condition "
                                 f"{self.condition!r}); the map encodes a place")
            self.condition = {**self.condition, "encoding": enc, "map_sigma": float(self.cfg["map_sigma"])}
        if self.cfg["color_only_map"]:
            if enc not in ("map-color", "map-local") or not (self.condition or {}).get("colors"):
                raise TrainError(f"--color-only-map: needs colour maps (--cond-encoding map-color or map-local on "
                                 f"data with a colour per object); got --cond-encoding {enc} on {self.data}")
            self.condition = {**self.condition, "color_only": "map"}
        if self.cfg["place_weight"] > 0 and (self.condition or {}).get("type") != "location":
            raise TrainError(f"--place-weight: {self.data} has no location labels (condition {self.condition!r}); "
                             f"the weight is placed around the labelled place")
        if (self.cfg["color_dropout"] or self.cfg["location_dropout"]) and not (self.condition or {}).get("colors"):
            raise TrainError(f"--color-dropout / --location-dropout: {self.data} has no colour-per-object labels "
                             f"(dataset preset object-empty has)")
        try:
            self.encoder = ConditionEncoder(self.condition)
        except ConditionError as e:  # e.g. map-color on data without a colour per object (preset object-empty has one)
            raise TrainError(f"--cond-encoding {enc}: {self.data}: {e}") from None
        # uint8 NCHW in memory; converted to [-1, 1] per micro-batch.
        self.images = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)))
        if labels is not None and self.encoder.label_dim > 0:
            vals = [v if isinstance(v, (str, dict)) else int(v) if np.ndim(v) == 0 else list(map(float, v)) for v in labels]
            self.labels = self.encoder.encode_batch(vals)
        else:
            self.labels = None
        self.order = DataOrder(len(self.images), self.cfg["seed"])

    def _micro_batch(self, start: int, n: int):
        """Images [start, start + n) of the global image stream: x0, labels, ln-sigma normals, noise."""
        idx = [self.order(i) for i in range(start, start + n)]
        x = self.images[idx].to(self.device, torch.float32) / 127.5 - 1
        normals, noises, keep, parts = [], [], [], []
        C, H, W = x.shape[1:]
        split = self.cfg["color_dropout"] > 0 or self.cfg["location_dropout"] > 0
        for i in range(start, start + n):
            g = torch.Generator().manual_seed(_mix(self.cfg["seed"], 2, i))
            normals.append(torch.randn(1, generator=g))
            noises.append(torch.randn(C, H, W, generator=g))
            keep.append(torch.rand(1, generator=g) >= self.cfg["label_dropout"])
            if split:  # drawn after the others, so runs without part dropout keep their streams
                parts.append(torch.rand(2, generator=g))
        rnd_normal = torch.cat(normals).to(self.device)
        noise = torch.stack(noises).to(self.device)
        labels = None
        if self.labels is not None:
            labels = self.labels[idx].to(self.device)
            if split:
                # Part dropout: drop the colour (-> any object at xy), else the place (-> an object
                # of colour c anywhere); `without` leaves empty-scene labels as they are.
                u = torch.stack(parts).to(self.device)
                drop_c = u[:, 0] < self.cfg["color_dropout"]
                drop_l = ~drop_c & (u[:, 1] < self.cfg["location_dropout"])
                labels = torch.where(drop_c[:, None], self.encoder.without(labels, "color"), labels)
                labels = torch.where(drop_l[:, None], self.encoder.without(labels, "location"), labels)
            if self.cfg["label_dropout"] > 0:
                labels = labels * torch.cat(keep).to(self.device, torch.float32)[:, None]
        return x, labels, rnd_normal, noise

    def _pixel_weight(self, labels: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """[B, 1, R, R] loss weight 1 + place_weight * bump at each label's place (after dropout:
        a label without a place gets 1 everywhere), normalised to mean 1 per image; None if off."""
        if self.cfg["place_weight"] <= 0 or labels is None:
            return None
        bump = self.encoder.location_map(labels, self.cfg["resolution"], sigma=self.cfg["place_weight_sigma"])[:, :1]
        w = 1 + self.cfg["place_weight"] * bump
        return w / w.mean(dim=(2, 3), keepdim=True)

    #------------------------------------------------------------------
    # State and checkpoints (formats in state.py).

    def save_state(self) -> None:
        if self.rank != 0:
            return
        info = dict(cur_nimg=self.cur_nimg, step=self.step, avg_count=self.avg_count, avg_start=self.avg_start,
                    world=self.world, config=self.cfg, command=self.command, data=self.data, data_sha256=self.data_sha256,
                    rng="stateless: data order, noise and dropout are functions of (seed, image index)",
                    time=time.time())
        S.write_state(S.state_path(self.outdir, self.cur_nimg), S.state_tensors(self.net, self.opt, self.avg, self.emas), info)
        S.prune_states(self.outdir, self.cfg["keep_states"])
        # A loadable snapshot of the current (averaged, if averaging has begun) weights.
        self.save_checkpoint(os.path.join(self.outdir, "snapshot"), final=False)

    def load_state(self, path: str) -> None:
        tensors, info = S.read_state(path, self.cfg)
        S.restore_state(tensors, self.net, self.opt, self.avg, self.emas, self.device)
        self.cur_nimg, self.step, self.avg_count = int(info["cur_nimg"]), int(info["step"]), int(info["avg_count"])

    def final_weights(self, which: str = "avg") -> list[torch.Tensor]:
        if which == "avg" and self.avg is not None and self.avg_count > 0:
            return self.avg
        if which.startswith("ema"):
            return self.emas[int(which[3:])]
        return [p.detach() for p in self.params]

    def save_checkpoint(self, folder: str, final: bool = True, which: str = "avg") -> None:
        if which.startswith("ema"):
            averaging = {"kind": "power-ema", "std": self.cfg["ema_stds"][int(which[3:])]}
        elif self.avg is not None and self.avg_count > 0:
            averaging = {"kind": "mean-of-last-updates", "updates": self.avg_count, "first_update": self.avg_start + 1}
        else:
            averaging = {"kind": "none"}
        S.save_checkpoint(folder, self.net, self.final_weights(which), {
            "images_seen": self.cur_nimg, "updates": self.step, "final": final and self.cur_nimg >= self.total_nimg,
            "averaging": averaging, "dataset": {"path": self.data, "sha256": self.data_sha256, **self.meta},
            "training": self.cfg, "command": self.command,
            **({"warm_start": self.warm_start} if self.warm_start else {}),
        }, fp16=self.cfg["save_fp16"])

    def _write_final(self, final_dir: str) -> None:
        self.save_checkpoint(final_dir, final=True)
        for j, std in enumerate(self.cfg["ema_stds"]):
            self.save_checkpoint(os.path.join(self.outdir, f"checkpoint-ema-{float(std):.3f}"), final=True, which=f"ema{j}")

    #------------------------------------------------------------------
    # The loop.

    def run(self) -> str:
        cfg = self.cfg
        final_dir = os.path.join(self.outdir, "checkpoint")
        if self.rank == 0:
            os.makedirs(self.outdir, exist_ok=True)
        _barrier(self.world)
        latest = S.find_latest_state(self.outdir)
        if latest is not None:
            self.load_state(latest)
            self._log(f"resuming from {latest} at {self.cur_nimg} images")
        elif cfg["init_from"]:
            S.warm_start(self.net, cfg["init_from"], renormalize=cfg["force_wn"] == "after", log=self._log)
            self.warm_start = S.warm_start_record(cfg["init_from"])
            with torch.no_grad():
                for ema in self.emas:
                    for e, p in zip(ema, self.params):
                        e.copy_(p.detach().float())
        if latest is None and self.rank == 0:
            ckpt.atomic_write_json(os.path.join(self.outdir, "training_options.json"),
                                   {"config": cfg, "data": self.data, "data_sha256": self.data_sha256, "command": self.command,
                                    "world": self.world, "num_parameters": sum(p.numel() for p in self.params),
                                    **({"warm_start": self.warm_start} if self.warm_start else {})})
        elif latest is not None and cfg["init_from"]:
            # Resumed: the warm start's provenance was recorded when the run began (the folder it
            # names may since have been replaced, e.g. by this run's own installed checkpoint).
            try:
                with open(os.path.join(self.outdir, "training_options.json")) as f:
                    self.warm_start = json.load(f).get("warm_start")
            except (OSError, json.JSONDecodeError):
                self.warm_start = None
        stats_path = os.path.join(self.outdir, "stats.jsonl")
        if self.rank == 0:
            self._truncate_stats(stats_path)
        if self.cur_nimg >= self.total_nimg:
            if self.rank == 0 and not os.path.exists(os.path.join(final_dir, ckpt.CONFIG_NAME)):
                self._write_final(final_dir)
            self._log(f"already trained for {self.cur_nimg} images; final checkpoint in {final_dir}")
            return final_dir

        ddp = self.net
        if self.world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bool(cfg["bf16"]))
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=self.total_nimg, initial=self.cur_nimg, unit="img", unit_scale=True, dynamic_ncols=True,
                       desc=os.path.basename(os.path.normpath(self.outdir)))
        acc = dict(loss=0.0, raw=0.0, n=0)
        t_last, nimg_last = time.time(), self.cur_nimg

        while self.cur_nimg < self.total_nimg:
            lr = learning_rate(self.cur_nimg, cfg["batch"], cfg["lr"], cfg["t_ref"], cfg["rampup"])
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            for r in range(self.num_accum):
                start = self.cur_nimg + self.rank * self.batch_rank + r * self.batch_gpu
                x, labels, rnd_normal, noise = self._micro_batch(start, self.batch_gpu)
                torch.manual_seed(_mix(cfg["seed"], 3, start))  # network dropout, if any
                sync = contextlib.nullcontext() if (self.world == 1 or r == self.num_accum - 1) else ddp.no_sync()
                with sync:
                    # Sum over pixels and images / per-process batch; DDP averages over processes,
                    # so the gradient is the per-image sum averaged over the global batch (EDM2).
                    loss, raw = forward_backward(ddp, self.loss_fn, x, labels, rnd_normal, noise,
                                                 scale=1.0 / self.batch_rank, autocast=autocast,
                                                 pixel_weight=self._pixel_weight(labels))
                acc["loss"] += float(loss.detach().mean(dim=(1, 2, 3)).sum())
                acc["raw"] += float(raw.detach().mean(dim=(1, 2, 3)).sum())
                acc["n"] += self.batch_gpu
            optimizer_update(self.net, self.params, self.opt, cfg["force_wn"])
            self.cur_nimg += cfg["batch"]
            self.step += 1
            self._update_averages()
            if bar is not None:
                bar.update(cfg["batch"])

            done = self.cur_nimg >= self.total_nimg
            if self.cur_nimg % cfg["status_every"] < cfg["batch"] or done:
                st = self._reduce_stats(acc)
                now = time.time()
                st.update(kimg=self.cur_nimg / 1000, cur_nimg=self.cur_nimg, step=self.step, lr=lr,
                          img_per_s=(self.cur_nimg - nimg_last) / max(now - t_last, 1e-9), time=now)
                t_last, nimg_last = now, self.cur_nimg
                acc = dict(loss=0.0, raw=0.0, n=0)
                if self.rank == 0:
                    with open(stats_path, "a") as f:
                        f.write(json.dumps(st) + "\n")
                    if bar is not None:
                        bar.set_postfix(loss=f"{st['loss']:.3f}", lr=f"{lr:.2e}")
            if self.cur_nimg % cfg["state_every"] < cfg["batch"] or done:
                self.save_state()
                _barrier(self.world)
        if bar is not None:
            bar.close()
        if self.rank == 0:
            self._write_final(final_dir)
        _barrier(self.world)
        self._log(f"done: {self.cur_nimg} images; final checkpoint in {final_dir}")
        return final_dir

    def _update_averages(self) -> None:
        with torch.no_grad():
            if self.avg is not None and self.step > self.avg_start:
                # Running mean of the weights after updates avg_start+1 .. total (paper: last 4096).
                self.avg_count += 1
                for a, p in zip(self.avg, self.params):
                    a.add_(p.detach().float() - a, alpha=1.0 / self.avg_count)
            for std, ema in zip(self.cfg["ema_stds"], self.emas):
                beta = power_ema_beta(std, self.cur_nimg, self.cfg["batch"])
                for e, p in zip(ema, self.params):
                    e.copy_(p.detach().float().lerp(e, beta))

    def _reduce_stats(self, acc: dict) -> dict:
        v = torch.tensor([acc["loss"], acc["raw"], acc["n"]], dtype=torch.float64)
        if self.world > 1:
            v = v.to(self.device)
            torch.distributed.all_reduce(v)
            v = v.cpu()
        n = max(float(v[2]), 1.0)
        return {"loss": float(v[0]) / n, "loss_raw": float(v[1]) / n, "images": int(v[2])}

    def _truncate_stats(self, path: str) -> None:
        """Drop stats lines written after the state we resume from (they will be re-written)."""
        if not os.path.exists(path):
            return
        keep = []
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["cur_nimg"] <= self.cur_nimg:
                        keep.append(line)
                except (json.JSONDecodeError, KeyError):
                    pass
        ckpt.atomic_write_bytes(path, "".join(keep).encode())

    def _log(self, msg: str) -> None:
        if self.rank == 0:
            print(msg, file=sys.stderr, flush=True)


def training_loop(cfg: dict, data: str, outdir: str, command: str = "", progress: bool = True) -> str:
    """Train (or resume) and return the final checkpoint folder."""
    return Trainer(cfg, data, outdir, command=command, progress=progress).run()
