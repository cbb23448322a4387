"""`python -m projcomp.train`: train an EDM2 denoiser on a projcomp dataset zip.

The paper (Bradley et al. 2025, App. L) trains EDM2's edm2-img64-xs network with EDM2's loop,
two changes: forced weight normalisation *after* each update, and final weights = the plain
average of the last 4096 updates instead of post-hoc EMA. Both are defaults here (`force_wn`,
`avg_last`); EDM2's originals remain options (force_wn='before', ema_stds=...).

Examples:
    python -m projcomp.train --preset cpu-32 --data data/clevr-loc-32.zip --outdir runs/loc32
    python -m projcomp.train --preset cpu-32 --data D.zip --outdir R --duration 2Mi --bf16
    torchrun --nproc_per_node 2 -m projcomp.train --preset gpu-64 --data D.zip --outdir R
    python -m projcomp.train --preset paper-xs --data D.zip --outdir R --dry-run

Re-running the same command resumes from the newest `training-state-*.safetensors` in outdir
(bit-identical to an uninterrupted run: data order, noise and dropout are functions of
(seed, image index), and the state holds weights, Adam moments and averaging buffers).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import json
import math
import os
import re
import shlex
import sys
import time
from typing import Any, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from .nn import ConditionEncoder, Precond, normalize_weights_, set_force_wn_in_forward

__all__ = ["PRESETS", "DEFAULTS", "TrainError", "resolve_config", "learning_rate", "std_to_exp",
           "EDM2Loss", "training_loop", "main"]


class TrainError(ValueError):
    """A bad training option, dataset or output directory; the message names it."""

#----------------------------------------------------------------------------
# Configuration. Sizes are in images (EDM2 convention: schedules independent of batch size);
# t_ref is in updates, as the paper states it. Every key can be overridden on the CLI.

DEFAULTS: dict[str, Any] = dict(
    # Network (projcomp.nn.Precond / UNet / Block).
    resolution=64,              # Image resolution; must match the dataset.
    model_channels=128,         # Base width.
    channel_mult=[1, 2, 3, 4],  # Width multiplier per level.
    num_blocks=3,               # Encoder blocks per level (decoder: +1).
    attn_resolutions=[16, 8],   # Resolutions with self-attention.
    channels_per_head=64,       # Attention head width.
    dropout=0.0,                # Dropout in the residual branches.
    label_balance=0.5,          # Noise vs label embedding balance.
    concat_balance=0.5,         # Main path vs skip balance.
    logvar_channels=128,        # Fourier features of the uncertainty head.
    sigma_data=0.5,             # EDM sigma_data.
    # Loss (EDM2 Eq. 21 with learned uncertainty).
    P_mean=-0.8,                # Mean of ln(sigma) during training.
    P_std=1.6,                  # Std of ln(sigma) during training.
    label_dropout=0.0,          # Probability of replacing a label by the null (zeros) label.
    color_dropout=0.0,          # Colour-per-object labels: probability of dropping the colour (-> any object at xy).
    location_dropout=0.0,       # ... else probability of dropping the place (-> an object of colour c anywhere).
    # Condition encoding (projcomp.nn.conditions): how a location label reaches the network.
    cond_encoding="global",     # 'global' (label embedding only) or 'map' (also a bump map as an input channel).
    map_sigma=1.5 / 32,         # Width of the map's bump, in image widths (1.5 px at 32 x 32).
    # Optimisation.
    batch=2048,                 # Global batch (images per update).
    batch_gpu=0,                # Micro-batch per process (images); 0 = whole per-process batch.
    duration="128Mi",           # Training length in images.
    lr=0.012,                   # Reference learning rate alpha_ref.
    t_ref=35000,                # Inverse-sqrt decay starts after t_ref updates.
    rampup="10Mi",              # Linear learning-rate warm-up (images); 0 = none.
    beta1=0.9,                  # Adam beta1.
    beta2=0.99,                 # Adam beta2.
    eps=1e-8,                   # Adam epsilon.
    force_wn="after",           # Forced weight normalisation 'after' the update (paper) or 'before' (EDM2).
    avg_last=4096,              # Final weights = mean of the last N updates (paper); 0 = raw last weights.
    ema_stds=[],                # Optional power-function EMA profiles (EDM2), e.g. [0.05, 0.1].
    bf16=False,                 # bfloat16 autocast for the network.
    seed=0,                     # Seed: initial weights, data order, noise, dropout.
    # I/O.
    status_every="128Ki",       # Stats line (stats.jsonl) every N images.
    state_every="8Mi",          # Training state + snapshot checkpoint every N images.
    keep_states=2,              # Training states kept on disk.
    save_fp16=False,            # Store checkpoint weights as float16.
    num_threads=0,              # torch CPU threads per process; 0 = torch default.
    init_from="",               # Warm start from this checkpoint folder (fresh runs only; see _init_from).
)

PRESETS: dict[str, dict] = {
    # Exactly the paper (App. L): edm2-img64-xs (channels 128, mult [1,2,3,4], 3 blocks, attention
    # at 16 and 8) at 128x128 -- the four levels are 128, 64, 32, 16, so the "8" entry has no
    # level to act on, as when EDM2's config is used at 128 px. Batch 2048, 128 Mi images,
    # lr 0.012, t_ref 35000, EDM2's 10 Mi warm-up, P_mean -0.8, P_std 1.6, dropout 0, weight
    # renormalisation after the update, average of the last 4096 updates, no post-hoc EMA.
    # 32 A100s in the paper: e.g. torchrun --nproc_per_node 8 (x4 nodes), batch_gpu 64.
    "paper-xs": dict(
        resolution=128, model_channels=128, channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[16, 8],
        dropout=0.0, P_mean=-0.8, P_std=1.6, batch=2048, batch_gpu=64, duration="128Mi", lr=0.012, t_ref=35000,
        rampup="10Mi", force_wn="after", avg_last=4096, ema_stds=[], bf16=True, label_dropout=0.0,
        status_every="128Ki", state_every="8Mi",
    ),
    # One GPU, 64x64: the same layout at half the width (~31 M params); batch 256, 64 Mi images
    # (~260k updates). t_ref scaled so decay starts after a similar fraction (~0.5) of the images
    # the paper spends before it (35000 x 2048 = 72 Mi of 128 Mi). avg over the last 4096 updates.
    "gpu-64": dict(
        resolution=64, model_channels=64, channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[16, 8],
        dropout=0.0, P_mean=-0.8, P_std=1.6, batch=256, batch_gpu=256, duration="64Mi", lr=0.01, t_ref=70000,
        rampup="2Mi", force_wn="after", avg_last=4096, bf16=True, label_dropout=0.1,
        status_every="256Ki", state_every="2Mi",
    ),
    # Two CPU cores, 32x32, 1.7 M params. Choices:
    #  - levels 32/16/8 at widths 32/64/64, 2 blocks, attention at 8 (and the decoder's 8x8 in0):
    #    objects in 32 px CLEVR are 3-6 px, so 8x8 attention sees the whole scene layout;
    #  - P_mean/P_std as the paper (-0.8/1.6): wide enough to train the high-noise levels where
    #    object layout (what composition is about) is decided; the learned uncertainty reweights;
    #  - batch 64 (an update every ~1 s); lr 0.008 (smaller than the paper's 0.012 at batch 2048,
    #    for the noisier small-batch gradients); t_ref 8000 updates = 512 Ki images, warm-up 64 Ki;
    #  - average of the last 2048 updates (128 Ki images, ~1/8 of a 1 Mi run; cf. EDM2's
    #    best EMA lengths of 5-15 % of training for small nets);
    #  - label dropout 0.1 (Composable Diffusion / CFG practice) so one net also gives the
    #    unconditional term of Bayes composition.
    #  Speed (bench_train.py, 2 idle cores): ~40 img/s fp32, ~60 img/s with --bf16 (1.5x). On a
    #  machine shared with other jobs pass --num-threads 1: two OpenMP threads on oversubscribed
    #  cores can be >10x slower than one.
    "cpu-32": dict(
        resolution=32, model_channels=32, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8],
        dropout=0.0, P_mean=-0.8, P_std=1.6, batch=64, batch_gpu=64, duration="1Mi", lr=0.008, t_ref=8000,
        rampup="64Ki", force_wn="after", avg_last=2048, bf16=False, label_dropout=0.1,
        status_every="8Ki", state_every="32Ki", num_threads=0,
    ),
    # One GPU, 32x32: the cpu-32 network (so the result samples as fast on a CPU) trained ~10x
    # longer. A 1.7 M-param net is launch-bound on a GPU: batch 256 ran at 2.6k img/s on an
    # H100, batch 1024 at 4k img/s per process with three processes sharing the card, so batch
    # 1024 at lr 0.01; decay after t_ref 1000 updates (1 Mi images); 256 Ki warm-up; average of
    # the last 256 updates (256 Ki images, 1/6 of the run). bf16 autocast.
    "gpu-32": dict(
        resolution=32, model_channels=32, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8],
        dropout=0.0, P_mean=-0.8, P_std=1.6, batch=1024, batch_gpu=1024, duration="1536Ki", lr=0.01, t_ref=1000,
        rampup="256Ki", force_wn="after", avg_last=256, bf16=True, label_dropout=0.1,
        status_every="128Ki", state_every="512Ki", num_threads=4,
    ),
    # One GPU, 64x64, compact (~5 M params, a 64 px level in front of cpu-32's layout): what a
    # few GPU-minutes can train; attention at 16 and 8, where 64 px CLEVR objects (6-12 px) and
    # their layout live. Same schedule as gpu-32.
    "gpu-64-small": dict(
        resolution=64, model_channels=32, channel_mult=[1, 2, 2, 4], num_blocks=2, attn_resolutions=[16, 8],
        dropout=0.0, P_mean=-0.8, P_std=1.6, batch=1024, batch_gpu=1024, duration="1Mi", lr=0.01, t_ref=1000,
        rampup="256Ki", force_wn="after", avg_last=256, bf16=True, label_dropout=0.1,
        status_every="128Ki", state_every="512Ki", num_threads=4,
    ),
    # Two CPU cores, 32x32, the cpu-32 network with the location as a MAP (one input channel, a
    # bump of 1.5 px at the requested place, beside the global embedding) and a colour per object
    # (dataset preset object-empty). Measured before choosing (docs/clevr-models.md): the map
    # places objects at 1/24 of the images the global embedding needs. Batch 32 (twice the updates
    # per image of cpu-32), lr 0.006, decay after 2048 updates (64 Ki images), average of the last
    # 1024 updates (32 Ki images). Part dropout so one net gives every conditional the app uses:
    # null 10 %, then colour dropped 40 % (any object at xy), else place dropped 25 % (colour c
    # anywhere, Fig 5). One thread: the machine's other core serves sampling and tests.
    "cpu-32-map": dict(
        resolution=32, model_channels=32, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8],
        dropout=0.0, P_mean=-0.8, P_std=1.6, batch=32, batch_gpu=32, duration="128Ki", lr=0.006, t_ref=2048,
        rampup="16Ki", force_wn="after", avg_last=1024, bf16=False, label_dropout=0.1,
        color_dropout=0.4, location_dropout=0.25, cond_encoding="map", map_sigma=1.5 / 32,
        status_every="4Ki", state_every="8Ki", num_threads=1,
    ),
    # Tests: seconds on one core.
    "tiny": dict(
        resolution=16, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
        channels_per_head=16, logvar_channels=16, dropout=0.0, P_mean=-0.8, P_std=1.6, batch=16, batch_gpu=16,
        duration="2Ki", lr=0.02, t_ref=1000, rampup=256, force_wn="after", avg_last=16, bf16=False,
        label_dropout=0.1, status_every=128, state_every=256, keep_states=2, num_threads=1,
    ),
}

IMAGE_KEYS = ("duration", "rampup", "status_every", "state_every")
# Keys that may change between a run and its resumption without breaking bit-exactness.
# (batch_gpu changes only the float summation order: safe, but then not bit-identical; EDM2 README.)
RESUME_SAFE_KEYS = {"status_every", "state_every", "keep_states", "save_fp16", "num_threads", "batch_gpu"}


def parse_nimg(s: Any, key: str = "value") -> int:
    """'2Mi' -> 2097152, '500k' -> 500000, '128Ki', '1.5M', 4096 -> image counts."""
    if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
        return int(s)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(Ki|Mi|Gi|k|K|M|G)?\s*", str(s))
    if not m:
        raise TrainError(f"--{key.replace('_', '-')}: {s!r} is not an image count (e.g. 4096, 500k, 128Ki, 2Mi)")
    mult = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]
    v = float(m.group(1)) * mult
    if v != int(v):
        raise TrainError(f"--{key.replace('_', '-')}: {s!r} is not a whole number of images")
    return int(v)


def _parse_value(key: str, text: str, default: Any) -> Any:
    t = text.strip()
    if key in IMAGE_KEYS:
        return parse_nimg(t, key)
    if isinstance(default, bool):
        if t.lower() in ("1", "true", "yes", "on"):
            return True
        if t.lower() in ("0", "false", "no", "off"):
            return False
        raise TrainError(f"--{key.replace('_', '-')}: {text!r} is not a boolean")
    if isinstance(default, list):
        if t.lower() in ("", "none", "[]"):
            return []
        try:
            items = json.loads(t) if t.startswith("[") else [json.loads(x) for x in t.split(",")]
        except json.JSONDecodeError:
            raise TrainError(f"--{key.replace('_', '-')}: {text!r} is not a comma-separated list of numbers") from None
        return list(items)
    if isinstance(default, int):
        try:
            return int(t)
        except ValueError:
            raise TrainError(f"--{key.replace('_', '-')}: {text!r} is not an integer") from None
    if isinstance(default, float):
        try:
            return float(t)
        except ValueError:
            raise TrainError(f"--{key.replace('_', '-')}: {text!r} is not a number") from None
    return t


def resolve_config(preset: str, overrides: Optional[dict] = None) -> dict:
    """DEFAULTS <- PRESETS[preset] <- overrides, validated; sizes converted to image counts."""
    if preset not in PRESETS:
        raise TrainError(f"--preset {preset!r}: expected one of {sorted(PRESETS)}")
    cfg = dict(DEFAULTS)
    cfg.update(copy.deepcopy(PRESETS[preset]))
    for k, v in (overrides or {}).items():
        if k not in DEFAULTS:
            raise TrainError(f"unknown option {k!r}")
        if v is not None:
            cfg[k] = _parse_value(k, v, DEFAULTS[k]) if isinstance(v, str) and not isinstance(DEFAULTS[k], str) else v
    cfg["preset"] = preset
    for k in IMAGE_KEYS:
        cfg[k] = parse_nimg(cfg[k], k)
    if cfg["batch_gpu"] == 0:
        cfg["batch_gpu"] = cfg["batch"]
    # Validation (one message per bad field).
    if cfg["force_wn"] not in ("after", "before"):
        raise TrainError(f"--force-wn {cfg['force_wn']!r}: expected 'after' (paper) or 'before' (EDM2)")
    if cfg["batch"] <= 0 or cfg["batch_gpu"] <= 0:
        raise TrainError(f"--batch {cfg['batch']} / --batch-gpu {cfg['batch_gpu']}: must be positive")
    if cfg["duration"] <= 0 or cfg["duration"] % cfg["batch"] != 0:
        raise TrainError(f"--duration {cfg['duration']}: must be a positive multiple of --batch {cfg['batch']}")
    for k in ("label_dropout", "color_dropout", "location_dropout"):
        if not 0 <= cfg[k] < 1:
            raise TrainError(f"--{k.replace('_', '-')} {cfg[k]}: must be in [0, 1)")
    if cfg["cond_encoding"] not in ("global", "map"):
        raise TrainError(f"--cond-encoding {cfg['cond_encoding']!r}: expected 'global' or 'map'")
    if not (math.isfinite(cfg["map_sigma"]) and cfg["map_sigma"] > 0):
        raise TrainError(f"--map-sigma {cfg['map_sigma']}: must be a positive width in image units")
    if cfg["avg_last"] < 0:
        raise TrainError(f"--avg-last {cfg['avg_last']}: must be >= 0")
    for k in ("status_every", "state_every"):
        if cfg[k] <= 0:
            raise TrainError(f"--{k.replace('_', '-')} {cfg[k]}: must be positive")
    for s in cfg["ema_stds"]:
        if not 0 < float(s) < 0.28:
            raise TrainError(f"--ema-stds {s}: a power-function EMA std must lie in (0, 0.28)")
    if cfg["resolution"] % (2 ** (len(cfg["channel_mult"]) - 1)) != 0:
        raise TrainError(f"--resolution {cfg['resolution']}: not divisible by 2^(levels-1) for channel_mult {cfg['channel_mult']}")
    return cfg


def network_kwargs(cfg: dict, label_dim: int, condition: Optional[dict]) -> dict:
    return dict(
        img_resolution=cfg["resolution"], img_channels=3, label_dim=label_dim, condition=condition,
        sigma_data=cfg["sigma_data"], logvar_channels=cfg["logvar_channels"],
        model_channels=cfg["model_channels"], channel_mult=list(cfg["channel_mult"]), num_blocks=cfg["num_blocks"],
        attn_resolutions=list(cfg["attn_resolutions"]), label_balance=cfg["label_balance"],
        concat_balance=cfg["concat_balance"], channels_per_head=cfg["channels_per_head"], dropout=cfg["dropout"],
    )

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
# Deterministic per-image randomness. Everything random about training image number i
# (its dataset index, ln sigma, noise, label-dropout coin) is a function of (seed, i) only, so
# the run is identical for any micro-batch size, any number of DDP ranks, and across resumes.

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

class EDM2Loss:
    def __init__(self, P_mean: float = -0.8, P_std: float = 1.6, sigma_data: float = 0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

    def __call__(self, net, images: torch.Tensor, labels: Optional[torch.Tensor], rnd_normal: torch.Tensor,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = (rnd_normal * self.P_std + self.P_mean).exp().reshape(-1, 1, 1, 1)
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        D, logvar = net(images + noise * sigma, sigma.flatten(), labels, return_logvar=True)
        raw = weight * (D - images) ** 2
        loss = raw / logvar.exp() + logvar
        return loss, raw

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
# Training state: one .safetensors file holding every tensor (weights, Adam moments, averaging
# and EMA buffers) with the JSON state (images seen, config, ...) in its metadata, written
# atomically, so the newest complete file is always a consistent point to resume from.

STATE_RE = re.compile(r"training-state-(\d{12})\.safetensors$")


def _state_path(outdir: str, cur_nimg: int) -> str:
    return os.path.join(outdir, f"training-state-{cur_nimg:012d}.safetensors")


def find_latest_state(outdir: str) -> Optional[str]:
    found = []
    for p in glob.glob(os.path.join(outdir, "training-state-*.safetensors")):
        m = STATE_RE.search(os.path.basename(p))
        if m:
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


class Trainer:
    """The EDM2 training loop with the paper's changes, resumable and DDP-aware."""

    def __init__(self, cfg: dict, data: str, outdir: str, command: str = "", progress: bool = True):
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
        self.net.requires_grad_(True)
        if cfg["force_wn"] == "after":
            normalize_weights_(self.net)  # start from the normalised point, as after every update
        else:
            set_force_wn_in_forward(self.net, True)
        self.params = [p for p in self.net.parameters()]
        self.names = [n for n, _ in self.net.named_parameters()]
        self.opt = torch.optim.Adam(self.params, lr=0.0, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        self.loss_fn = EDM2Loss(P_mean=cfg["P_mean"], P_std=cfg["P_std"], sigma_data=cfg["sigma_data"])
        self.avg = [torch.zeros_like(p, dtype=torch.float32) for p in self.params] if self.avg_start is not None else None
        self.avg_count = 0
        self.emas = [[p.detach().clone().float() for p in self.params] for _ in cfg["ema_stds"]]
        self.cur_nimg = 0
        self.step = 0

    #------------------------------------------------------------------
    def _load_data(self) -> None:
        from .clevr.datasets import DatasetError, load_dataset
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
        if self.cfg["cond_encoding"] == "map":
            if not self.condition or self.condition.get("type") != "location":
                raise TrainError(f"--cond-encoding map: {self.data} has no location labels (condition "
                                 f"{self.condition!r}); the map encodes a place")
            self.condition = {**self.condition, "encoding": "map", "map_sigma": float(self.cfg["map_sigma"])}
        if (self.cfg["color_dropout"] or self.cfg["location_dropout"]) and not (self.condition or {}).get("colors"):
            raise TrainError(f"--color-dropout / --location-dropout: {self.data} has no colour-per-object labels "
                             f"(dataset preset object-empty has)")
        self.encoder = ConditionEncoder(self.condition)
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

    #------------------------------------------------------------------
    def state_tensors(self) -> dict:
        t = {}
        for n, p in zip(self.names, self.params):
            t[f"net.{n}"] = p.detach()
        for n, b in self.net.named_buffers():
            t[f"buf.{n}"] = b
        for i, p in enumerate(self.params):
            st = self.opt.state.get(p, {})
            for k, v in st.items():
                t[f"opt.{i}.{k}"] = torch.as_tensor(v)
        if self.avg is not None:
            for n, a in zip(self.names, self.avg):
                t[f"avg.{n}"] = a
        for j, ema in enumerate(self.emas):
            for n, e in zip(self.names, ema):
                t[f"ema{j}.{n}"] = e
        return t

    def save_state(self) -> None:
        if self.rank != 0:
            return
        info = dict(cur_nimg=self.cur_nimg, step=self.step, avg_count=self.avg_count, avg_start=self.avg_start,
                    world=self.world, config=self.cfg, command=self.command, data=self.data, data_sha256=self.data_sha256,
                    rng="stateless: data order, noise and dropout are functions of (seed, image index)",
                    time=time.time())
        path = _state_path(self.outdir, self.cur_nimg)
        ckpt.atomic_save_safetensors(path, self.state_tensors(), metadata={"projcomp_state": json.dumps(info)})
        ckpt.atomic_write_json(path.replace(".safetensors", ".json"), {k: v for k, v in info.items()})
        # Prune old states (keep the newest keep_states).
        states = sorted(glob.glob(os.path.join(self.outdir, "training-state-*.safetensors")))
        for old in states[:-max(int(self.cfg["keep_states"]), 1)]:
            for p in (old, old.replace(".safetensors", ".json")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(p)
        # A loadable snapshot of the current (averaged, if averaging has begun) weights.
        self.save_checkpoint(os.path.join(self.outdir, "snapshot"), final=False)

    def load_state(self, path: str) -> None:
        tensors, meta = ckpt.read_safetensors(path)
        try:
            info = json.loads(meta["projcomp_state"])
        except (KeyError, json.JSONDecodeError):
            raise ckpt.CheckpointError(f"{path}: not a projcomp training state (no 'projcomp_state' metadata)") from None
        old = info["config"]
        diff = sorted(k for k in set(old) | set(self.cfg) if k not in RESUME_SAFE_KEYS and old.get(k) != self.cfg.get(k))
        if diff:
            raise TrainError(f"{path}: was written with different options {', '.join(f'{k}={old.get(k)!r}' for k in diff)}; "
                             f"use the same command, or a new --outdir")
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                p.copy_(tensors[f"net.{n}"])
            for n, b in self.net.named_buffers():
                b.copy_(tensors[f"buf.{n}"])
            for i, p in enumerate(self.params):
                st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
                if st:
                    self.opt.state[p] = {k: v.to(self.device) if k != "step" else v.clone() for k, v in st.items()}
            if self.avg is not None:
                for n, a in zip(self.names, self.avg):
                    a.copy_(tensors[f"avg.{n}"])
            for j, ema in enumerate(self.emas):
                for n, e in zip(self.names, ema):
                    e.copy_(tensors[f"ema{j}.{n}"])
        self.cur_nimg, self.step, self.avg_count = int(info["cur_nimg"]), int(info["step"]), int(info["avg_count"])

    #------------------------------------------------------------------
    def final_weights(self, which: str = "avg") -> list[torch.Tensor]:
        if which == "avg" and self.avg is not None and self.avg_count > 0:
            return self.avg
        if which.startswith("ema"):
            return self.emas[int(which[3:])]
        return [p.detach() for p in self.params]

    def save_checkpoint(self, folder: str, final: bool = True, which: str = "avg") -> None:
        net = copy.deepcopy(self.net).cpu().eval()
        with torch.no_grad():
            for p, w in zip(net.parameters(), self.final_weights(which)):
                p.copy_(w)
        if which.startswith("ema"):
            averaging = {"kind": "power-ema", "std": self.cfg["ema_stds"][int(which[3:])]}
        elif self.avg is not None and self.avg_count > 0:
            averaging = {"kind": "mean-of-last-updates", "updates": self.avg_count, "first_update": self.avg_start + 1}
        else:
            averaging = {"kind": "none"}
        ckpt.save(folder, net, {
            "images_seen": self.cur_nimg, "updates": self.step, "final": final and self.cur_nimg >= self.total_nimg,
            "averaging": averaging, "dataset": {"path": self.data, "sha256": self.data_sha256, **self.meta},
            "training": self.cfg, "command": self.command,
        }, fp16=self.cfg["save_fp16"])

    #------------------------------------------------------------------
    def _init_from(self, folder: str) -> None:
        """Warm start: copy a checkpoint's weights where names and shapes match.

        A parameter whose input width grew (a label embedding with one more label, e.g. the
        'empty' scene added to a location net) keeps the old columns; the new ones keep their
        fresh initialisation (forced weight normalisation re-normalises each output row).
        Every rank loads the same file, so DDP replicas start identical.
        """
        src, _ = ckpt.read_safetensors(os.path.join(ckpt._resolve(folder, None), ckpt.WEIGHTS_NAME))
        copied, widened = 0, []
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                w = src.get(name)
                if w is None:
                    continue
                w = w.to(p.dtype)
                if w.shape == p.shape:
                    p.copy_(w)
                    copied += 1
                elif w.ndim == p.ndim and w.ndim >= 2 and w.shape[0] == p.shape[0] and w.shape[2:] == p.shape[2:] and w.shape[1] < p.shape[1]:
                    p[:, : w.shape[1]].copy_(w)
                    widened.append(name)
            if self.cfg["force_wn"] == "after":
                normalize_weights_(self.net)
            for ema in self.emas:
                for e, p in zip(ema, self.params):
                    e.copy_(p.detach().float())
        if copied == 0 and not widened:
            raise TrainError(f"--init-from {folder}: no parameter matches this network")
        self._log(f"initialised from {folder}: {copied} tensors copied, {len(widened)} widened ({', '.join(widened)})")

    def run(self) -> str:
        cfg = self.cfg
        final_dir = os.path.join(self.outdir, "checkpoint")
        if self.rank == 0:
            os.makedirs(self.outdir, exist_ok=True)
        _barrier(self.world)
        latest = find_latest_state(self.outdir)
        if latest is not None:
            self.load_state(latest)
            self._log(f"resuming from {latest} at {self.cur_nimg} images")
        else:
            if cfg["init_from"]:
                self._init_from(cfg["init_from"])
        if latest is None and self.rank == 0:
            ckpt.atomic_write_json(os.path.join(self.outdir, "training_options.json"),
                                   {"config": cfg, "data": self.data, "data_sha256": self.data_sha256, "command": self.command,
                                    "world": self.world, "num_parameters": sum(p.numel() for p in self.params)})
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
                    with autocast:
                        loss, raw = self.loss_fn(ddp, x, labels, rnd_normal, noise)
                    # Sum over pixels and images / per-process batch; DDP averages over processes,
                    # so the gradient is the per-image sum averaged over the global batch (EDM2).
                    loss.sum().mul(1.0 / self.batch_rank).backward()
                acc["loss"] += float(loss.detach().mean(dim=(1, 2, 3)).sum())
                acc["raw"] += float(raw.detach().mean(dim=(1, 2, 3)).sum())
                acc["n"] += self.batch_gpu
            for p in self.params:
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
            self.opt.step()
            if cfg["force_wn"] == "after":
                normalize_weights_(self.net)  # the paper's change: renormalise after the update
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

    def _write_final(self, final_dir: str) -> None:
        self.save_checkpoint(final_dir, final=True)
        for j, std in enumerate(self.cfg["ema_stds"]):
            self.save_checkpoint(os.path.join(self.outdir, f"checkpoint-ema-{float(std):.3f}"), final=True, which=f"ema{j}")

    def _log(self, msg: str) -> None:
        if self.rank == 0:
            print(msg, file=sys.stderr, flush=True)


def training_loop(cfg: dict, data: str, outdir: str, command: str = "", progress: bool = True) -> str:
    """Train (or resume) and return the final checkpoint folder."""
    return Trainer(cfg, data, outdir, command=command, progress=progress).run()

#----------------------------------------------------------------------------
# CLI.

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m projcomp.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Every preset key is an option: " + ", ".join(
                                    "--" + k.replace("_", "-") for k in DEFAULTS))
    p.add_argument("--preset", default="cpu-32", help=f"one of {sorted(PRESETS)} (default cpu-32)")
    p.add_argument("--data", help="dataset zip written by `python -m projcomp.clevr make`")
    p.add_argument("--outdir", help="run directory (re-running the same command resumes)")
    p.add_argument("--dry-run", "-n", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the final checkpoint to this Hub repo")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    for k, v in DEFAULTS.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            p.add_argument(flag, dest=k, nargs="?", const="true", default=None, metavar="BOOL")
        else:
            p.add_argument(flag, dest=k, default=None, metavar=type(v).__name__.upper())
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args.preset, {k: getattr(args, k) for k in DEFAULTS})
        if args.dry_run:
            print(json.dumps(cfg, indent=2))
            return 0
        if not args.data or not args.outdir:
            raise TrainError("--data and --outdir are required (or use --dry-run)")
        command = "python -m projcomp.train " + " ".join(shlex.quote(a) for a in argv)
        final = training_loop(cfg, args.data, args.outdir, command=command, progress=not args.no_progress)
        if args.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
            url = ckpt.push_to_hub(final, args.push_to_hub)
            print(f"pushed {final} to {url}", file=sys.stderr)
    except (TrainError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
