"""Any CNN, right by default: the default CAM and filter layers on common torchvision architectures
(random weights, nothing downloaded), layers whose output is 1x1, and modules that run twice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import convscope
from convscope.cli.main import main
from convscope.errors import ConvscopeWarning, InputError, LayerError
from convscope.layers import ChannelsLast, Tokens, default_filter_layers
from convscope.presentation.drawing import colormap_lut, render_grid
from convscope.presentation.plans import plan_filters
from convscope.techniques.capture import cam_layer

# architecture -> (default CAM layer, its shape); either a container or its last child is right
# where both output the same tensor, so the expected name is the one convscope prints.
EXPECTED_CAM = {
    "resnet50": ("layer4", (2048, 7, 7)),
    "mobilenet_v3_small": ("features", (576, 7, 7)),
    "efficientnet_b0": ("features", (1280, 7, 7)),
    "regnet_y_400mf": ("trunk_output", (440, 7, 7)),
    "densenet121": ("features", (1024, 7, 7)),
    "convnext_tiny": ("features", (768, 7, 7)),
    "googlenet": ("inception5b", (1024, 7, 7)),
    "inception_v3": ("Mixed_7c", (2048, 8, 8)),
    "squeezenet1_1": ("features", (512, 13, 13)),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED_CAM))
def architecture(request) -> tuple[str, convscope.Model]:
    with warnings.catch_warnings():  # torchvision's notes on GoogLeNet's and Inception's initialization
        warnings.simplefilter("ignore", FutureWarning)
        return request.param, convscope.load_model(f"torchvision:{request.param}", "random")


def test_default_cam_layer_is_the_last_feature_map_on_the_main_path(architecture):
    name, model = architecture
    layer = cam_layer(model)
    assert (layer, model.layer(layer).shape) == EXPECTED_CAM[name]


def test_default_filter_layers_are_one_per_stage(architecture):
    name, model = architecture
    layers = [model.layer(layer) for layer in default_filter_layers(model.all_layers())]
    assert 4 <= len(layers) <= 7, [layer.name for layer in layers]
    assert all(layer.kind == "conv" and layer.shape[1] * layer.shape[2] > 1 for layer in layers)
    resolutions = [layer.shape[1:] for layer in layers]
    assert len(set(resolutions)) == len(resolutions)  # one per resolution, never an SE 1x1 conv
    assert all(a[0] > b[0] for a, b in zip(resolutions, resolutions[1:]))  # in the order the network shrinks


def test_defaults_stay_on_the_bundled_models(vgg19_random, default_model):
    assert cam_layer(vgg19_random) == "block5_pool" and cam_layer(default_model) == "_act1"
    assert default_filter_layers(vgg19_random.all_layers()) == [f"block{i}_conv1" for i in range(1, 6)]
    assert default_filter_layers(default_model.all_layers()) == [
        "_conv_stem", "_blocks.1._depthwise_conv", "_blocks.3._depthwise_conv", "_blocks.5._depthwise_conv",
        "_blocks.11._depthwise_conv"]


# -- layers whose output is 1x1 --------------------------------------------------------------------------
def test_cam_refuses_a_1x1_layer(tiny_model, capsys):
    with pytest.raises(InputError, match=r"^layer gap: outputs 6x1x1, one value per channel"):
        convscope.cam(tiny_model, torch.randn(1, 3, 16, 16), layer="gap")


def test_a_1x1_layer_is_drawn_as_one_strip():
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).view(5, 1, 1)
    strip = np.asarray(render_grid(values, cmap="gray"))
    assert strip.shape == (28, 5 * 28, 3)  # one row: a 28 px column per value
    # normalized over the layer (mean 2, std sqrt 2): 64 (v - 2) / sqrt(2) + 128, not flat per channel
    expected = [round(64 * (v - 2) / 2 ** 0.5 + 128) for v in range(5)]
    assert expected == [37, 83, 128, 173, 219]
    np.testing.assert_array_equal(strip[:, ::28], colormap_lut("gray")[expected][None].repeat(28, axis=0))
    wide = np.asarray(render_grid(torch.randn(1280, 1, 1)))
    assert wide.shape == (28, 1280, 3)


# -- modules that run more than once ---------------------------------------------------------------------
class SharedRelu(nn.Module):
    """conv -> relu -> conv -> the same relu -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_a_module_run_twice_is_its_first_call_with_a_warning(capsys):
    model = convscope.load_model(SharedRelu(), input_size=8)
    assert model.layer("relu").calls == 2 and model.layer("conv1").calls == 1
    x = torch.randn(1, 3, 8, 8)
    warning = "^layer 'relu' runs 2 times in one forward pass; convscope shows its first call$"
    with pytest.warns(ConvscopeWarning, match=warning):
        outputs = convscope.activations(model, x, "relu")
    torch.testing.assert_close(outputs["relu"], torch.relu(model.module.conv1(x)).detach())
    with pytest.warns(ConvscopeWarning, match="runs 2 times"):
        convscope.cam(model, x, layer="relu")


