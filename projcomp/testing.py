"""Tiny random-weight pipelines for offline tests and demos (no Hub access).

`tiny_sdxl_pipeline(path)` builds a `diffusers.StableDiffusionXLPipeline` from configs only — the
same component layout as SDXL base (two CLIP text encoders, a `text_time` UNet, an AutoencoderKL,
an Euler scheduler) at toy sizes, plus a tiny CLIP vision tower as `image_encoder` so the image
mode of the heuristic (Fig 8, left) has something to run on. The CLIP tokenizers are written
locally (a byte-level vocab.json + merges.txt), so nothing is downloaded. With `path` the pipeline
is `save_pretrained` there and `python -m projcomp.sdxl --model PATH` loads it like a Hub model.

The weights are random: images are noise, but every code path (encode_prompt, add_time_ids,
schedulers, VAE decoding, LoRA adapters) is the real diffusers one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

import torch

__all__ = ["tiny_sdxl_pipeline", "write_tiny_clip_tokenizer"]

# A few merges so that common words become single tokens (realistic token counts); any word the
# merges do not cover falls back to byte-level characters, exactly like the real CLIP BPE.
_MERGE_WORDS = ["photo", "dog", "horse", "cat", "hat", "red", "oil", "painting", "with", "of", "a"]


def _bytes_to_unicode() -> dict:
    """GPT-2 / CLIP byte -> printable-unicode table (same construction as transformers' CLIP)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tiny_clip_tokenizer(folder: str, model_max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """Write a loadable `CLIPTokenizer` (vocab.json, merges.txt, configs) to `folder`; returns it."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = []
    for word in _MERGE_WORDS:  # left-to-right merges: p h -> ph, ph o -> pho, ... , phot o</w> -> photo</w>
        cur = word[0]
        for j, ch in enumerate(word[1:], start=1):
            nxt = ch + ("</w>" if j == len(word) - 1 else "")
            merge = f"{cur} {nxt}"
            cur = cur + nxt
            if merge not in merges:
                merges.append(merge)
                vocab_list.append(cur)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]  # specials last, as in CLIP (eos has the largest id)
    vocab = {}
    for tok in vocab_list:
        vocab.setdefault(tok, len(vocab))
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                        model_max_length=model_max_length, pad_token=pad_token)
    return tok


def tiny_sdxl_pipeline(path: Optional[str] = None, seed: int = 0, with_image_encoder: bool = True,
                       force_zeros_for_empty_prompt: bool = True):
    """A random-weight SDXL pipeline (fp32, CPU). `path`: save it there (a `--model` folder)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_tiny_clip_tokenizer(os.path.join(tmp, "tok"))
        tokenizer_2 = write_tiny_clip_tokenizer(os.path.join(tmp, "tok2"), pad_token="!")  # SDXL's tokenizer_2 pads with "!"
    vocab_size = len(tokenizer)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos = tokenizer.convert_tokens_to_ids("<|startoftext|>")

    torch.manual_seed(seed)
    text_cfg = dict(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,  # pooled output is read at the first eos
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=3,
        vocab_size=vocab_size, hidden_act="gelu", projection_dim=32, max_position_embeddings=77,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
    unet = UNet2DConditionModel(
        sample_size=8,                                      # latent size the config advertises (16 px / vae factor 2)
        block_out_channels=(8, 16),                         # two resolutions
        layers_per_block=1,
        in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",                    # SDXL micro-conditioning (pooled text + time ids)
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,   # 6 time ids x 8 + pooled projection_dim
        cross_attention_dim=64,                             # 32 (text_encoder) + 32 (text_encoder_2), concatenated
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4, sample_size=16, norm_num_groups=4, layers_per_block=1,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    image_encoder = feature_extractor = None
    if with_image_encoder:
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            image_size=32, patch_size=8, projection_dim=16, num_channels=3))
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, image_encoder=image_encoder,
        feature_extractor=feature_extractor, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if path is not None:
        pipe.save_pretrained(path)
    return pipe
