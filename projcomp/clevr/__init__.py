"""CLEVR-style world without Blender: scene sampler, renderer, datasets, importer and detector."""
from .scene import (CLEVR_COLORS, CLEVR_RGB, MATERIALS, SHAPES, SIZES, Camera, SceneError,
                    sample_scene, scene_camera, set_resolution)
from .render import render, render_frame, render_ids

__all__ = ['CLEVR_COLORS', 'CLEVR_RGB', 'MATERIALS', 'SHAPES', 'SIZES', 'Camera', 'SceneError',
           'sample_scene', 'scene_camera', 'set_resolution', 'render', 'render_frame', 'render_ids']