def test_the_cli_prints_the_warning_as_one_line(capsys, tmp_path):
    code = main(["activations", "--model", "torchvision:resnet18", "--weights", "random", "sample:coffee",
                 "--layers", "layer1.0.relu", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0
    assert err.strip() == ("convscope: warning: layer 'layer1.0.relu' runs 2 times in one forward pass; "
                           "convscope shows its first call")


@pytest.mark.parametrize("command", [
    ["cam", "sample:coffee", "--layer", "layer1.0.relu", "--top", "2"],
    ["evaluate", "sample:coffee", "--layer", "layer1.0.relu", "--methods", "gradcam,layercam", "--metrics", "drop"],
    ["explain", "sample:coffee", "--layer", "layer1.0.relu", "--top", "2", "--filters-steps", "1"],
])
def test_the_shared_layer_warning_is_printed_once(capsys, tmp_path, command):
    """The layer is checked once, where it enters: the plan; the maps made from the plan (several
    classes, several methods) do not check it again."""
    code = main([*command, "--model", "torchvision:resnet18", "--weights", "random", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("runs 2 times in one forward pass") == 1, err


# -- choosing filter layers and counts -----------------------------------------------------------------------
def test_filter_globs_keep_the_conv_layers_and_counts_take_up_to_n(tiny_model):
    plan = plan_filters(tiny_model, "*", "100", steps=1, size=16)
    assert plan.layers == [("conv1", [0, 1, 2, 3]), ("conv2", [0, 1, 2, 3, 4, 5])]
    with pytest.raises(LayerError, match=r"layer pattern 'p\*' matches no conv layer"):
        plan_filters(tiny_model, "p*")
    assert plan_filters(tiny_model, "pool", steps=1, size=16).layers == [("pool", [0, 1, 2, 3])]  # named: any layer
    with pytest.raises(InputError, match="nosuch"):
        plan_filters(tiny_model, "nosuch")


def test_pictures_too_small_for_a_deep_layer_are_raised_with_a_note(tmp_path):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3 if i == 0 else 2, 2, 3) for i in range(8)]  # no padding: each takes 2 px
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    model = convscope.load_model(net, input_size=32)
    plan = plan_filters(model, "0,7", steps=1, size=16)  # layer 7 needs 1 + 8 * 2 = 17 px
    assert plan.sizes == {"7": 17}
    assert plan.notes == ["7: pictures of 16 px do not reach this layer; drawn at 17 px"]
    results = [result for result, _ in plan.write(model, tmp_path)]
    assert [result.size for result in results] == [16, 17]


# -- model shapes ------------------------------------------------------------------------------------------
class TwoOutputs(nn.Module):
    """Returns (logits, features) or {"logits": ..., "features": ...}."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.as_dict = as_dict

    def forward(self, x):
        features = torch.relu(self.conv(x))
        logits = self.fc(features.mean(dim=(2, 3)))
        return {"logits": logits, "features": features} if self.as_dict else (logits, features)


@pytest.mark.parametrize("as_dict, output, hint", [(False, 0, "a tuple of 2 items"),
                                                   (True, "logits", "a dict with keys 'logits', 'features'")])
def test_models_returning_several_outputs(as_dict, output, hint):
    x = torch.randn(2, 3, 8, 8)
    plain = convscope.load_model(TwoOutputs(as_dict), input_size=8)
    with pytest.raises(InputError, match=f"^output: the module returns {hint}, not one tensor of class scores; "
                                         f"say which part holds them: load_model\\(module, output="):
        plain.predict(x)
    model = convscope.load_model(TwoOutputs(as_dict), input_size=8, output=output)
    expected = model.module(x)[output]
    assert [p.index for p in model.predict(x, top=1)[0]] == [int(expected[0].argmax())]
    maps = convscope.cam(model, x, layer="conv")
    by_function = convscope.load_model(TwoOutputs(as_dict), input_size=8, output=lambda out: out[output])
    torch.testing.assert_close(convscope.cam(by_function, x, layer="conv"), maps)
    with pytest.raises(InputError, match="^output 5 does not pick the class scores"):
        convscope.load_model(TwoOutputs(as_dict), input_size=8, output=5).predict(x)


def test_a_fixed_size_module_without_its_size_names_input_size(model_state):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, 10))
    before = model_state(net)
    with pytest.raises(InputError, match=r"^input_size: the module fails on an input of 1x3x224x224 \(.*\); "
                                         r"if it takes another size, give it: load_model\(module, input_size="):
        convscope.load_model(net).layers()
    before.assert_unchanged(net)
    assert convscope.load_model(net, input_size=32).layer("2").shape == (10,)


# -- transformers: token grids and channels-last maps seen as feature maps ------------------------------------
def _small_transformers() -> dict[str, nn.Module]:
    from torchvision.models import VisionTransformer
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return {"vit": VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8,
                                     mlp_dim=16, num_classes=3).eval(),
            "swin": SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                    window_size=[2, 2], num_classes=3).eval()}


def test_token_grids_are_feature_maps():
    """ViT's tokens B x (1 + 16) x 8: the class token dropped, the 4 x 4 patch grid as B x 8 x 4 x 4; Swin's
    B x H x W x C stages as B x C x H x W. Each technique sees the map; the network downstream the tokens."""
    nets = _small_transformers()
    vit = convscope.load_model(nets["vit"], input_size=32)
    block = vit.layer("encoder.layers.encoder_layer_1")
    assert block.shape == (8, 4, 4) and block.view == Tokens(1, 4, 4)
    assert vit.layer("conv_proj").view is None and vit.layer("heads.head").shape == (3,)
    tokens = torch.randn(2, 17, 8)
    grid = block.view.to_map(tokens)
    assert torch.equal(grid[1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])  # row-major patches after the class token
    assert torch.equal(block.view.from_map(grid, tokens), tokens)
    swin = convscope.load_model(nets["swin"], input_size=32)
    stage = swin.layer("features.3")
    assert stage.shape == (16, 4, 4) and stage.view == ChannelsLast()
    assert swin.layer("permute").view is None  # already B x C x H x W
    channels_last = torch.randn(1, 4, 4, 16)
    assert torch.equal(stage.view.to_map(channels_last)[0, 5], channels_last[0, :, :, 5])


@pytest.mark.parametrize("kind, layer", [("vit", "encoder.layers.encoder_layer_1.ln_1"),
                                         ("swin", "features.3.0.norm1")])
def test_transformers_work_with_every_technique(kind, layer, model_state):
    """The default CAM layer is the last block's first norm (pytorch-grad-cam's tutorials' choice); maps,
    intermediate outputs and filter pictures run, and the model is left as it was."""
    net = _small_transformers()[kind]
    before = model_state(net)
    model = convscope.load_model(net, input_size=32)
    x = torch.randn(1, 3, 32, 32)
    assert cam_layer(model) == layer
    assert convscope.cam(model, x).shape == (1, 32, 32)
    grids = convscope.activations(model, x)
    assert all(grid.dim() == 4 for grid in grids.values()) and model.layer_names[0] in grids
    last = default_filter_layers(model.all_layers())[-1]
    pictures = convscope.filters(model, last, 2, steps=2, size=24)
    assert pictures.images.shape == (2, 3, 24, 24)
    before.assert_unchanged(net)


def test_a_transformer_from_the_cli(capsys, tmp_path):
    assert main(["cam", "sample:coffee", "--model", "torchvision:swin_t", "--weights", "random",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Grad-CAM on layer features.7.1.norm1: 1 maps" in out
    assert list((tmp_path / "cam").glob("coffee_*_cam.jpg"))


# -- grayscale models -----------------------------------------------------------------------------------------
class GrayNet(nn.Module):
    """An MNIST-style network: one input channel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(self.relu(self.conv1(x)))).mean(dim=(2, 3)))


