"""Prompt composition over diffusers' Stable Diffusion XL components (paper §6.3, Figs 1 and 7).

The composition operator of Def 5.1 in ε-space,

    ε_comp = ε_b + Σ_i w_i (ε_i − ε_b),

is the same linear form as classifier-free guidance (CFG is the k = 1 case with w = guidance
scale and background = the negative prompt), so `compose` below reuses the pipeline's own pieces
(`encode_prompt`, `prepare_latents`, `retrieve_timesteps`,
`scheduler.scale_model_input` / `step`, VAE decoding with fp16 upcast) and replaces only the line
that combines the noise predictions -- with `projcomp.compose.combine`, the same Def 5.1 the CLEVR
models use. Because the score is affine in ε, combining ε, x̂₀ or scores gives identical results
(docs/design.md).

- **Background** (the paper's "most critical choice"): `None` = SDXL's "force zeros"
  unconditional (zero prompt and pooled embeddings), `""` = the encoded empty prompt (Fig 7 uses
  composition over an unconditional background), or any prompt ("a photo").
- **Terms**: any number of prompts, each with a weight (negative allowed; w_i = 1 is the paper's
  operator) and optionally its own LoRA (e.g. Fig 1's fine-tuned dog), loaded through diffusers'
  adapter API. The background always runs on the base weights.
- **One UNet call per step** over the (k+1) terms × batch rows, grouped by adapter (rows with
  different adapters cannot share a call) and chunked to at most `max_batch` rows per call.
- **Seeds**: one `torch.Generator` (CPU) per seed, so image *s* is the same alone or in a batch.
- **Schedulers**: any diffusers scheduler; second-order ones (Heun) repeat timesteps, and the loop
  simply evaluates the composed ε at every entry of `scheduler.timesteps`.

`python -m projcomp.sdxl --prompt "photo of a dog" --prompt "photo, with red hat" --weights 1 1
--background "" --steps 30 --seeds 0 1 2 --model stabilityai/stable-diffusion-xl-base-1.0
--outdir out/dog_hat --heuristic` writes one PNG per seed, `spec.json` beside them and, with
`--heuristic`, the Lemma 8.1 cosine matrix (`heuristic.json`, `heuristic.png`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
from typing import Callable, Optional, Sequence

import torch

from .compose import CompositionError, combine  # noqa: F401  (combine: Def 5.1, shared with CLEVR)

__all__ = [
    "ALLOWED_MODELS", "SCHEDULERS", "SDXLSpecError", "SDXLSpec", "SDXLResult", "ComposeSpec", "ComposeResult", "load_pipeline",
    "make_scheduler", "compose", "encode_terms", "term_predictions", "prompt_heuristic", "image_heuristic",
    "main",
]

# Hub ids `--model` accepts (anything else must be a local folder). All are SDXL-architecture
# checkpoints served by diffusers' StableDiffusionXLPipeline; the value says whether the repo has
# an "fp16" weight variant (halves the download on GPU).
ALLOWED_MODELS = {
    "stabilityai/stable-diffusion-xl-base-1.0": {"fp16_variant": True},   # the paper's model (§6.3)
    "stabilityai/sdxl-turbo": {"fp16_variant": True},                     # distilled, 1-4 steps
    "segmind/SSD-1B": {"fp16_variant": True},                             # distilled SDXL, 50% smaller
    "segmind/Segmind-Vega": {"fp16_variant": True},                       # distilled SDXL, 70% smaller
}

# --scheduler name -> (diffusers class name, extra config). "default" keeps the model's own.
SCHEDULERS = {
    "default": (None, {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),                                   # order 2: repeats timesteps
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}

SPEC_VERSION = 1


class SDXLSpecError(CompositionError):  # -> ProjcompError, ValueError
    """A malformed SDXL composition request; `field` names the offending option."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ModelNotAllowedError(SDXLSpecError):
    """`model` is neither an existing local folder nor in ALLOWED_MODELS."""


