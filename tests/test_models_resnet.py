"""build_model with torchvision ResNet backbones (random init; weights loading mocked)."""
import pytest
import torch
import torchvision
from torchvision.models import WeightsEnum

from labkit.errors import UnknownKeyError
from labkit.models import build_model


def test_resnet50_outputs_full_resolution_maps_with_three_channel_input():
    model = build_model(3, {"embedding": 4, "semantic": 2}, normalized=("embedding",), backbone="resnet50").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out["embedding"].shape == (1, 4, 64, 64)
    assert out["semantic"].shape == (1, 2, 64, 64)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(1, 64, 64))


def test_resnet_encoder_has_output_stride_8_and_no_classifier():
    model = build_model(3, {"a": 1}, backbone="resnet50", decoder_channels=16)
    backbone = model.backbone
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        x = backbone.pool(backbone.stem(x))
        for layer in backbone.layers:
            x = layer(x)
    assert x.shape[-2:] == (8, 8)
    assert not any(k.startswith(("backbone.fc", "backbone.avgpool")) for k in model.state_dict())


def test_single_channel_odd_size_input_and_rebuild_from_config():
    model = build_model(1, {"a": 2}, backbone="resnet50", decoder_channels=16).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 37, 50))
    assert out["a"].shape == (2, 2, 37, 50)
    assert model.backbone.stem[0].in_channels == 1
    rebuilt = build_model(**model.config)
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_resnet101_builds_with_the_same_decoder():
    model = build_model(3, {"a": 1}, backbone="resnet101", decoder_channels=16)
    assert model.config["backbone"] == "resnet101"
    assert len(model.backbone.layers[2]) == 23  # resnet101's layer3


@pytest.fixture
def fake_pretrained(monkeypatch):
    """Serve a seeded random ResNet-50 state dict instead of downloading weights."""
    torch.manual_seed(1)
    state = torchvision.models.resnet50().state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    return state


def test_weights_are_loaded_and_conv1_is_adapted_for_one_channel(fake_pretrained):
    model = build_model(1, {"a": 1}, backbone="resnet50", weights="DEFAULT", decoder_channels=16)
    assert model.config["weights"] == "ResNet50_Weights.IMAGENET1K_V2"
    expected_conv1 = fake_pretrained["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.backbone.stem[0].weight, expected_conv1)
    torch.testing.assert_close(
        model.backbone.layers[3][0].conv1.weight, fake_pretrained["layer4.0.conv1.weight"]
    )
    assert model.backbone.mean.flatten().tolist() == pytest.approx([0.449], abs=1e-3)


def test_three_channel_weights_keep_conv1_and_standardise_with_imagenet_stats(fake_pretrained):
    model = build_model(3, {"a": 1}, backbone="resnet50", weights="ResNet50_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(model.backbone.stem[0].weight, fake_pretrained["conv1.weight"])
    assert model.backbone.std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    rebuilt = build_model(**{**model.config, "weights": None})
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_unknown_weights_name_lists_choices_without_downloading():
    with pytest.raises(UnknownKeyError, match="IMAGENET1K_V2"):
        build_model(3, {"a": 1}, backbone="resnet50", weights="COCO")
