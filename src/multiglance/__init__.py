"""multiglance: classify an image the way a person looks at it, a coarse glance to choose where to look, then a
close glance at that one patch (a two-glance CNN), beside the one-glance CNN it is measured against.

    import multiglance as mg
    model = mg.create_model("paper-cifar10-two", combine="probs")   # a preset, with overrides
    model, cfg = mg.load_run("runs/digits-two")                     # a trained run
    probs, patch = model.classify(images)                           # (B, K) and the top patch (B,)
    mg.fit(mg.get_preset("digits-two"), "runs/mine")                # train, as the CLI does
"""
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig, apply_overrides
from .data import Split, load_split
from .errors import UserError
from .models import OneGlance, TwoGlance, build_model, create_model, get_preset, list_models, register_model
from .runs import load_run
from .train import fit

__version__ = "0.1.0"
__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "apply_overrides", "Split", "load_split",
           "UserError", "OneGlance", "TwoGlance", "build_model", "create_model", "get_preset", "list_models",
           "register_model", "load_run", "fit"]
