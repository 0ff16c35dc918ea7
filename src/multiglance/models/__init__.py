"""Models: the report's CNN blocks, the one- and two-glance models, and the preset registry."""
from .combine import COMBINE_MODES, combine
from .glances import OneGlance, TwoGlance
from .output import GlanceOutput, as_output
from .registry import build_model, create_model, get_preset, list_models, register_model
from . import presets  # noqa: F401  (registers the presets)

__all__ = ["COMBINE_MODES", "GlanceOutput", "OneGlance", "TwoGlance", "as_output", "combine", "build_model",
           "create_model", "get_preset", "list_models", "register_model"]
from . import presets_beyond  # noqa: E402,F401  (beyond the report: MNIST canvases, the CIFAR-10 front)
from . import presets_large  # noqa: E402,F401  (large images: a folder of photos, megapixel MNIST, photo scenes)
from . import presets_photos  # noqa: E402,F401  (photographs: pretrained glances, any size and aspect)
