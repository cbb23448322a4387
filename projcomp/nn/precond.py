"""EDM preconditioning (Karras et al. 2022, Table 1) around the EDM2 U-Net, with EDM2's learned
uncertainty head (Karras et al. 2024, Eq. 21) -- and the projcomp denoiser protocol
D(x, sigma, cond) -> x0_hat (docs/design.md)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from .conditions import ConditionEncoder
from .mp import MPConv, MPFourier
from .unet import UNet

__all__ = ["Precond"]


class Precond(torch.nn.Module):
    """D(x; sigma, cond) = c_skip x + c_out F(c_in x; c_noise, cond).

    Implements the denoiser protocol: `label_dim`, `image_shape`, `encode_cond(value)`, and
    `config` (set by projcomp.checkpoint.load). cond=None or an all-zeros row is the null label.
    """

    def __init__(self,
        img_resolution: int,                # Image resolution.
        img_channels: int,                  # Image channels.
        label_dim: int = 0,                 # Label vector length; 0 = unconditional. With a
                                            # `condition` schema it must equal the encoder's.
        condition: Optional[dict] = None,   # Condition schema (docs/design.md); None = none/raw labels.
        sigma_data: float = 0.5,            # Expected std of the training data.
        logvar_channels: int = 128,         # Fourier features of the uncertainty head u(sigma).
        **unet_kwargs,                      # UNet arguments.
    ):
        super().__init__()
        # Everything needed to rebuild this network; written to checkpoint config.json.
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim,
                                condition=condition, sigma_data=sigma_data, logvar_channels=logvar_channels,
                                **unet_kwargs)
        self.encoder = ConditionEncoder(condition)
        if condition is not None and label_dim != self.encoder.label_dim:
            raise ValueError(f"label_dim={label_dim} does not match condition schema {condition!r} "
                             f"(label_dim {self.encoder.label_dim})")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.condition = condition
        self.sigma_data = sigma_data
        # A condition with a place (schema "encoding": "map") also enters as input channels.
        self.unet = UNet(img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim,
                         map_channels=self.encoder.map_channels, **unet_kwargs)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, kernel=[])
        self.config: dict = {}

    @property
    def image_shape(self) -> tuple:
        return (self.img_channels, self.img_resolution, self.img_resolution)

    def encode_cond(self, value: Any) -> torch.Tensor:
        """A user-level condition (location (x, y), colour name/index, ...) -> Tensor[label_dim]."""
        return self.encoder.encode(value)

    def _labels(self, cond: Optional[torch.Tensor], batch: int, device, dtype=torch.float32) -> Optional[torch.Tensor]:
        if self.label_dim == 0:
            return None
        if cond is None:
            return torch.zeros(batch, self.label_dim, device=device, dtype=dtype)
        cond = torch.as_tensor(cond).to(device=device, dtype=dtype)
        if cond.ndim == 1:
            cond = cond.unsqueeze(0)
        if cond.shape[-1] != self.label_dim:
            raise ValueError(f"cond has {cond.shape[-1]} features; this network expects label_dim={self.label_dim}")
        return cond.expand(batch, -1) if cond.shape[0] == 1 else cond

    def forward(self,
        x: torch.Tensor,                        # Noisy images [B, C, H, W], x = x0 + sigma n.
        sigma: torch.Tensor | float,            # Noise levels [B] (or a scalar).
        cond: Optional[torch.Tensor] = None,    # Labels [B, label_dim] / [label_dim]; None = null.
        return_logvar: bool = False,            # Also return the learned uncertainty u(sigma).
    ):
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        if sigma.shape[0] == 1 and x.shape[0] != 1:
            sigma = sigma.expand(x.shape[0], 1, 1, 1)
        labels = self._labels(cond, x.shape[0], x.device)

        # Preconditioning weights (EDM, Table 1).
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.flatten().log() / 4

        cond_map = self.encoder.location_map(labels, self.img_resolution) if self.unet.map_channels else None
        F_x = self.unet(c_in * x, c_noise, self.encoder.global_part(labels), cond_map)
        D_x = c_skip * x + c_out * F_x.to(torch.float32)
        if return_logvar:
            logvar = self.logvar_linear(self.logvar_fourier(c_noise)).to(torch.float32).reshape(-1, 1, 1, 1)
            return D_x, logvar
        return D_x