# ---------------------------------------------------------------------------------------------
# Spec.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SDXLSpec:
    prompts: list                                   # [str] p_1..p_k, one prompt per concept.
    weights: Optional[list] = None                  # [float] w_i of Def 5.1 (None -> all 1.0); negative allowed.
    background: Optional[str] = ""                 # p_b: a prompt ("" = empty prompt) or None = force-zeros embedding.
    steps: int = 30                                 # num_inference_steps passed to scheduler.set_timesteps.
    seeds: list = dataclasses.field(default_factory=lambda: [0])  # One image per seed (one generator each).
    model: str = "stabilityai/stable-diffusion-xl-base-1.0"       # Hub id (ALLOWED_MODELS) or local folder.
    scheduler: str = "default"                      # Key of SCHEDULERS.
    height: Optional[int] = None                    # Pixels; None -> unet.sample_size * vae_scale_factor.
    width: Optional[int] = None                     # Pixels; None -> as height.
    loras: Optional[list] = None                    # [str | None] per prompt: LoRA folder/file/repo for that term.
    lora_scales: Optional[list] = None              # [float] per prompt (None -> 1.0).
    max_batch: Optional[int] = None                 # Max UNet rows per call (memory cap); None = all in one call.
    eta: float = 0.0                                # DDIM eta (ignored by schedulers without it).

    def validate(self) -> "SDXLSpec":
        """Check every field; raises SDXLSpecError naming the first bad one. Returns self."""
        if isinstance(self.prompts, str) or not isinstance(self.prompts, (list, tuple)) or len(self.prompts) == 0:
            raise SDXLSpecError("prompts", f"a composition needs at least one prompt, got {self.prompts!r}")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str):
                raise SDXLSpecError("prompts", f"prompt {i} is not a string: {p!r}")
        k = len(self.prompts)
        if self.weights is None:
            self.weights = [1.0] * k
        if not isinstance(self.weights, (list, tuple)) or len(self.weights) != k:
            n = len(self.weights) if isinstance(self.weights, (list, tuple)) else self.weights
            raise SDXLSpecError("weights", f"got {n} weight(s) for {k} prompt(s)")
        for w in self.weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
                raise SDXLSpecError("weights", f"{w!r} is not a finite number")
        self.weights = [float(w) for w in self.weights]
        if self.background is not None and not isinstance(self.background, str):
            raise SDXLSpecError("background", f"expected a prompt string or null (zeros), got {self.background!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SDXLSpecError("steps", f"expected a positive integer, got {self.steps!r}")
        if not isinstance(self.seeds, (list, tuple)) or len(self.seeds) == 0:
            raise SDXLSpecError("seeds", f"expected a non-empty list of integers, got {self.seeds!r}")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 63:
                raise SDXLSpecError("seeds", f"{s!r} is not a non-negative integer")
        self.seeds = list(self.seeds)
        if not isinstance(self.model, str) or not self.model:
            raise SDXLSpecError("model", f"expected a Hub id or a local folder, got {self.model!r}")
        if self.scheduler not in SCHEDULERS:
            raise SDXLSpecError("scheduler", f"{self.scheduler!r} is not one of {sorted(SCHEDULERS)}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8):
                raise SDXLSpecError(name, f"expected a positive multiple of 8, got {v!r}")
        if self.loras is not None:
            if not isinstance(self.loras, (list, tuple)) or len(self.loras) != k:
                raise SDXLSpecError("loras", f"expected one entry (path or null) per prompt ({k}), got {self.loras!r}")
            for lo in self.loras:
                if lo is not None and (not isinstance(lo, str) or not lo):
                    raise SDXLSpecError("loras", f"{lo!r} is not a LoRA path/id or null")
        if self.lora_scales is not None:
            if not isinstance(self.lora_scales, (list, tuple)) or len(self.lora_scales) != k:
                raise SDXLSpecError("lora_scales", f"expected one scale per prompt ({k}), got {self.lora_scales!r}")
            for s in self.lora_scales:
                if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(float(s)):
                    raise SDXLSpecError("lora_scales", f"{s!r} is not a finite number")
        if self.max_batch is not None and (isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int)
                                           or self.max_batch < 1):
            raise SDXLSpecError("max_batch", f"expected a positive integer or null, got {self.max_batch!r}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not math.isfinite(float(self.eta)):
            raise SDXLSpecError("eta", f"{self.eta!r} is not a finite number")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SDXLSpec":
        if not isinstance(d, dict):
            raise SDXLSpecError("spec", f"expected a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in ("version", "outputs", "heuristic", "command", "device", "dtype")}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SDXLSpecError("spec", f"unknown key(s) {unknown}")
        if "prompts" not in d:
            raise SDXLSpecError("prompts", "missing")
        return cls(**d).validate()


@dataclasses.dataclass
class SDXLResult:
    images: list                # [PIL.Image] one per seed (None when output_type="latent").
    latents: torch.Tensor       # Final latents [B, 4, h, w] (before VAE decoding).
    spec: SDXLSpec           # The validated spec (resolved height/width/weights).
    num_unet_calls: int         # UNet forward calls made (after grouping/chunking).
    num_unet_rows: int          # Total rows evaluated = (k+1) x batch x len(scheduler.timesteps).


# Old names (before the SDXL spec was told apart from projcomp.spec.CompositionSpec).
ComposeSpec = SDXLSpec
ComposeResult = SDXLResult


# ---------------------------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------------------------

def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def check_model(model: str) -> str:
    """Return 'local' or 'hub' for an acceptable `model`; raise ModelNotAllowedError otherwise."""
    if isinstance(model, str) and os.path.isdir(model):
        return "local"
    if model in ALLOWED_MODELS:
        return "hub"
    raise ModelNotAllowedError("model", f"{model!r} is neither a local folder nor one of {sorted(ALLOWED_MODELS)}")


def load_pipeline(model: str, device=None, dtype: Optional[torch.dtype] = None, revision: Optional[str] = None):
    """StableDiffusionXLPipeline from an allowed Hub id or a local folder; fp16 on GPU, fp32 on CPU."""
    from diffusers import StableDiffusionXLPipeline

    kind = check_model(model)
    device = torch.device(device) if device is not None else default_device()
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    kwargs = {"torch_dtype": dtype}
    if kind == "hub":
        kwargs["revision"] = revision
        if dtype == torch.float16 and ALLOWED_MODELS[model]["fp16_variant"]:
            kwargs["variant"] = "fp16"
    pipe = StableDiffusionXLPipeline.from_pretrained(model, **kwargs)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_scheduler(name: str, config):
    """A diffusers scheduler named by SCHEDULERS[name], built from the model's scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise SDXLSpecError("scheduler", f"{name!r} is not one of {sorted(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    if cls_name is None:
        cls_name = config["_class_name"] if "_class_name" in config else None
    cls = getattr(diffusers, cls_name)
    return cls.from_config(config, **extra)


# ---------------------------------------------------------------------------------------------
# LoRA adapters (one per distinct LoRA source).
# ---------------------------------------------------------------------------------------------

def _adapter_name(source: str) -> str:
    base = os.path.basename(os.path.normpath(source)) or "lora"
    safe = "".join(c if c.isalnum() else "_" for c in base)
    return f"projcomp_{safe}_{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def _prepare_adapters(pipe, spec: SDXLSpec) -> list:
    """Load each term's LoRA once (adapter_name per source); return [(name, scale) | None] per term."""
    if spec.loras is None or all(lo is None for lo in spec.loras):
        return [None] * len(spec.prompts)
    loaded = set()
    if hasattr(pipe, "get_list_adapters"):
        for names in pipe.get_list_adapters().values():
            loaded.update(names)
    scales = spec.lora_scales or [1.0] * len(spec.prompts)
    out = []
    for source, scale in zip(spec.loras, scales):
        if source is None:
            out.append(None)
            continue
        name = _adapter_name(source)
        if name not in loaded:
            try:
                pipe.load_lora_weights(source, adapter_name=name)
            except (OSError, ValueError) as e:  # missing file / incompatible weights
                raise SDXLSpecError("loras", f"cannot load LoRA {source!r}: {str(e).splitlines()[0]}") from e
            loaded.add(name)
        out.append((name, float(scale)))
    return out


def _activate(pipe, adapter) -> None:
    """Make `adapter` ((name, scale) or None = base weights) the active LoRA state of the pipeline."""
    if not getattr(pipe, "_projcomp_has_lora", False):
        if adapter is None:
            return
        pipe._projcomp_has_lora = True
    if adapter is None:
        pipe.disable_lora()
    else:
        pipe.enable_lora()
        pipe.set_adapters([adapter[0]], adapter_weights=[adapter[1]])


# ---------------------------------------------------------------------------------------------
# The composed ε (Def 5.1).
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Terms:
    prompt_embeds: torch.Tensor   # [k+1, L, D]: row 0 = background, rows 1.. = prompts.
    pooled: torch.Tensor          # [k+1, P]
    weights: list                 # [k] floats
    adapters: list                # [k+1] (name, scale) | None; row 0 (background) is always None.


def encode_terms(pipe, spec: SDXLSpec, adapters: Optional[list] = None) -> _Terms:
    """Text embeddings of background + prompts with the pipeline's own `encode_prompt`.

    Each prompt is encoded under its own adapter (a LoRA may also tune the text encoders); the
    background is `None` -> zeros (SDXL's `force_zeros_for_empty_prompt` unconditional) or the
    encoded background prompt.
    """
    adapters = adapters if adapters is not None else [None] * len(spec.prompts)
    device = pipe.device
    embeds, pooled = [], []
    for text, adapter in zip(spec.prompts, adapters):
        _activate(pipe, adapter)
        pe, _, pp, _ = pipe.encode_prompt(text, device=device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=False)
        embeds.append(pe)
        pooled.append(pp)
    _activate(pipe, None)
    if spec.background is None:
        bg_e, bg_p = torch.zeros_like(embeds[0]), torch.zeros_like(pooled[0])
    else:
        bg_e, _, bg_p, _ = pipe.encode_prompt(spec.background, device=device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    return _Terms(prompt_embeds=torch.cat([bg_e] + embeds), pooled=torch.cat([bg_p] + pooled),
                  weights=list(spec.weights), adapters=[None] + list(adapters))


def term_predictions(pipe, terms: _Terms, x: torch.Tensor, t, time_ids: torch.Tensor,
                     max_batch: Optional[int] = None, counter: Optional[list] = None) -> torch.Tensor:
    """ε of every term for every sample: Tensor[k+1, B, C, h, w] (row 0 = background).

    `x` is the scheduler-scaled latent batch [B, C, h, w]. All (term, sample) rows that share an
    adapter go through the UNet together, in chunks of at most `max_batch` rows.
    """
    n_terms, B = terms.prompt_embeds.shape[0], x.shape[0]
    out = torch.empty((n_terms, *x.shape), dtype=x.dtype, device=x.device)
    groups = {}  # adapter -> [term index], background's group first (dict keeps insertion order)
    for j, a in enumerate(terms.adapters):
        groups.setdefault(a, []).append(j)
    for adapter, idx in groups.items():
        _activate(pipe, adapter)
        rows = [(j, b) for j in idx for b in range(B)]  # term-major: [term0 x B, term1 x B, ...]
        step = max_batch or len(rows)
        for c in range(0, len(rows), step):
            chunk = rows[c:c + step]
            jj = torch.tensor([j for j, _ in chunk], device=x.device)
            bb = torch.tensor([b for _, b in chunk], device=x.device)
            eps = pipe.unet(
                x[bb], t,
                encoder_hidden_states=terms.prompt_embeds[jj],
                timestep_cond=None,
                added_cond_kwargs={"text_embeds": terms.pooled[jj], "time_ids": time_ids.expand(len(chunk), -1)},
                return_dict=False,
            )[0]
            out[jj, bb] = eps
            if counter is not None:
                counter[0] += 1
                counter[1] += len(chunk)
    _activate(pipe, None)
    return out


def add_time_ids(pipe, height: int, width: int, dtype: torch.dtype, device) -> torch.Tensor:
    """SDXL's micro-conditioning (Podell et al. 2023, §2.2): original size, crop top-left, target
    size = (h, w, 0, 0, h, w), as StableDiffusionXLPipeline builds it for an uncropped image; checked
    against the width the UNet's `add_embedding` expects."""
    ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device)
    cfg = pipe.unet.config
    got = cfg.addition_time_embed_dim * ids.shape[1] + pipe.text_encoder_2.config.projection_dim
    want = pipe.unet.add_embedding.linear_1.in_features
    if got != want:
        raise SDXLSpecError("model", f"UNet expects {want} added-condition features, SDXL time ids give {got} "
                            f"(not an SDXL base-style UNet)")
    return ids


def _generators(seeds: Sequence[int]) -> list:
    """One CPU generator per seed: latents for seed s do not depend on the other seeds or the device."""
    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def compose(pipe, spec: SDXLSpec, callback: Optional[Callable[[int, int, torch.Tensor], None]] = None,
            output_type: str = "pil") -> SDXLResult:
    """Sample the composition 𝒞[p_b, p_1..p_k] (Def 5.1) with `pipe`'s components; one image per seed.

    `callback(step, total, latents)` runs after every scheduler step (`total` = len(scheduler.timesteps),
    which counts both stages of a second-order scheduler). `output_type`: "pil", "np", "pt" or "latent".
    """
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import retrieve_timesteps

    spec = dataclasses.replace(spec).validate()
    if pipe.unet.config.time_cond_proj_dim is not None:
        raise SDXLSpecError("model", "UNets with a guidance embedding (time_cond_proj_dim, LCM-style) are not supported")
    default_size = pipe.default_sample_size * pipe.vae_scale_factor
    spec.height = spec.height or default_size
    spec.width = spec.width or spec.height
    factor = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    for name in ("height", "width"):
        if getattr(spec, name) % factor:
            raise SDXLSpecError(name, f"{getattr(spec, name)} is not a multiple of {factor} for this model")
    device = pipe.device

    original_scheduler = pipe.scheduler
    if spec.scheduler != "default":
        pipe.scheduler = make_scheduler(spec.scheduler, original_scheduler.config)
    try:
        adapters = _prepare_adapters(pipe, spec)
        terms = encode_terms(pipe, spec, adapters)
        dtype = terms.prompt_embeds.dtype
        h, w = spec.height, spec.width
        time_ids = add_time_ids(pipe, h, w, dtype, device)
        timesteps, _ = retrieve_timesteps(pipe.scheduler, spec.steps, device)
        generators = _generators(spec.seeds)
        latents = pipe.prepare_latents(len(spec.seeds), pipe.unet.config.in_channels, h, w, dtype, device,
                                       generators)
        extra_step_kwargs = pipe.prepare_extra_step_kwargs(generators, spec.eta)
        if hasattr(pipe.scheduler, "set_begin_index"):
            pipe.scheduler.set_begin_index(0)
        counter = [0, 0]
        total = len(timesteps)
        with torch.no_grad():
            for i, t in enumerate(timesteps):
                x_in = pipe.scheduler.scale_model_input(latents, t)
                eps = term_predictions(pipe, terms, x_in, t, time_ids, spec.max_batch, counter)
                eps = combine(eps, terms.weights)
                latents = pipe.scheduler.step(eps, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if callback is not None:
                    callback(i + 1, total, latents)
            images = None if output_type == "latent" else decode(pipe, latents, output_type)
    finally:
        pipe.scheduler = original_scheduler
    return SDXLResult(images=images, latents=latents, spec=spec, num_unet_calls=counter[0],
                         num_unet_rows=counter[1])


def decode(pipe, latents: torch.Tensor, output_type: str = "pil"):
    """VAE decoding exactly as StableDiffusionXLPipeline does it (fp16 upcast, latents mean/std,
    watermark, postprocess), one sample at a time so memory does not grow with the batch."""
    vae = pipe.vae
    needs_upcasting = vae.dtype == torch.float16 and vae.config.force_upcast
    if needs_upcasting:
        vae.to(dtype=torch.float32)
    try:
        z = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(z.device, z.dtype)
            std = torch.tensor(std).view(1, -1, 1, 1).to(z.device, z.dtype)
            z = z * std / vae.config.scaling_factor + mean
        else:
            z = z / vae.config.scaling_factor
        with torch.no_grad():
            image = torch.cat([vae.decode(z[b:b + 1], return_dict=False)[0] for b in range(z.shape[0])])
    finally:
        if needs_upcasting:
            vae.to(dtype=torch.float16)
    if getattr(pipe, "watermark", None) is not None:
        image = pipe.watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type=output_type)


# ---------------------------------------------------------------------------------------------
# The "will it compose?" heuristic (Lemma 8.1, Fig 8) in the pipeline's own CLIP spaces.
# ---------------------------------------------------------------------------------------------

TEXT_SPACES = ("pooled", "tokens")


def _names(prompts: Sequence[str]) -> list:
    """Display names: the prompts themselves, made unique with an index where repeated."""
    return [p if list(prompts).count(p) == 1 else f"{p} [{i}]" for i, p in enumerate(prompts)]


def text_embedding(pipe, text: str, space: str = "pooled") -> torch.Tensor:
    """One prompt's vector in the pipeline's own CLIP text space.

    "pooled": the projected pooled output of text_encoder_2 (OpenCLIP ViT-bigG for SDXL base) —
    that encoder's CLIP text embedding, the closest analogue of Fig 8 (right), and the vector the
    UNet receives as `text_embeds`. "tokens": the mean over all 77 positions of the concatenated
    penultimate hidden states of both encoders — the cross-attention context the UNet sees.
    """
    if space not in TEXT_SPACES:
        raise SDXLSpecError("space", f"{space!r} is not one of {list(TEXT_SPACES)}")
    with torch.no_grad():
        pe, _, pp, _ = pipe.encode_prompt(text, device=pipe.device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=False)
    v = pp[0] if space == "pooled" else pe[0].mean(0)
    return v.double().cpu()


def prompt_heuristic(pipe, prompts: Sequence[str], background: Optional[str] = "", space: str = "pooled",
                     threshold: Optional[float] = None) -> dict:
    """Lemma 8.1 cosine matrix of (μ_i − μ_b) with μ = the CLIP text embedding of one prompt.

    `background=None` (the force-zeros unconditional) has no text embedding of its own: the empty
    prompt "" stands in for it (recorded as `background_used`). Returns a JSON-able dict with
    names, matrix, verdict (raw numbers + threshold) and the embedding space.
    """
    from . import heuristic as H

    if isinstance(prompts, str) or len(prompts) == 0:
        raise SDXLSpecError("prompts", f"the heuristic needs at least one prompt, got {prompts!r}")
    threshold = H.DEFAULT_THRESHOLD if threshold is None else threshold
    bg = "" if background is None else background
    names = _names(prompts)
    means = {n: text_embedding(pipe, p, space) for n, p in zip(names, prompts)}
    names, matrix = H.mean_difference_cosines(means, text_embedding(pipe, bg, space))
    return {"mode": "text", "space": space, "background": background, "background_used": bg,
            "names": names, "matrix": matrix.tolist(), "verdict": H.verdict(names, matrix, threshold)}


def load_image_encoder(pipe, image_encoder: Optional[str] = None):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor): the pipeline's own, or one from a local folder."""
    if image_encoder is None:
        if getattr(pipe, "image_encoder", None) is None:
            raise SDXLSpecError("image_encoder", "this pipeline has no image_encoder; pass a local "
                                "CLIPVisionModelWithProjection folder (image mode needs a CLIP vision model)")
        proc = pipe.feature_extractor
        if proc is None:
            from transformers import CLIPImageProcessor
            proc = CLIPImageProcessor()
        return pipe.image_encoder, proc
    if not os.path.isdir(image_encoder):
        raise SDXLSpecError("image_encoder", f"{image_encoder!r} is not a local folder")
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    enc = CLIPVisionModelWithProjection.from_pretrained(image_encoder).to(pipe.device)
    try:
        proc = CLIPImageProcessor.from_pretrained(image_encoder)
    except OSError:
        proc = CLIPImageProcessor()
    return enc, proc


def image_embeddings(encoder, processor, images: Sequence) -> torch.Tensor:
    """CLIP image embeddings (projected `image_embeds`) of PIL images: Tensor[N, d] float64 on CPU."""
    param = next(encoder.parameters())
    pixels = processor(images=list(images), return_tensors="pt").pixel_values.to(param.device, param.dtype)
    with torch.no_grad():
        return encoder(pixel_values=pixels).image_embeds.double().cpu()


def image_heuristic(pipe, spec: SDXLSpec, image_encoder: Optional[str] = None,
                    threshold: Optional[float] = None, images: Optional[dict] = None) -> dict:
    """Fig 8 (left): μ_i = mean CLIP image embedding of samples of concept i alone.

    Concept i's samples are the one-term composition (prompt i, weight w_i, over the spec's
    background) at the spec's seeds; the background's samples are the background term alone.
    Pass `images` ({name: [PIL]}, with the key "background") to embed given images instead.
    """
    from . import heuristic as H

    spec = dataclasses.replace(spec).validate()
    threshold = H.DEFAULT_THRESHOLD if threshold is None else threshold
    names = _names(spec.prompts)
    if images is None:
        images = {}
        loras = spec.loras or [None] * len(spec.prompts)
        scales = spec.lora_scales or [1.0] * len(spec.prompts)
        for n, p, w, lo, sc in zip(names, spec.prompts, spec.weights, loras, scales):
            one = dataclasses.replace(spec, prompts=[p], weights=[w], loras=[lo], lora_scales=[sc])
            images[n] = compose(pipe, one).images
        # The background alone: any prompt with weight 0 leaves ε_b (Def 5.1 with w = 0).
        only_b = dataclasses.replace(spec, prompts=[spec.prompts[0]], weights=[0.0], loras=None, lora_scales=None)
        images["background"] = compose(pipe, only_b).images
    if "background" not in images:
        raise SDXLSpecError("images", "needs a 'background' group")
    enc, proc = load_image_encoder(pipe, image_encoder)
    means = H.embedding_means(lambda ims: image_embeddings(enc, proc, ims), images)
    mu_b = means.pop("background")
    names, matrix = H.mean_difference_cosines(means, mu_b)
    return {"mode": "image", "space": "clip_image_embeds", "background": spec.background,
            "samples_per_concept": {n: len(v) for n, v in images.items()},
            "names": names, "matrix": matrix.tolist(), "verdict": H.verdict(names, matrix, threshold)}


# ---------------------------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m projcomp.sdxl",
        description="Compose SDXL prompts with eps_b + sum_i w_i (eps_i - eps_b) (Def 5.1); "
                    "writes one PNG per seed and spec.json to --outdir.")
    p.add_argument("--prompt", action="append", default=[], help="a concept prompt; repeat for each concept")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per prompt (default 1)")
    bg = p.add_mutually_exclusive_group()
    bg.add_argument("--background", default="", help='background prompt (default "": the empty prompt)')
    bg.add_argument("--zeros-background", action="store_true",
                    help="use SDXL's force-zeros unconditional embedding as the background")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--model", default="stabilityai/stable-diffusion-xl-base-1.0",
                   help=f"local folder or one of {', '.join(ALLOWED_MODELS)}")
    p.add_argument("--scheduler", default="default", choices=sorted(SCHEDULERS))
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--lora", action="append", default=None,
                   help="LoRA for the prompt at the same position ('none' for base weights); repeat per prompt")
    p.add_argument("--lora-scales", type=float, nargs="+", default=None)
    p.add_argument("--max-batch", type=int, default=None, help="max UNet rows per call (memory cap)")
    p.add_argument("--outdir", required=True)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    p.add_argument("--heuristic", nargs="?", const="text", choices=["text", "image", "both"], default=None,
                   help="also compute the Lemma 8.1 cosine matrix (text: pooled CLIP text embeddings; "
                        "image: CLIP image embeddings of per-concept samples)")
    p.add_argument("--image-encoder", default=None, help="local CLIPVisionModelWithProjection folder for --heuristic image")
    p.add_argument("--threshold", type=float, default=None, help="heuristic |cos| threshold (default 0.5)")
    p.add_argument("--heuristic-only", action="store_true",
                   help="compute --heuristic (default text) without sampling the composition (Fig 8)")
    p.add_argument("--spec", default=None, help="read a spec.json instead of the options above (except --outdir)")
    return p


