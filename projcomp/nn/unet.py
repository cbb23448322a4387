"""EDM2 U-Net (Karras et al. 2024, "config G"), re-implemented from the paper: magnitude-
preserving encoder/decoder blocks, attention at chosen resolutions, no biases, a constant
ones channel appended to the input, learned zero-initialised output gain."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .mp import MPConv, MPFourier, clip_activations, mp_cat, mp_silu, mp_sum, normalize, resample

__all__ = ["Block", "UNet"]

_SILU_RMS = 0.596  # mp_silu divides by this (EDM2 Eq. 81)


def _fused_mp_sum(x: torch.Tensor, y_scaled: torch.Tensor, alpha: float) -> torch.Tensor:
    """y_scaled + alpha * x in one pass (mp_sum with y's weight t / s already applied upstream);
    mixed dtypes are promoted as mp_sum does."""
    dt = torch.promote_types(x.dtype, y_scaled.dtype)
    return torch.add(y_scaled.to(dt), x.to(dt), alpha=alpha)

#----------------------------------------------------------------------------
# Encoder / decoder block (EDM2 Fig. 21). Encoder blocks resample, project the skip to the new
# width and pixel-normalise the main path; decoder blocks keep the raw path and project it only
# at the merge. The residual branch is modulated by the embedding (scale only, 1 + gain * e).

class Block(torch.nn.Module):
    def __init__(self,
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Output channels.
        emb_channels: int,                  # Embedding (noise + label) channels.
        flavor: str = "enc",                # 'enc' or 'dec'.
        resample_mode: str = "keep",        # 'keep', 'down' or 'up'.
        attention: bool = False,            # Self-attention after the residual branch?
        channels_per_head: int = 64,        # Attention head width.
        dropout: float = 0.0,               # Dropout probability inside the residual branch.
        res_balance: float = 0.3,           # Balance between main branch (0) and residual branch (1).
        attn_balance: float = 0.3,          # Balance between main branch (0) and attention (1).
        clip_act: Optional[float] = 256,    # Clip activations to [-clip_act, clip_act]; None = off.
    ):
        super().__init__()
        assert flavor in ("enc", "dec"), flavor
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.flavor = flavor
        self.resample_mode = resample_mode
        self.num_heads = max(out_channels // channels_per_head, 1) if attention else 0
        self.dropout = dropout
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.emb_gain = torch.nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, kernel=[3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, kernel=[])
        self.conv_res1 = MPConv(out_channels, out_channels, kernel=[3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, kernel=[1, 1]) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, kernel=[1, 1]) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, kernel=[1, 1]) if self.num_heads else None

    # Training folds the constant scales of mp_silu (1 / 0.596) and of mp_sum (t / s, (1 - t) / s,
    # s = sqrt((1 - t)^2 + t^2)) into the scalar each MPConv already multiplies its weight by
    # (gain / sqrt(fan_in)), and the rest of mp_sum into one fused add: the same function, with
    # fewer passes over the activations forward and backward (EDM2's order of operations is kept
    # at inference, so sampling outputs are unchanged). Equal up to fp32 rounding;
    # tests/test_train_fast_step.py checks the loss curve. False = the plain formulas everywhere.
    fold_scales: bool = True

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        fold = self.training and self.fold_scales
        # Main branch.
        x = resample(x, mode=self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # Pixel norm (EDM2 §2.4).

        # Residual branch.
        if fold:
            y = self.conv_res0(F.silu(x), gain=1 / _SILU_RMS)
        else:
            y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = y * c[:, :, None, None].to(y.dtype)
        y = F.silu(y) if fold else mp_silu(y)
        if self.training and self.dropout != 0:
            y = F.dropout(y, p=self.dropout)

        # Connect the branches.
        t = self.res_balance
        if fold:
            s = math.sqrt((1 - t) ** 2 + t ** 2)
            y = self.conv_res1(y, gain=t / s / _SILU_RMS)
            if self.flavor == "dec" and self.conv_skip is not None:
                x = self.conv_skip(x)
            x = _fused_mp_sum(x, y, (1 - t) / s)  # = mp_sum(x, y, t), t / s already in y
        else:
            y = self.conv_res1(y)
            if self.flavor == "dec" and self.conv_skip is not None:
                x = self.conv_skip(x)
            x = mp_sum(x, y, t=t)

        # Self-attention with cosine-similarity logits (q, k, v pixel-normalised per head).
        if self.num_heads != 0:
            N, C, H, W = x.shape
            y = self.attn_qkv(x)
            y = y.reshape(N, self.num_heads, -1, 3, H * W)
            q, k, v = normalize(y, dim=2).unbind(3)        # each [N, heads, C/heads, HW]
            q, k, v = (t.transpose(-1, -2) for t in (q, k, v))  # [N, heads, HW, C/heads]
            y = F.scaled_dot_product_attention(q, k, v)   # softmax(q k^T / sqrt(d)) v
            y = y.transpose(-1, -2).reshape(N, C, H, W)
            ta = self.attn_balance
            if fold:
                s = math.sqrt((1 - ta) ** 2 + ta ** 2)
                x = _fused_mp_sum(x, self.attn_proj(y, gain=ta / s), (1 - ta) / s)
            else:
                x = mp_sum(x, self.attn_proj(y), t=ta)

        if self.clip_act is not None:
            x = clip_activations(x, self.clip_act)
        return x

#----------------------------------------------------------------------------
# The U-Net (EDM2 Fig. 21 / Table 1 config G). Levels at img_resolution >> level with widths
# model_channels * channel_mult[level]; num_blocks encoder blocks and num_blocks + 1 decoder
# blocks per level; the decoder's lowest level starts with an attention block ('in0') and a
# plain block ('in1'); skips are merged with mp_cat.

class UNet(torch.nn.Module):
    def __init__(self,
        img_resolution: int,                        # Image resolution.
        img_channels: int,                          # Image channels.
        label_dim: int,                             # Label vector length, 0 = unconditional.
        model_channels: int = 192,                  # Base width.
        channel_mult: Sequence[int] = (1, 2, 3, 4), # Width multiplier per resolution level.
        channel_mult_noise: Optional[int] = None,   # Noise-embedding width multiplier; None = channel_mult[0].
        channel_mult_emb: Optional[int] = None,     # Embedding width multiplier; None = max(channel_mult).
        num_blocks: int = 3,                        # Encoder blocks per level.
        attn_resolutions: Sequence[int] = (16, 8),  # Resolutions with self-attention.
        label_balance: float = 0.5,                 # Balance between noise (0) and label (1) embedding.
        concat_balance: float = 0.5,                # Balance between main path (0) and skip (1).
        map_channels: int = 0,                      # Condition maps given beside the input (a location map).
        **block_kwargs,                             # Block arguments (dropout, channels_per_head, ...).
    ):
        super().__init__()
        cblock = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise is not None else cblock[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb is not None else max(cblock)
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        self.out_gain = torch.nn.Parameter(torch.zeros([]))

        # Embedding.
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, kernel=[])
        self.emb_label = MPConv(label_dim, cemb, kernel=[]) if label_dim != 0 else None

        # Encoder.
        self.enc = torch.nn.ModuleDict()
        self.map_channels = map_channels
        cout = img_channels + 1 + map_channels  # + the constant ones channel (no biases) + condition maps.
        for level, channels in enumerate(cblock):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, kernel=[3, 3])
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, flavor="enc", resample_mode="down", **block_kwargs)
            for idx in range(num_blocks):
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_block{idx}"] = Block(cin, cout, cemb, flavor="enc",
                                                            attention=(res in attn_resolutions), **block_kwargs)

        # Decoder.
        self.dec = torch.nn.ModuleDict()
        skips = [m.out_channels for m in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, cemb, flavor="dec", attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, flavor="dec", **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, cemb, flavor="dec", resample_mode="up", **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                self.dec[f"{res}x{res}_block{idx}"] = Block(cin, cout, cemb, flavor="dec",
                                                            attention=(res in attn_resolutions), **block_kwargs)
        self.out_conv = MPConv(cout, img_channels, kernel=[3, 3])

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: Optional[torch.Tensor],
                cond_map: Optional[torch.Tensor] = None) -> torch.Tensor:
        # Embedding: Fourier features of c_noise, plus the label embedding (EDM2 scales labels by
        # sqrt(label_dim) so a unit-norm label has unit RMS; the null label is zeros and adds nothing).
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            emb = mp_sum(emb, self.emb_label(class_labels * math.sqrt(class_labels.shape[1])), t=self.label_balance)
        emb = mp_silu(emb)

        # Encoder.
        parts = [x, torch.ones_like(x[:, :1])]
        if self.map_channels:
            parts.append(cond_map.to(x.dtype))  # the condition's place, as pixels (see conditions.py)
        x = torch.cat(parts, dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)

        # Decoder.
        for name, block in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)
