"""Layer discovery, names, selection; the model is left exactly as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import convscope
from convscope.errors import LayerError
from convscope.hooks import capture_outputs, evaluating


def test_tiny_layers_in_call_order_with_shapes(tiny_model):
    layers = tiny_model.layers()
    assert [(layer.name, layer.type, layer.shape) for layer in layers] == [
        ("conv1", "Conv2d", (4, 16, 16)),
        ("relu1", "ReLU", (4, 16, 16)),
        ("pool", "MaxPool2d", (4, 8, 8)),
        ("conv2", "Conv2d", (6, 8, 8)),
        ("bn", "BatchNorm2d", (6, 8, 8)),   # registered last, listed by when it runs
        ("relu2", "ReLU", (6, 8, 8)),
        ("gap", "AdaptiveAvgPool2d", (6, 1, 1)),
        ("fc", "Linear", (5,)),
    ]
    assert layers[0].as_json() == {"name": "conv1", "type": "Conv2d", "shape": [4, 16, 16]}


def test_discovery_leaves_a_training_model_untouched(tiny, model_state):
    tiny.train()
    tiny.conv1.weight.requires_grad_(False)
    before = model_state(tiny)
    model = convscope.load_model(tiny, input_size=16)
    model.layers()
    model.predict(model.dummy_input(2), top=2)
    before.assert_unchanged(tiny)  # BN running stats untouched, still in train mode, no hooks
    assert tiny.training and tiny.bn.training


def test_hooks_removed_even_when_forward_fails(tiny, model_state):
    before = model_state(tiny)
    model = convscope.load_model(tiny, input_size=16)
    model.preprocessing = convscope.Preprocessing((1, 1), (0, 0, 0), (1, 1, 1))  # too small for MaxPool2d
    with pytest.raises(convscope.InputError, match="^input_size: the module fails on an input of 1x3x1x1") as info:
        model.layers()
    assert isinstance(info.value.__cause__, RuntimeError)  # the module's own error, kept as the cause
    before.assert_unchanged(tiny)


def test_unknown_layer_suggests_closest(tiny_model):
    with pytest.raises(LayerError, match=r"unknown layer 'conv3'; did you mean conv[12], conv[12]\?$"):
        tiny_model.layer("conv3")
    with pytest.raises(LayerError, match="convscope layers"):
        tiny_model.layer("zzzzzz")


def test_select_layers_names_globs_all(tiny_model):
    assert tiny_model.select_layers("fc, conv2,conv1") == ["conv1", "conv2", "fc"]
    assert tiny_model.select_layers("conv*") == ["conv1", "conv2"]
    assert tiny_model.select_layers("all") == ["conv1", "relu1", "pool", "conv2", "bn", "relu2", "gap"]
    with pytest.raises(LayerError, match="matches no layer"):
        tiny_model.select_layers("block*")
    with pytest.raises(LayerError, match="empty"):
        tiny_model.select_layers(" , ")


def test_capture_clones_before_in_place_relu(tiny):
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad(), capture_outputs({"conv1": tiny.conv1, "relu1": tiny.relu1}) as out:
        with evaluating(tiny):
            tiny(x)
        expected = F.conv2d(x, tiny.conv1.weight, tiny.conv1.bias, padding=1)
    assert (out["conv1"] < 0).any(), "the in-place ReLU must not reach the captured conv output"
    torch.testing.assert_close(out["conv1"], expected)
    torch.testing.assert_close(out["relu1"], expected.clamp(min=0))
    assert not tiny.conv1._forward_hooks and not tiny.relu1._forward_hooks


VGG19_KERAS = (
    [f"block1_conv{i}" for i in (1, 2)] + ["block1_pool"]
    + [f"block2_conv{i}" for i in (1, 2)] + ["block2_pool"]
    + [f"block3_conv{i}" for i in (1, 2, 3, 4)] + ["block3_pool"]
    + [f"block4_conv{i}" for i in (1, 2, 3, 4)] + ["block4_pool"]
    + [f"block5_conv{i}" for i in (1, 2, 3, 4)] + ["block5_pool"]
)


def test_vgg19_keras_names_and_shapes(vgg19_random):
    layers = vgg19_random.layers()
    assert [layer.name for layer in layers] == VGG19_KERAS + ["avgpool", "fc1", "fc2", "predictions"]
    shapes = {layer.name: layer.shape for layer in layers}
    assert shapes["block1_conv1"] == (64, 224, 224)
    assert shapes["block3_conv4"] == (256, 56, 56)
    assert shapes["block5_pool"] == (512, 7, 7)
    assert shapes["fc1"] == (4096,) and shapes["predictions"] == (1000,)
    types = {layer.name: layer.type for layer in layers}
    assert types["block2_conv1"] == "Conv2d" and types["block2_pool"] == "MaxPool2d"
    assert vgg19_random.select_layers("block5_*") == [f"block5_conv{i}" for i in (1, 2, 3, 4)] + ["block5_pool"]


def test_vgg_conv_name_is_after_relu_module_name_before(vgg19_random):
    model = vgg19_random
    x = torch.randn(1, 3, 32, 32)
    modules = {name: model.submodule(name) for name in ("block1_conv1", "features.0", "fc1", "features.36")}
    with torch.no_grad(), evaluating(model.module), capture_outputs(modules) as out:
        model.module(x)
    conv = model.module.features[0]
    pre = F.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(out["features.0"], pre)
    torch.testing.assert_close(out["block1_conv1"], pre.clamp(min=0))
    assert (out["features.0"] < 0).any() and (out["block1_conv1"] >= 0).all()
    assert (out["fc1"] >= 0).all()
    assert model.layer("block5_pool").module == "features.36"


def test_vgg16_keras_names():
    model = convscope.load_model("vgg16", "random")
    names = model.layer_names
    assert names[:3] == ["block1_conv1", "block1_conv2", "block1_pool"]
    assert "block5_conv3" in names and "block5_conv4" not in names
    assert sum(n.endswith("_pool") for n in names) == 5 and sum("_conv" in n for n in names) == 13