def run(args: argparse.Namespace, argv: Optional[Sequence[str]] = None) -> dict:
    if args.spec is not None:
        try:
            with open(args.spec, encoding="utf-8") as f:
                spec = SDXLSpec.from_dict(json.load(f))
        except (OSError, json.JSONDecodeError) as e:
            raise SDXLSpecError("spec", f"cannot read {args.spec!r}: {e}") from e
    else:
        loras = None
        if args.lora is not None:
            loras = [None if lo.lower() == "none" else lo for lo in args.lora]
        spec = SDXLSpec(prompts=args.prompt, weights=args.weights,
                           background=None if args.zeros_background else args.background,
                           steps=args.steps, seeds=args.seeds, model=args.model, scheduler=args.scheduler,
                           height=args.height, width=args.width, loras=loras, lora_scales=args.lora_scales,
                           max_batch=args.max_batch).validate()
    check_model(spec.model)  # fail before any download
    pipe = load_pipeline(spec.model, device=args.device)

    if args.heuristic_only and args.heuristic is None:
        args.heuristic = "text"
    files = []
    if not args.heuristic_only:
        from tqdm.auto import tqdm
        bar = tqdm(desc="denoising", unit="eval")

        def progress(step, total, latents):
            bar.total = total
            bar.update(1)

        result = compose(pipe, spec, callback=progress)
        bar.close()
        spec = result.spec
        os.makedirs(args.outdir, exist_ok=True)
        for seed, im in zip(spec.seeds, result.images):
            name = f"seed{seed:06d}.png"
            im.save(os.path.join(args.outdir, name))
            files.append(name)
    os.makedirs(args.outdir, exist_ok=True)
    record = {"version": SPEC_VERSION, **spec.to_dict(), "outputs": files,
              "device": str(pipe.device), "dtype": str(pipe.unet.dtype).replace("torch.", ""),
              "command": "python -m projcomp.sdxl " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.heuristic is not None:
        from . import heuristic as H

        record["heuristic"] = []
        modes = ["text", "image"] if args.heuristic == "both" else [args.heuristic]
        for mode in modes:
            if mode == "text":
                res = prompt_heuristic(pipe, spec.prompts, spec.background, threshold=args.threshold)
            else:
                res = image_heuristic(pipe, spec, args.image_encoder, threshold=args.threshold)
            fig = H.heatmap(res["names"], torch.tensor(res["matrix"]),
                            title=f"cos(μ_i − μ_b, μ_j − μ_b), {mode}", path=os.path.join(args.outdir, f"heuristic_{mode}.png"))
            import matplotlib.pyplot as plt
            plt.close(fig)
            record["heuristic"].append(res)
            print(f"heuristic ({mode}): {res['verdict']['summary']}; "
                  + ", ".join(f"{p['a']}+{p['b']}={p['cos']:.3f}" for p in res["verdict"]["pairs"]))
        with open(os.path.join(args.outdir, "heuristic.json"), "w", encoding="utf-8") as f:
            json.dump(record["heuristic"], f, indent=2)
    with open(os.path.join(args.outdir, "spec.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {len(files)} image(s), " if files else "wrote ", end="")
    print(("heuristic.json, " if args.heuristic else "") + f"spec.json to {args.outdir}")
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args, argv)
    except CompositionError as e:  # SDXLSpecError and the heuristic's own errors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
