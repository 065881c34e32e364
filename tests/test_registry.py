"""registry.py: every model kind is described as plain data, rebuilt from it, saved and loaded with
its weights and its target; unknown kinds and foreign configs are clear errors."""
import dataclasses

import pytest
import torch

import minidiff as md
from minidiff import registry
from minidiff.checkpoint import load_checkpoint


def small_unet(target=None) -> md.UNet:
    return md.UNet(md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                                 attention_resolutions=(4,), num_classes=3, head_dim=8), target=target)


@pytest.mark.parametrize("make", [lambda: small_unet("v"), lambda: md.DigitClassifier()])
def test_describe_build_round_trip(make, tmp_path):
    model = make()
    description = registry.describe(model)
    assert torch.load.__name__ and isinstance(description["config"], dict)
    again = registry.build(description)
    assert type(again) is type(model) and again.config == model.config
    assert getattr(again, "target", None) == getattr(model, "target", None)
    path = registry.save_model(tmp_path / "m.pt", model)
    loaded, state = registry.load_model(path)
    assert not loaded.training and registry.describe(loaded) == description
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert "sha256" not in load_checkpoint(path)                       # checked and removed on load


def test_a_unet_knows_its_null_label_and_target():
    model = small_unet()
    assert model.null_label == 3 and model.target is None
    with pytest.raises(ValueError, match="target must be one of"):
        small_unet("score")


def test_unknown_kinds_and_fields_are_named():
    with pytest.raises(ValueError, match=r"registered kind.*got 'vae'"):
        registry.build({"kind": "vae", "config": {}})
    with pytest.raises(ValueError, match=r"fields \['widths'\]"):
        registry.build({"kind": "unet", "config": {"widths": [1, 2]}})
    with pytest.raises(ValueError, match="registered kinds"):
        registry.describe(torch.nn.Linear(2, 2))


def test_register_adds_a_kind():
    @dataclasses.dataclass
    class LinearConfig:
        width: int = 4

    class Linear(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config, self.layer = config, torch.nn.Linear(config.width, config.width)

    mine = registry.register("linear_test", Linear, LinearConfig)
    model = mine.build({"kind": "linear_test", "config": {"width": 5}})
    assert registry.describe(model, mine) == {"kind": "linear_test", "config": {"width": 5}, "target": None}
    assert "linear_test" not in registry.KINDS                      # the default registry is unchanged
    with pytest.raises(TypeError):
        registry.KINDS["x"] = registry.KINDS["unet"]                 # and read-only
    with pytest.raises(TypeError, match="dataclass"):
        registry.register("bad", Linear, dict)


def test_a_model_of_several_attributes_and_an_rgb_classifier_round_trip(tmp_path):
    unet = md.UNet(md.UNetConfig(image_size=8, in_channels=3, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                                 attention_resolutions=(), num_classes=(4, 8)), target="v")
    path = md.registry.save_model(tmp_path / "u.pt", unet)
    loaded, _ = md.registry.load_model(path)
    assert loaded.config.num_classes == (4, 8) and loaded.null_label == (4, 8)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([[0, 7], [4, 8]])
    torch.testing.assert_close(loaded(x, t, y), unet.eval()(x, t, y))
    from minidiff.nn.classifier import ClassifierConfig, DigitClassifier
    classifier = DigitClassifier(ClassifierConfig(num_classes=4, in_channels=3, image_size=32)).eval()
    assert classifier(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    loaded, _ = md.registry.load_model(md.registry.save_model(tmp_path / "c.pt", classifier))
    assert loaded.config.image_size == 32 and loaded.features(torch.zeros(1, 3, 32, 32)).shape == (1, 128)
