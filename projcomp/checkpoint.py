"""Checkpoints: a folder with `config.json` + `model.safetensors` (never pickles), loaded back as
a denoiser that implements the projcomp protocol D(x, sigma, cond) (docs/design.md).

`load` accepts a local folder (or a file inside it) or a Hugging Face Hub repo id, resolved
with `huggingface_hub.snapshot_download`; `push_to_hub` uploads a folder with `upload_folder`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

import torch

from .errors import ProjcompError
from .files import atomic_write_bytes, atomic_write_json, file_sha256  # noqa: F401  (re-exported)
from .nn import Precond

__all__ = ["CheckpointError", "save", "load", "push_to_hub", "save_folder", "read_config", "read_safetensors",
           "resolve_folder", "atomic_write_bytes", "atomic_write_json", "atomic_save_safetensors", "file_sha256",
           "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "projcomp-edm2"
VERSION = 1


class CheckpointError(ProjcompError, ValueError):
    """A checkpoint (or training state) that cannot be used; the message names the file."""

#----------------------------------------------------------------------------
# The folder layout: weights first, then the config, each written atomically (projcomp.files),
# so a config.json always describes complete weights.

def atomic_save_safetensors(path: str, tensors: dict, metadata: Optional[dict] = None) -> None:
    from safetensors.torch import save as st_save
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def save_folder(folder: str, tensors: dict, config: dict) -> str:
    """Write `folder/model.safetensors` then `folder/config.json`: the layout of every projcomp
    checkpoint (the EDM2 denoisers here, the CLEVR centre-net detector in clevr/centernet.py)."""
    os.makedirs(folder, exist_ok=True)
    meta = {"format": str(config["format"])} if "format" in config else None
    atomic_save_safetensors(os.path.join(folder, WEIGHTS_NAME), tensors, metadata=meta)
    atomic_write_json(os.path.join(folder, CONFIG_NAME), config)
    return folder

#----------------------------------------------------------------------------

def save(folder: str, net: Precond, config: Optional[dict] = None, fp16: bool = False) -> str:
    """Write `folder/config.json` and `folder/model.safetensors` for `net` (a Precond).

    `config` adds provenance (dataset meta, images seen, averaging, training command, ...);
    the network kwargs and the condition schema always come from `net` itself. fp16=True
    stores the weights in float16 (half the size; they are loaded back as float32).
    """
    if not isinstance(net, Precond):
        raise TypeError(f"save() expects a projcomp.nn.Precond, got {type(net).__name__}")
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: v.detach().to(dtype) if v.is_floating_point() else v.detach()
               for k, v in net.state_dict().items()}
    cfg = {
        "format": FORMAT,
        "version": VERSION,
        "network": {"class": "projcomp.nn.Precond", "kwargs": net.init_kwargs},
        "condition": net.condition,
        "label_dim": net.label_dim,
        "image_shape": list(net.image_shape),
        "dtype": str(dtype).replace("torch.", ""),
        "num_parameters": sum(p.numel() for p in net.parameters()),
    }
    for k, v in (config or {}).items():
        if k not in cfg:
            cfg[k] = v
    return save_folder(folder, tensors, cfg)

#----------------------------------------------------------------------------

def resolve_folder(path_or_repo_id: str, revision: Optional[str] = None) -> str:
    """The local folder of a checkpoint: a folder, a file in one, or a Hub repo id (downloaded)."""
    p = os.fspath(path_or_repo_id)
    if os.path.isfile(p):
        return os.path.dirname(os.path.abspath(p))
    if os.path.isdir(p):
        return p
    looks_like_repo = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", p) is not None
    if not looks_like_repo:
        raise CheckpointError(f"{p}: no such checkpoint folder")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(repo_id=p, revision=revision,
                                 allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"])
    except Exception as e:  # offline, missing repo, bad revision, ...
        raise CheckpointError(f"{p}: not a local folder and could not be downloaded from the Hub "
                              f"(revision={revision!r}): {type(e).__name__}: {e}") from None


def read_config(folder: str, format: Optional[str] = FORMAT) -> dict:
    """The folder's config.json; checked to be a projcomp denoiser config unless format=None."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing (a checkpoint folder needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    if format is not None and (cfg.get("format") != format or "network" not in cfg):
        raise CheckpointError(f"{path}: not a projcomp checkpoint config (expected \"format\": \"{FORMAT}\")")
    return cfg


