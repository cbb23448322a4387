"""Images as the samplers return them -> images as files and panels show them.

Samplers return float tensors [B, C, H, W] in [-1, 1] (the EDM convention, docs/design.md);
everything shown or saved is uint8 [B, H, W, C]. `to_uint8` is the one conversion (`from_uint8`
its inverse, for renders fed to a net) and `image_grid` the one way tiles are laid out (CLI
outputs, evaluation figures, the app's panels).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["to_uint8", "from_uint8", "image_grid"]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] (any float dtype) -> uint8 [B, H, W, C], rounded to nearest."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, C] -> float32 [B, C, H, W] in [-1, 1] (the inverse of `to_uint8`)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def image_grid(
    tiles: Sequence[np.ndarray],    # Images [H, W, >=3] uint8, all the same size (extra channels dropped).
    cols: int,                      # Tiles per row; rows = ceil(len / cols) unless `rows` is given.
    rows: Optional[int] = None,     # Fixed number of rows (tiles beyond rows * cols are left out).
    pad: int = 4,                   # Gap between tiles, in output pixels.
    border: bool = False,           # Also a `pad` margin around the whole grid.
    scale: int = 1,                 # Nearest-neighbour upscale of each tile.
    bg: int = 255,                  # Grey level of gaps and empty cells.
) -> np.ndarray:
    """Tiles laid out row by row into one uint8 image [rows * (h + pad) ± pad, ..., 3]."""
    tiles = list(tiles)
    rows = -(-len(tiles) // cols) if rows is None else rows
    h, w = tiles[0].shape[0] * scale, tiles[0].shape[1] * scale
    m = pad if border else 0
    out = np.full((rows * (h + pad) - pad + 2 * m, cols * (w + pad) - pad + 2 * m, 3), bg, np.uint8)
    for i, t in enumerate(tiles[: rows * cols]):
        r, c = divmod(i, cols)
        y, x = m + r * (h + pad), m + c * (w + pad)
        out[y:y + h, x:x + w] = np.asarray(t)[..., :3].repeat(scale, 0).repeat(scale, 1)
    return out
