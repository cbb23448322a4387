"""Training configuration: one table of typed fields, the presets, and the command line built from them.

A config is a plain dict (it is written into every training state and checkpoint as JSON):
`DEFAULTS` <- `PRESETS[preset]` <- overrides, validated by `resolve_config`. Sizes are in images
(EDM2 convention: schedules independent of the batch size); `t_ref` is in updates, as the paper
states it. Every field is also a command-line option of `python -m projcomp.train`
(`model_channels` -> `--model-channels`), with its type, default and help taken from `FIELDS`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import re
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ProjcompError
from ..nn.conditions import ENCODINGS

__all__ = ["TrainError", "Field", "FIELDS", "DEFAULTS", "PRESETS", "IMAGE_KEYS", "RESUME_SAFE_KEYS", "RESUME_END_KEYS",
           "parse_nimg", "resolve_config", "network_kwargs", "build_parser"]


class TrainError(ProjcompError, ValueError):
    """A bad training option, dataset or output directory; the message names it."""

#----------------------------------------------------------------------------
# Value parsers for command-line text. They raise ValueError with a short reason; the CLI and
# resolve_config prefix the option's name.

def _nimg(text: Any) -> int:
    """'2Mi' -> 2097152, '500k' -> 500000, '128Ki', '1.5M', 4096 -> image counts."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(Ki|Mi|Gi|k|K|M|G)?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not an image count (e.g. 4096, 500k, 128Ki, 2Mi)")
    mult = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]
    v = float(m.group(1)) * mult
    if v != int(v):
        raise ValueError(f"{text!r} is not a whole number of images")
    return int(v)


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _list(text: str) -> list:
    """'1,2,2' or '[1, 2, 2]' -> [1, 2, 2]; '0.05,0.1' -> [0.05, 0.1]; '' / 'none' / '[]' -> []."""
    t = text.strip()
    if t.lower() in ("", "none", "[]"):
        return []
    try:
        return list(json.loads(t) if t.startswith("[") else [json.loads(x) for x in t.split(",")])
    except json.JSONDecodeError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None


def _str(text: str) -> str:
    return text


def parse_nimg(s: Any, key: str = "value") -> int:
    """An image count ('2Mi', '500k', '128Ki', '1.5M', 4096); errors name `--key`."""
    try:
        return _nimg(s)
    except ValueError as e:
        raise TrainError(f"--{key.replace('_', '-')}: {e}") from None

#----------------------------------------------------------------------------
# The table. Order = the order of the config dict (and of --help).