def test_grayscale_models_end_to_end(tmp_path):
    from PIL import Image

    with pytest.raises(InputError, match=r"^mean: 3 value\(s\) for 3 input channel\(s\), but the module's first "
                                         r"convolution takes 1: give mean=\(m,\), std=\(s,\)"):
        convscope.load_model(GrayNet(), input_size=28)
    model = convscope.load_model(GrayNet(), input_size=28, mean=(0.5,), std=(0.25,))
    photo = Image.new("RGB", (40, 40), (200, 100, 50))
    x = model.preprocess(photo)
    luminance = (200 * 299 + 100 * 587 + 50 * 114) // 1000  # Pillow's "L" conversion
    assert x.shape == (1, 1, 28, 28)
    torch.testing.assert_close(x, torch.full((1, 1, 28, 28), (luminance / 255 - 0.5) / 0.25))
    assert convscope.cam(model, x).shape == (1, 28, 28)
    images, scores = convscope.filters(model, "conv2", 3, steps=2, size=16)
    assert images.shape == (3, 1, 16, 16)
    grid = np.asarray(convscope.picture_grid(images))
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()  # drawn gray
    index = convscope.html_report(model, [photo], tmp_path / "out", filters_steps=1, top=1)
    shown = np.asarray(Image.open(tmp_path / "out" / "images" / "image1.jpg")).astype(int)
    assert abs(shown[..., 0] - shown[..., 2]).max() <= 2  # the photo (under its overlays) in gray
    assert index.exists()


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_googlenet_and_inception_from_the_cli(name, tmp_path, capsys):
    assert main(["cam", "sample:coffee", "--model", f"torchvision:{name}", "--weights", "random",
                 "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    assert "Grad-CAM on layer " + ("inception5b" if name == "googlenet" else "Mixed_7c") in capsys.readouterr().out


def test_the_report_of_a_transformer(tmp_path):
    """The whole report on a small ViT: each block's grid among the intermediate outputs, maps, "why this
    class" with the CAM layer's own channels drawn, filter pictures."""
    model = convscope.load_model(_small_transformers()["vit"], input_size=32, labels=["a", "b", "c"])
    page = convscope.html_report(model, [np.zeros((40, 40, 3), np.uint8) + 90], tmp_path, filters_steps=2,
                                 filters_size=32, trust_methods="gradcam")
    html = page.read_text()
    assert "encoder.layers.encoder_layer_1" in html and "encoder.layers.encoder_layer_1.ln_1" in html
    assert list((tmp_path / "cam").glob("*_cam.jpg")) and list((tmp_path / "filters").glob("*.png"))
