"""build_model with the UNet backbone: shapes, heads, normalisation, config."""
import pytest
import torch

from labkit.errors import LabkitError, UnknownKeyError
from labkit.models import available_backbones, build_model


def tiny(**kw):
    torch.manual_seed(0)
    return build_model(2, {"embedding": 3, "seed": 1}, normalized=("embedding",), width=4, depth=2, **kw)


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (5, 3), (1, 1)])
def test_outputs_are_at_input_resolution_for_any_size(size):
    out = tiny()(torch.rand(2, 2, *size))
    assert set(out) == {"embedding", "seed"}
    assert out["embedding"].shape == (2, 3, *size)
    assert out["seed"].shape == (2, 1, *size)


def test_normalized_heads_are_unit_vectors_and_others_are_not():
    out = tiny()(torch.rand(1, 2, 12, 12) * 5)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(1, 12, 12))
    assert out["seed"].dtype == torch.float32


def test_rebuild_from_config_gives_same_state_dict_keys_and_shapes():
    model = tiny()
    rebuilt = build_model(**model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    rebuilt.load_state_dict(model.state_dict())
    image = torch.rand(1, 2, 8, 8)
    torch.testing.assert_close(rebuilt(image)["seed"], model(image)["seed"])


def test_config_records_defaults():
    model = build_model(3, {"semantic": 2})
    assert model.config == {
        "in_channels": 3, "heads": {"semantic": 2}, "normalized": (), "backbone": "unet",
        "width": 16, "depth": 3,
    }


def test_gradients_reach_the_input_layer():
    model = tiny()
    out = model(torch.rand(2, 2, 8, 8))
    (out["seed"].sum() + out["embedding"][:, 0].sum()).backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_unknown_backbone_lists_choices():
    with pytest.raises(UnknownKeyError, match="resnet50.*unet|unet.*resnet50"):
        build_model(3, {"a": 1}, backbone="vgg")
    assert {"unet", "resnet50", "resnet101"} <= set(available_backbones())


@pytest.mark.parametrize(
    "heads, normalized, kw, match",
    [
        ({}, (), {}, "at least one head"),
        ({"a": 0}, (), {}, "channel"),
        ({"a.b": 1}, (), {}, "without '.'"),
        ({"a": 2}, ("b",), {}, "not among the heads"),
        ({"a": 2}, (), {"widht": 8}, "widht"),
        ({"a": 2}, (), {"depth": 0}, "depth"),
    ],
)
def test_bad_arguments_raise_labkit_errors(heads, normalized, kw, match):
    with pytest.raises(LabkitError, match=match):
        build_model(1, heads, normalized=normalized, **kw)


def test_coordinate_channels_are_centred_and_in_fixed_pixel_units():
    from labkit.models.unet import coordinate_channels

    grid = coordinate_channels(torch.zeros(2, 1, 3, 5), scale=2.0)
    assert grid.shape == (2, 2, 3, 5)
    torch.testing.assert_close(grid[0, 0, :, 0], torch.tensor([-0.5, 0.0, 0.5]))
    torch.testing.assert_close(grid[1, 1, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    # the unit does not depend on the image size: neighbouring pixels differ by 1/scale everywhere
    big = coordinate_channels(torch.zeros(1, 1, 40, 40), scale=2.0)
    torch.testing.assert_close(big[0, 1, 0, 1:] - big[0, 1, 0, :-1], torch.full((39,), 0.5))


def test_coords_tell_identical_objects_apart_and_survive_a_rebuild():
    image = torch.zeros(1, 2, 64, 128)  # squares far from the borders (beyond the receptive field)
    image[:, :, 30:34, 40:44] = 1.0
    image[:, :, 30:34, 80:84] = 1.0  # the same square, 40 px to the right
    plain, with_coords = tiny(), tiny(coords=True, coord_scale=16.0)
    a = plain(image)["seed"][0, 0]
    torch.testing.assert_close(a[30:34, 40:44], a[30:34, 80:84])  # translation-equivariant: identical features
    b = with_coords(image)["seed"][0, 0]
    assert not torch.allclose(b[30:34, 40:44], b[30:34, 80:84], atol=1e-3)
    assert with_coords.config["coords"] is True and with_coords.config["coord_scale"] == 16.0
    rebuilt = build_model(**with_coords.config)
    rebuilt.load_state_dict(with_coords.state_dict())
    torch.testing.assert_close(rebuilt(image)["seed"], with_coords(image)["seed"])


def test_separate_heads_have_their_own_backbone():
    model = tiny(separate=("seed",))
    assert model.config["separate"] == ("seed",)
    image = torch.rand(1, 2, 12, 12)
    model(image)["seed"].sum().backward()
    assert model.own_backbones["seed"].stem[0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad is None  # the shared backbone feeds only "embedding"
    rebuilt = build_model(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(image)["seed"], model(image)["seed"])
    with pytest.raises(LabkitError, match="separate heads"):
        tiny(separate=("nope",))


def test_encoder_only_unet_upsamples_its_deepest_features():
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model(2, {"cam": 3}, width=4, depth=2, decoder=False)
    net = model.backbone
    assert net.out_channels == 16 and not hasattr(net, "up")
    image = torch.rand(2, 2, 13, 10)  # not a multiple of 4: padded, then cropped back
    cam = model(image)["cam"]
    assert cam.shape == (2, 3, 13, 10)
    x = net.stem(F.pad(image, (0, 2, 0, 3), mode="replicate"))
    for down in net.down:
        x = down(F.max_pool2d(x, 2))
    assert x.shape[-2:] == (4, 3)  # stride 4
    # the 1x1 head on the stride-4 map, upsampled (the same as the head on upsampled features: both are linear)
    expected = F.interpolate(model.heads["cam"](x), size=(16, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cam, expected[..., :13, :10])
    on_features = model.heads["cam"](F.interpolate(x, size=(16, 12), mode="bilinear", align_corners=False))
    torch.testing.assert_close(cam, on_features[..., :13, :10], atol=1e-5, rtol=1e-4)
    assert build_model(**model.config).backbone.decoder is False


def test_separate_kw_gives_one_head_a_backbone_of_another_shape():
    torch.manual_seed(0)
    model = build_model(3, {"cam": 2, "boundary": 1}, width=4, depth=2, separate=("cam",),
                        separate_kw={"cam": {"width": 8, "depth": 3, "decoder": False}})
    assert model.own_backbones["cam"].out_channels == 64 and model.backbone.out_channels == 4
    image = torch.rand(1, 3, 16, 16)
    rebuilt = build_model(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(image)["cam"], model(image)["cam"])
    with pytest.raises(LabkitError, match="separate_kw"):
        build_model(3, {"cam": 2}, separate_kw={"cam": {"width": 8}})
    with pytest.raises(LabkitError, match="widht"):
        build_model(3, {"cam": 2}, separate=("cam",), separate_kw={"cam": {"widht": 8}})


def test_forward_on_some_heads_runs_only_their_backbones():
    model = tiny(separate=("seed",))
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append("shared"))
    model.own_backbones["seed"].register_forward_hook(lambda *args: calls.append("seed"))
    image = torch.rand(1, 2, 12, 12)
    only_seed = model(image, heads=("seed",))
    assert set(only_seed) == {"seed"} and calls == ["seed"]
    torch.testing.assert_close(only_seed["seed"], model(image)["seed"])
    assert sorted(calls[1:]) == ["seed", "shared"]  # all heads: both networks