@dataclasses.dataclass(frozen=True)
class Field:
    name: str                            # Config key; the option is --name-with-dashes.
    default: Any                         # Value when neither the preset nor the command line sets it.
    parse: Callable[[str], Any]          # Command-line text -> value (raises ValueError).
    help: str                            # One line for --help.
    choices: tuple = ()                  # Allowed values, if a closed set.

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_F = Field
_GROUPS: dict[str, list[Field]] = {
    "network (projcomp.nn.Precond / UNet / Block)": [
        _F("resolution", 64, _int, "image resolution; must match the dataset"),
        _F("model_channels", 128, _int, "base width of the U-Net"),
        _F("channel_mult", [1, 2, 3, 4], _list, "width multiplier per level, e.g. 1,2,3,4"),
        _F("num_blocks", 3, _int, "encoder blocks per level (decoder: one more)"),
        _F("attn_resolutions", [16, 8], _list, "resolutions with self-attention, e.g. 16,8"),
        _F("channels_per_head", 64, _int, "attention head width"),
        _F("dropout", 0.0, _float, "dropout probability in the residual branches"),
        _F("label_balance", 0.5, _float, "noise vs label embedding balance (EDM2 mp_sum)"),
        _F("concat_balance", 0.5, _float, "main path vs skip connection balance (EDM2 mp_cat)"),
        _F("logvar_channels", 128, _int, "Fourier features of the learned-uncertainty head"),
        _F("sigma_data", 0.5, _float, "EDM sigma_data"),
    ],
    "loss (EDM2 Eq. 21, learned uncertainty) and label dropout": [
        _F("P_mean", -0.8, _float, "mean of ln(sigma) during training"),
        _F("P_std", 1.6, _float, "std of ln(sigma) during training"),
        _F("label_dropout", 0.0, _float, "probability of replacing a label by the null (zeros) label"),
        _F("color_dropout", 0.0, _float,
           "colour-per-object labels: probability of dropping the colour (-> any object at xy)"),
        _F("location_dropout", 0.0, _float,
           "... else probability of dropping the place (-> an object of colour c anywhere)"),
        _F("place_weight", 0.0, _float,
           "location labels: per-pixel loss weight 1 + w * bump around the labelled place, normalised "
           "to mean 1 per image; a function of the label only, so the optimum D is unchanged; 0 = uniform"),
        _F("place_weight_sigma", 2 / 32, _float, "width of that bump, in image widths (2 px at 32 x 32)"),
    ],
    "condition encoding (projcomp.nn.conditions; docs/design.md)": [
        _F("cond_encoding", "global", _str,
           "how a location label reaches the net: 'global' (label embedding only), 'map' (also a "
           "bump map as an input channel), 'map-color' (the bump also in one channel per colour) or "
           "'map-only' (the map, and the global embedding no longer hears (x, y)) or 'map-local' (place "
           "and colour only as maps; a placed label's global embedding is the empty scene's)",
           choices=ENCODINGS),
        _F("map_sigma", 1.5 / 32, _float, "width of the map's bump, in image widths (1.5 px at 32 x 32)"),
        _F("color_only_map", False, _bool,
           "with colour maps: a colour-only label (an object of colour c anywhere) also sets its colour's "
           "channel to 1 over the whole image (default: it reaches the net only by its global embedding)"),
    ],
    "optimisation": [
        _F("batch", 2048, _int, "global batch (images per update)"),
        _F("batch_gpu", 0, _int, "micro-batch per process (images); 0 = the whole per-process batch"),
        _F("duration", "128Mi", _nimg, "training length in images (4096, 500k, 128Ki, 2Mi, ...)"),
        _F("lr", 0.012, _float, "reference learning rate alpha_ref"),
        _F("t_ref", 35000, _int, "inverse-sqrt decay starts after t_ref updates (EDM2 Eq. 67)"),
        _F("rampup", "10Mi", _nimg, "linear learning-rate warm-up in images; 0 = none"),
        _F("beta1", 0.9, _float, "Adam beta1"),
        _F("beta2", 0.99, _float, "Adam beta2"),
        _F("eps", 1e-8, _float, "Adam epsilon"),
        _F("force_wn", "after", _str,
           "forced weight normalisation 'after' the update (the paper, App. L) or 'before' it (EDM2)",
           choices=("after", "before")),
        _F("avg_last", 4096, _int, "final weights = mean of the last N updates (the paper); 0 = last weights"),
        _F("ema_stds", [], _list, "optional power-function EMA profiles (EDM2), e.g. 0.05,0.1"),
        _F("bf16", False, _bool, "bfloat16 autocast for the network"),
        _F("seed", 0, _int, "seed of the initial weights, data order, noise and dropout"),
    ],
    "input / output": [
        _F("status_every", "128Ki", _nimg, "a stats line (stats.jsonl) every N images"),
        _F("state_every", "8Mi", _nimg, "training state + snapshot checkpoint every N images"),
        _F("keep_states", 2, _int, "training states kept on disk"),
        _F("save_fp16", False, _bool, "store checkpoint weights as float16"),
        _F("num_threads", 0, _int, "torch CPU threads per process; 0 = torch's default"),
        _F("init_from", "", _str, "warm start from this checkpoint folder (fresh runs only)"),
    ],
}
del _F

FIELDS: dict[str, Field] = {f.name: f for group in _GROUPS.values() for f in group}
DEFAULTS: dict[str, Any] = {name: f.default for name, f in FIELDS.items()}

IMAGE_KEYS = tuple(name for name, f in FIELDS.items() if f.parse is _nimg)  # duration, rampup, status/state_every
# Keys that may change between a run and its resumption without breaking bit-exactness.
# (batch_gpu changes only the float summation order: safe, but then not bit-identical; EDM2 README.)
RESUME_SAFE_KEYS = {"status_every", "state_every", "keep_states", "save_fp16", "num_threads", "batch_gpu"}
# Keys that fix only where the run ENDS (its length and the averaging window before the end): a
# state may resume under new values while averaging has not yet begun under either, and the result
# is then bit-identical to a run started with the new values (the lr schedule, data order and
# noise do not depend on them). This is how a run is shortened or lengthened midway.
RESUME_END_KEYS = {"duration", "avg_last"}

