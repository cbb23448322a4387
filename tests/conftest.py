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


# The location schema of the nets with a colour per object (checkpoints/clevr-object-32 and alike).
COLOR_LOCATION_SCHEMA = {"type": "location", "dim": 2, "empty": True,
                         "colors": ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"],
                         "encoding": "map", "map_sigma": 0.046875}


def deafen_to_maps(net):
    """Zero the first conv's weights on the condition-map input channels (those after the image's
    3 channels and the constant ones channel): the net then cannot see where a label's place is,
    except through the global embedding."""
    import torch
    first = net.unet.enc[next(iter(net.unet.enc))]
    with torch.no_grad():
        first.weight[:, 3 + 1:].zero_()
    return net


def build_tiny_zoo(root, resolution=16, seed=0, location_schema=None):
    """Random-weight EDM2 nets in the four CLEVR roles, saved as real checkpoints under `root`.
    `location_schema` replaces the location net's condition schema (e.g. COLOR_LOCATION_SCHEMA: then
    it is saved as trained on the object-empty preset, like checkpoints/clevr-object-32: a colour per
    object, and the 'empty' label for the empty scene)."""
    import torch

    from projcomp.checkpoint import save
    from projcomp.clevr.scene import CLEVR_COLORS
    from projcomp.nn import Precond
    from projcomp.nn.conditions import make_condition_encoder

    roles = {
        "clevr-empty-%d": ("empty", None),
        "clevr-location-%d": (("object-empty", location_schema) if location_schema
                              else ("location", {"type": "location", "dim": 2})),
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


@pytest.fixture(scope="session")
def tiny_color_zoo_dir(tmp_path_factory):
    """The tiny zoo with a location net that takes a colour per object and an 'empty' label."""
    return build_tiny_zoo(str(tmp_path_factory.mktemp("color_zoo")), location_schema=COLOR_LOCATION_SCHEMA)
