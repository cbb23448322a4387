"""EDM2 network (Karras et al. 2024) re-implemented for projcomp: magnitude-preserving layers,
the U-Net, EDM preconditioning with the learned-uncertainty head, and condition encoders."""

from .conditions import ConditionEncoder, ConditionError, make_condition_encoder
from .mp import (MPConv, MPFourier, mp_cat, mp_silu, mp_sum, normalize, normalize_weights_, resample,
                 set_fold_at_inference, set_force_wn_in_forward)
from .precond import Precond
from .unet import Block, UNet

__all__ = [
    "ConditionEncoder", "ConditionError", "make_condition_encoder",
    "MPConv", "MPFourier", "mp_cat", "mp_silu", "mp_sum", "normalize", "normalize_weights_", "resample",
    "set_fold_at_inference", "set_force_wn_in_forward", "Precond", "Block", "UNet",
]