#----------------------------------------------------------------------------
# Presets. Each is a partial config over DEFAULTS; smaller ones are written as changes to a
# larger one so that what differs is what is written.

_PAPER_SCHEDULE = dict(dropout=0.0, P_mean=-0.8, P_std=1.6, force_wn="after")
_CPU32_NET = dict(resolution=32, model_channels=32, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8])

PRESETS: dict[str, dict] = {}

# Exactly the paper (App. L): edm2-img64-xs (channels 128, mult [1,2,3,4], 3 blocks, attention
# at 16 and 8) at 128x128 -- the four levels are 128, 64, 32, 16, so the "8" entry has no
# level to act on, as when EDM2's config is used at 128 px. Batch 2048, 128 Mi images,
# lr 0.012, t_ref 35000, EDM2's 10 Mi warm-up, P_mean -0.8, P_std 1.6, dropout 0, weight
# renormalisation after the update, average of the last 4096 updates, no post-hoc EMA.
# 32 A100s in the paper: e.g. torchrun --nproc_per_node 8 (x4 nodes), batch_gpu 64.
PRESETS["paper-xs"] = dict(
    resolution=128, model_channels=128, channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[16, 8],
    **_PAPER_SCHEDULE, batch=2048, batch_gpu=64, duration="128Mi", lr=0.012, t_ref=35000, rampup="10Mi",
    avg_last=4096, ema_stds=[], bf16=True, label_dropout=0.0, status_every="128Ki", state_every="8Mi",
)
# One GPU, 64x64: the same layout at half the width (~31 M params); batch 256, 64 Mi images
# (~260k updates). t_ref scaled so decay starts after a similar fraction (~0.5) of the images
# the paper spends before it (35000 x 2048 = 72 Mi of 128 Mi). avg over the last 4096 updates.
PRESETS["gpu-64"] = {**PRESETS["paper-xs"], **dict(
    resolution=64, model_channels=64, batch=256, batch_gpu=256, duration="64Mi", lr=0.01, t_ref=70000,
    rampup="2Mi", label_dropout=0.1, status_every="256Ki", state_every="2Mi",
)}
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
#  Speed (bench_train.py, 2 idle cores): ~40 img/s fp32 on an AVX-512 Xeon (~60 with --bf16 where
#  the CPU has native bf16), ~20 img/s fp32 on an AVX2-only CPU (bf16 emulated: slower). On a
#  machine shared with other jobs pass --num-threads 1: two OpenMP threads on oversubscribed
#  cores can be >10x slower than one.
PRESETS["cpu-32"] = dict(
    **_CPU32_NET, **_PAPER_SCHEDULE, batch=64, batch_gpu=64, duration="1Mi", lr=0.008, t_ref=8000,
    rampup="64Ki", avg_last=2048, bf16=False, label_dropout=0.1, status_every="8Ki", state_every="32Ki",
    num_threads=0,
)
# One GPU, 32x32: the cpu-32 network (so the result samples as fast on a CPU) trained ~10x
# longer. A 1.7 M-param net is launch-bound on a GPU: batch 256 ran at 2.6k img/s on an
# H100, batch 1024 at 4k img/s per process with three processes sharing the card, so batch
# 1024 at lr 0.01; decay after t_ref 1000 updates (1 Mi images); 256 Ki warm-up; average of
# the last 256 updates (256 Ki images, 1/6 of the run). bf16 autocast.
PRESETS["gpu-32"] = {**PRESETS["cpu-32"], **dict(
    batch=1024, batch_gpu=1024, duration="1536Ki", lr=0.01, t_ref=1000, rampup="256Ki", avg_last=256,
    bf16=True, status_every="128Ki", state_every="512Ki", num_threads=4,
)}
# One GPU, 64x64, compact (~5 M params, a 64 px level in front of cpu-32's layout): what a
# few GPU-minutes can train; attention at 16 and 8, where 64 px CLEVR objects (6-12 px) and
# their layout live. Same schedule as gpu-32.
PRESETS["gpu-64-small"] = {**PRESETS["gpu-32"], **dict(
    resolution=64, channel_mult=[1, 2, 2, 4], attn_resolutions=[16, 8], duration="1Mi",
)}
# Two CPU cores, 32x32, the cpu-32 network with the location as a MAP (one input channel, a
# bump of 1.5 px at the requested place, beside the global embedding) and a colour per object
# (dataset preset object-empty). Measured before choosing (docs/clevr-models.md): the map
# places objects at 1/24 of the images the global embedding needs. Batch 32 (twice the updates
# per image of cpu-32), lr 0.006, decay after 2048 updates (64 Ki images), average of the last
# 1024 updates (32 Ki images). Part dropout so one net gives every conditional the app uses:
# null 10 %, then colour dropped 40 % (any object at xy), else place dropped 25 % (colour c
# anywhere, Fig 5). One thread: the machine's other core serves sampling and tests.
PRESETS["cpu-32-map"] = {**PRESETS["cpu-32"], **dict(
    batch=32, batch_gpu=32, duration="128Ki", lr=0.006, t_ref=2048, rampup="16Ki", avg_last=1024,
    color_dropout=0.4, location_dropout=0.25, cond_encoding="map", map_sigma=1.5 / 32,
    status_every="4Ki", state_every="8Ki", num_threads=1,
)}
# One GPU, 32x32: the cpu-32-map net and conditions at a GPU's batch. Batch 256 (a 1.7 M-param
# net is launch-bound on a GPU: larger batches cost little more per update), lr 0.008, decay after
# 512 updates (128 Ki images), 32 Ki warm-up, 512 Ki images = 2048 updates, average of the last
# 512 updates (128 Ki images). Several such runs share one card (scripts/gpu_map_runs.sh).
PRESETS["gpu-32-map"] = {**PRESETS["cpu-32-map"], **dict(
    batch=256, batch_gpu=256, duration="512Ki", lr=0.008, t_ref=512, rampup="32Ki", avg_last=512,
    status_every="32Ki", state_every="64Ki", num_threads=2,
)}
# One GPU, 64x64: the same with gpu-64-small's layout (a 64 px level in front, attention at 16
# and 8; ~5 M params), batch 128, 256 Ki images = 2048 updates, average of the last 512.
PRESETS["gpu-64-map"] = {**PRESETS["gpu-32-map"], **dict(
    resolution=64, channel_mult=[1, 2, 2, 4], attn_resolutions=[16, 8], batch=128, batch_gpu=128,
    duration="256Ki", t_ref=1024,
)}
# Tests: seconds on one core.
PRESETS["tiny"] = dict(
    resolution=16, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
    channels_per_head=16, logvar_channels=16, **_PAPER_SCHEDULE, batch=16, batch_gpu=16, duration="2Ki",
    lr=0.02, t_ref=1000, rampup=256, avg_last=16, bf16=False, label_dropout=0.1, status_every=128,
    state_every=256, keep_states=2, num_threads=1,
)

