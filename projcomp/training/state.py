"""Training state I/O: what a run writes to resume bit-exactly, its snapshots and final checkpoints.

A training state is one .safetensors file holding every tensor (weights `net.*`, buffers `buf.*`,
Adam moments `opt.<i>.*`, the running mean of the last updates `avg.*`, EMA profiles `ema<j>.*`)
with the JSON state (images seen, updates, config, dataset path as given + sha256, ...) in its
metadata under 'projcomp_state', and the same JSON beside it. Files are written atomically, so the
newest complete `training-state-<cur_nimg>.safetensors` is always a consistent point to resume from.
Random numbers need no state: they are functions of (seed, image index) (see loop.py).
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import re
from typing import Callable, Optional, Sequence

import torch

from .. import checkpoint as ckpt
from ..nn import normalize_weights_
from .config import DEFAULTS, RESUME_END_KEYS, RESUME_SAFE_KEYS, TrainError

__all__ = ["STATE_RE", "state_path", "find_latest_state", "state_tensors", "write_state", "read_state",
           "restore_state", "prune_states", "save_checkpoint", "warm_start"]

STATE_RE = re.compile(r"training-state-(\d{12})\.safetensors$")


def state_path(outdir: str, cur_nimg: int) -> str:
    return os.path.join(outdir, f"training-state-{cur_nimg:012d}.safetensors")


def find_latest_state(outdir: str) -> Optional[str]:
    found = []
    for p in glob.glob(os.path.join(outdir, "training-state-*.safetensors")):
        m = STATE_RE.search(os.path.basename(p))
        if m:
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def state_tensors(net: torch.nn.Module, opt: torch.optim.Optimizer, avg: Optional[list], emas: list) -> dict:
    """Every tensor a resume needs, by its name in the state file."""
    names = [n for n, _ in net.named_parameters()]
    params = list(net.parameters())
    t = {}
    for n, p in zip(names, params):
        t[f"net.{n}"] = p.detach()
    for n, b in net.named_buffers():
        t[f"buf.{n}"] = b
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            t[f"opt.{i}.{k}"] = torch.as_tensor(v)
    if avg is not None:
        for n, a in zip(names, avg):
            t[f"avg.{n}"] = a
    for j, ema in enumerate(emas):
        for n, e in zip(names, ema):
            t[f"ema{j}.{n}"] = e
    return t


def write_state(path: str, tensors: dict, info: dict) -> None:
    ckpt.atomic_save_safetensors(path, tensors, metadata={"projcomp_state": json.dumps(info)})
    ckpt.atomic_write_json(path.replace(".safetensors", ".json"), dict(info))


def read_state(path: str, cfg: dict) -> tuple[dict, dict]:
    """(tensors, info) of a state file written with a config that `cfg` may resume."""
    tensors, meta = ckpt.read_safetensors(path)
    try:
        info = json.loads(meta["projcomp_state"])
    except (KeyError, json.JSONDecodeError):
        raise ckpt.CheckpointError(f"{path}: not a projcomp training state (no 'projcomp_state' metadata)") from None
    old = info["config"]
    # A key the state does not name was added after it was written: it ran with the default.
    diff = sorted(k for k in set(old) | set(cfg)
                  if k not in RESUME_SAFE_KEYS and old.get(k, DEFAULTS.get(k)) != cfg.get(k, DEFAULTS.get(k)))
    if diff and set(diff) <= RESUME_END_KEYS and _end_may_move(old, cfg, info):
        diff = []
    if diff:
        raise TrainError(f"{path}: was written with different options {', '.join(f'{k}={old.get(k)!r}' for k in diff)}; "
                         f"use the same command, or a new --outdir")
    return tensors, info


def _avg_start(cfg: dict) -> Optional[int]:
    """The update after which averaging begins (None: no averaging), as the loop computes it."""
    return max(cfg["duration"] // cfg["batch"] - cfg["avg_last"], 0) if cfg["avg_last"] > 0 else None


def _end_may_move(old: dict, cfg: dict, info: dict) -> bool:
    """Whether a state may resume with another duration / avg_last (RESUME_END_KEYS): averaging
    has begun under neither config, the new config averages, and the new end lies ahead. (An old
    config without averaging, avg_last 0, holds no average yet: the new one starts it from zero
    at its own first averaged update, exactly as a run started with the new values would.)"""
    a_old, a_new = _avg_start(old), _avg_start(cfg)
    step = int(info["step"])
    if a_new is None or int(info.get("avg_count", 0)) != 0:
        return False
    first_avg = min(a for a in (a_old, a_new) if a is not None)
    return step <= first_avg and cfg["duration"] > int(info["cur_nimg"])


def restore_state(tensors: dict, net: torch.nn.Module, opt: torch.optim.Optimizer, avg: Optional[list],
                  emas: list, device: torch.device) -> None:
    """Copy a state's tensors into the live objects (the inverse of `state_tensors`)."""
    names = [n for n, _ in net.named_parameters()]
    params = list(net.parameters())
    with torch.no_grad():
        for n, p in zip(names, params):
            p.copy_(tensors[f"net.{n}"])
        for n, b in net.named_buffers():
            b.copy_(tensors[f"buf.{n}"])
        for i, p in enumerate(params):
            st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
            if st:
                opt.state[p] = {k: v.to(device) if k != "step" else v.clone() for k, v in st.items()}
        if avg is not None:
            for n, a in zip(names, avg):
                if f"avg.{n}" in tensors:  # absent when the state's run did not average (still zeros: see _end_may_move)
                    a.copy_(tensors[f"avg.{n}"])
        for j, ema in enumerate(emas):
            for n, e in zip(names, ema):
                e.copy_(tensors[f"ema{j}.{n}"])


