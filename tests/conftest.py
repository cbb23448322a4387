"""Shared fixtures: tiny random-weight checkpoints for every model role (built from configs)."""

import os
import tempfile

import pytest

# Keep every test offline and its caches out of the repo.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
_TMP = tempfile.mkdtemp(prefix="projcomp-tests-")
os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(_TMP, "gradio"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_TMP, "inductor"))
os.environ.setdefault("MPLBACKEND", "Agg")


def build_tiny_zoo(root, resolution=16, seed=0):
    """Random-weight EDM2 nets in the four CLEVR roles, saved as real checkpoints under `root`."""
    import torch

    from projcomp.checkpoint import save
    from projcomp.clevr.scene import CLEVR_COLORS
    from projcomp.nn import Precond
    from projcomp.nn.conditions import make_condition_encoder

    roles = {
        "clevr-empty-%d": ("empty", None),
        "clevr-location-%d": ("location", {"type": "location", "dim": 2}),
        "clevr-clutter-%d": ("clutter-location", {"type": "location", "dim": 2}),
        "clevr-color-%d": ("color", {"type": "color", "classes": list(CLEVR_COLORS)}),
    }
    torch.manual_seed(seed)
    for name, (preset, schema) in roles.items():
        label_dim = make_condition_encoder(schema).label_dim if schema else 0
        net = Precond(img_resolution=resolution, img_channels=3, label_dim=label_dim, condition=schema,
                      logvar_channels=16, model_channels=16, channel_mult=[1, 2], num_blocks=1,
                      attn_resolutions=[8], channels_per_head=16)
        with torch.no_grad():  # EDM2 zero-initialises its gains; give the random nets a voice.
            for pname, p in net.named_parameters():
                if pname.endswith("gain"):
                    p.fill_(1.0)
        save(os.path.join(root, name % resolution), net, {"dataset": {"preset": preset, "resolution": resolution}})
    return root


@pytest.fixture(scope="session")
def tiny_zoo_dir(tmp_path_factory):
    return build_tiny_zoo(str(tmp_path_factory.mktemp("zoo")))