def read_safetensors(path: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a .safetensors file; a clear CheckpointError if it is not one."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing")
    try:
        from safetensors import safe_open
        tensors = {}
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # SafetensorError, OSError, header parse errors, ...
        raise CheckpointError(f"{path}: not a readable .safetensors file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    return tensors, meta


def set_inference_layout(net: torch.nn.Module, channels_last: Optional[bool] = None) -> torch.nn.Module:
    """Store the convolution weights NHWC (channels_last=True), so that oneDNN keeps activations NHWC
    and skips a layout reorder around every convolution; None = only when the net lives on the CPU
    (1.14-1.50x per fp32 sample there for the shipped 32x32 nets, benchmarks/bench_sample.py). Outputs
    match the default layout to float rounding (~1e-6), not bit for bit."""
    if channels_last is None:
        channels_last = next(net.parameters()).device.type == "cpu"
    if channels_last:
        net.to(memory_format=torch.channels_last)
    return net


def load(path_or_repo_id: str, revision: Optional[str] = None, dtype: Optional[torch.dtype] = None,
         device: Optional[str | torch.device] = None, channels_last: Optional[bool] = None) -> Precond:
    """Load a checkpoint folder (or Hub repo id) as an eval-mode denoiser.

    `channels_last`: the weight layout, see `set_inference_layout` (None = NHWC on the CPU).

    The result implements the projcomp protocol: `D(x, sigma, cond)`, `label_dim`,
    `encode_cond(value)`, `image_shape` and `config` (the parsed config.json).
    """
    folder = resolve_folder(path_or_repo_id, revision)
    cfg = read_config(folder)
    cfg_path = os.path.join(folder, CONFIG_NAME)
    weights_path = os.path.join(folder, WEIGHTS_NAME)
    kwargs = cfg["network"].get("kwargs")
    try:
        net = Precond(**kwargs)
    except Exception as e:
        raise CheckpointError(f"{cfg_path}: network kwargs are invalid: {type(e).__name__}: {e}") from None
    tensors, meta = read_safetensors(weights_path)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: weights do not match {cfg_path} ({len(missing)} missing, {len(unexpected)} unexpected; "
            f"e.g. missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{weights_path}: tensor {k!r} has shape {tuple(tensors[k].shape)} but "
                                  f"{cfg_path} implies {tuple(v.shape)}")
    net.load_state_dict({k: t.to(expected[k].dtype) for k, t in tensors.items()})
    if dtype is not None:
        net.to(dtype=dtype)
    if device is not None:
        net.to(device=device)
    set_inference_layout(net, channels_last)
    net.eval().requires_grad_(False)
    net.config = cfg
    return net

#----------------------------------------------------------------------------

def push_to_hub(folder: str, repo_id: str, private: bool = False, token: Optional[str] = None,
                commit_message: str = "Upload projcomp checkpoint") -> str:
    """Upload a checkpoint folder to the Hub with huggingface_hub (creates the repo if needed)."""
    read_config(folder)  # refuse to upload something that is not a checkpoint
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    readme = os.path.join(folder, "README.md")
    if not os.path.exists(readme):
        cfg = read_config(folder)
        atomic_write_bytes(readme, (
            "---\nlibrary_name: projcomp\ntags: [diffusion, edm2, projective-composition]\n---\n"
            f"# {repo_id}\n\nEDM2-style denoiser trained with `projcomp` (Bradley et al., ICML 2025 reproduction).\n\n"
            f"```python\nimport projcomp\nnet = projcomp.load({repo_id!r})\n```\n\n"
            f"Condition: `{json.dumps(cfg.get('condition'))}`; image shape {cfg.get('image_shape')}; "
            f"images seen: {cfg.get('images_seen')}.\n").encode())
    info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message,
                             allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"])
    return str(getattr(info, "commit_url", info))