def prune_states(outdir: str, keep: int) -> None:
    """Delete all but the newest `keep` (at least 1) training states."""
    states = sorted(glob.glob(os.path.join(outdir, "training-state-*.safetensors")))
    for old in states[:-max(int(keep), 1)]:
        for p in (old, old.replace(".safetensors", ".json")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


def save_checkpoint(folder: str, net: torch.nn.Module, weights: Sequence[torch.Tensor], config: dict,
                    fp16: bool = False) -> None:
    """A loadable checkpoint folder (projcomp.checkpoint format) of `net` with `weights` in place of its own."""
    out = copy.deepcopy(net).cpu().eval()
    with torch.no_grad():
        for p, w in zip(out.parameters(), weights):
            p.copy_(w)
    ckpt.save(folder, out, config, fp16=fp16)


def warm_start_record(folder: str) -> dict:
    """What a warm start began from, for the new checkpoint's config.json: the source's path as
    given, its weights' sha256, images seen, command and (recursively) its own warm start, so a
    multi-stage recipe stays reproducible from the last checkpoint alone."""
    src = ckpt.resolve_folder(folder)
    try:
        cfg = ckpt.read_config(src, format=None)
    except ckpt.CheckpointError:  # weights without a readable config still warm-start; record what is known
        cfg = {}
    rec = {"from": folder, "weights_sha256": ckpt.file_sha256(os.path.join(src, ckpt.WEIGHTS_NAME)),
           "images_seen": cfg.get("images_seen"), "command": cfg.get("command"),
           "dataset_command": (cfg.get("dataset") or {}).get("command")}
    if cfg.get("warm_start"):
        rec["warm_start"] = cfg["warm_start"]
    return rec


def warm_start(net: torch.nn.Module, folder: str, renormalize: bool, log: Callable[[str], None]) -> None:
    """Copy a checkpoint's weights into `net` where names and shapes match.

    A parameter whose input width grew (a label embedding with one more label, e.g. the
    'empty' scene added to a location net) keeps the old columns; the new ones keep their
    fresh initialisation (forced weight normalisation re-normalises each output row when
    `renormalize`). Every rank loads the same file, so DDP replicas start identical.
    """
    src, _ = ckpt.read_safetensors(os.path.join(ckpt.resolve_folder(folder), ckpt.WEIGHTS_NAME))
    copied, widened = 0, []
    with torch.no_grad():
        for name, p in net.named_parameters():
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
        if renormalize:
            normalize_weights_(net)
    if copied == 0 and not widened:
        raise TrainError(f"--init-from {folder}: no parameter matches this network")
    log(f"initialised from {folder}: {copied} tensors copied, {len(widened)} widened ({', '.join(widened)})")