#----------------------------------------------------------------------------

def resolve_config(preset: str, overrides: Optional[dict] = None) -> dict:
    """DEFAULTS <- PRESETS[preset] <- overrides, validated; sizes converted to image counts.

    An override may be a value or command-line text (parsed by its field); None = not given.
    """
    if preset not in PRESETS:
        raise TrainError(f"--preset {preset!r}: expected one of {sorted(PRESETS)}")
    cfg = dict(DEFAULTS)
    cfg.update(copy.deepcopy(PRESETS[preset]))
    for k, v in (overrides or {}).items():
        if k not in FIELDS:
            raise TrainError(f"unknown option {k!r}")
        if v is None:
            continue
        if isinstance(v, str) and FIELDS[k].parse is not _str:
            try:
                v = FIELDS[k].parse(v)
            except ValueError as e:
                raise TrainError(f"{FIELDS[k].flag}: {e}") from None
        cfg[k] = v
    cfg["preset"] = preset
    for k in IMAGE_KEYS:
        cfg[k] = parse_nimg(cfg[k], k)
    if cfg["batch_gpu"] == 0:
        cfg["batch_gpu"] = cfg["batch"]
    _validate(cfg)
    return cfg


def _validate(cfg: dict) -> None:
    """One message per bad field, naming its option."""
    for f in FIELDS.values():
        if f.choices and cfg[f.name] not in f.choices:
            raise TrainError(f"{f.flag} {cfg[f.name]!r}: expected one of {', '.join(map(repr, f.choices))}")
    if cfg["batch"] <= 0 or cfg["batch_gpu"] <= 0:
        raise TrainError(f"--batch {cfg['batch']} / --batch-gpu {cfg['batch_gpu']}: must be positive")
    if cfg["duration"] <= 0 or cfg["duration"] % cfg["batch"] != 0:
        raise TrainError(f"--duration {cfg['duration']}: must be a positive multiple of --batch {cfg['batch']}")
    for k in ("label_dropout", "color_dropout", "location_dropout"):
        if not 0 <= cfg[k] < 1:
            raise TrainError(f"{FIELDS[k].flag} {cfg[k]}: must be in [0, 1)")
    for k in ("map_sigma", "place_weight_sigma"):
        if not (math.isfinite(cfg[k]) and cfg[k] > 0):
            raise TrainError(f"{FIELDS[k].flag} {cfg[k]}: must be a positive width in image units")
    if not (math.isfinite(cfg["place_weight"]) and cfg["place_weight"] >= 0):
        raise TrainError(f"--place-weight {cfg['place_weight']}: must be >= 0")
    if cfg["avg_last"] < 0:
        raise TrainError(f"--avg-last {cfg['avg_last']}: must be >= 0")
    for k in ("status_every", "state_every"):
        if cfg[k] <= 0:
            raise TrainError(f"{FIELDS[k].flag} {cfg[k]}: must be positive")
    for s in cfg["ema_stds"]:
        if not 0 < float(s) < 0.28:
            raise TrainError(f"--ema-stds {s}: a power-function EMA std must lie in (0, 0.28)")
    if cfg["resolution"] % (2 ** (len(cfg["channel_mult"]) - 1)) != 0:
        raise TrainError(f"--resolution {cfg['resolution']}: not divisible by 2^(levels-1) for channel_mult {cfg['channel_mult']}")


def network_kwargs(cfg: dict, label_dim: int, condition: Optional[dict]) -> dict:
    """The projcomp.nn.Precond constructor arguments of a resolved config."""
    return dict(
        img_resolution=cfg["resolution"], img_channels=3, label_dim=label_dim, condition=condition,
        sigma_data=cfg["sigma_data"], logvar_channels=cfg["logvar_channels"],
        model_channels=cfg["model_channels"], channel_mult=list(cfg["channel_mult"]), num_blocks=cfg["num_blocks"],
        attn_resolutions=list(cfg["attn_resolutions"]), label_balance=cfg["label_balance"],
        concat_balance=cfg["concat_balance"], channels_per_head=cfg["channels_per_head"], dropout=cfg["dropout"],
    )

#----------------------------------------------------------------------------
# Command line: the run options, then one option per field (None = not given: the preset's value).

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line `error: --option: why`, exit code 2, like every projcomp CLI (raised to main).
        raise TrainError(re.sub(r"^argument (\S+?)(/\S+)?: ", r"\1: ", message))


def _cli_type(f: Field) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return f.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = f.name
    return parse


def build_parser(prog: str = "python -m projcomp.train", description: str = "") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Field defaults are shown as 'default'; the preset's values replace them, the "
                       "options given replace both. --dry-run prints the result.")
    run = p.add_argument_group("run")
    run.add_argument("--preset", default="cpu-32", help=f"one of {', '.join(PRESETS)} (default: cpu-32)")
    run.add_argument("--data", help="dataset zip written by `python -m projcomp.clevr make`; recorded as given + sha256")
    run.add_argument("--outdir", help="run directory (re-running the same command resumes)")
    run.add_argument("--dry-run", "-n", action="store_true", help="print the resolved config as JSON and exit")
    run.add_argument("--push-to-hub", metavar="REPO", help="upload the final checkpoint to this Hub repo")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    for title, fields in _GROUPS.items():
        g = p.add_argument_group(title)
        for f in fields:
            default = f.default if not isinstance(f.default, list) else ",".join(map(str, f.default)) or "none"
            help_ = f"{f.help} (default: {default})"
            if f.parse is _bool:
                g.add_argument(f.flag, dest=f.name, type=_cli_type(f), nargs="?", const=True, default=None,
                               metavar="BOOL", help=help_ + "; the bare flag means true")
            else:
                metavar = "{" + ",".join(f.choices) + "}" if f.choices else {
                    _int: "INT", _float: "FLOAT", _nimg: "IMAGES", _list: "LIST", _str: "STR"}[f.parse]
                g.add_argument(f.flag, dest=f.name, type=_cli_type(f), default=None, metavar=metavar, help=help_)
    return p
