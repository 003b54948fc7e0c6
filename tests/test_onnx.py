"""ONNX files (onnx, onnxscript and onnx2pytorch from the test extras): torchvision's ResNet-18 (random
weights, seeded) exported by both of torch's exporters and opened by convscope -- outputs,
activations at matching nodes and Grad-CAM against the torch model; names; bad files."""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
import torchvision.models as tvm

import convscope
from convscope.errors import InputError
from convscope.samples import sample_array
from convscope.techniques.cams import compute_cam

pytest.importorskip("onnx2pytorch")
pytest.importorskip("onnxscript")

SIZE = 64


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return tvm.resnet18(weights=None).eval()


def _export(net, path, dynamo, **options):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=dynamo, **options)
    return path


@pytest.fixture(scope="module")
def exported(resnet18, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {"default": _export(resnet18, folder / "resnet18.onnx", True),
            "legacy": _export(resnet18, folder / "resnet18_legacy.onnx", False, opset_version=17)}


# the torch module whose output each exporter's node holds (the default exporter folds a BatchNorm
# into its conv and names the node after the BatchNorm; the legacy one after the conv)
MATCHING = {"default": {"layer1.0.relu": "layer1.0.relu", "layer3.1.bn2": "layer3.1.bn2",
                        "layer4.1.relu_1": "layer4"},
            "legacy": {"layer1.0.relu": "layer1.0.relu", "layer3.1.conv2": "layer3.1.bn2",
                       "layer4.1.relu_1": "layer4"}}


@pytest.mark.parametrize("exporter", ["default", "legacy"])
def test_an_exported_resnet_opens_with_readable_names(resnet18, exported, exporter):
    model = convscope.load_model(str(exported[exporter]))
    assert model.input_size == (SIZE, SIZE) and model.loading_note.startswith("preprocessing: torch")
    names = model.layer_names
    assert set(MATCHING[exporter]) <= set(names) and names[-1] == "fc"
    x = model.preprocess([sample_array("chelsea"), sample_array("coffee")])
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x), resnet18(x), atol=1e-4, rtol=1e-4)
    ours = convscope.activations(model, x, list(MATCHING[exporter]))
    reference = convscope.activations(resnet18, x, list(MATCHING[exporter].values()))
    for node, module in MATCHING[exporter].items():
        torch.testing.assert_close(ours[node], reference[module], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("exporter", ["default", "legacy"])
def test_gradcam_of_the_onnx_file_equals_the_torch_models(resnet18, exported, exporter):
    model = convscope.load_model(str(exported[exporter]))
    x = model.preprocess([sample_array("chelsea"), sample_array("grace_hopper")])
    ours = compute_cam(model, x, [3, 500], "layer4.1.relu_1")
    theirs = compute_cam(resnet18, x, [3, 500], "layer4")
    torch.testing.assert_close(ours.maps, theirs.maps, atol=1e-4, rtol=0)


def test_the_command_line_takes_the_onnx_file_first(exported, tmp_path, capsys):
    from convscope.cli.main import main

    assert main(["cam", str(exported["default"]), "sample:chelsea", "--preprocess", "torch",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Grad-CAM on layer layer4.1.relu_1: 1 maps" in out and "preprocessing:" not in out


def test_bad_onnx_files_are_one_line(resnet18, tmp_path, capsys):
    from convscope.cli.main import main

    (tmp_path / "broken.onnx").write_bytes(b"\x00not onnx")
    dynamic = _export(resnet18, tmp_path / "dynamic.onnx", False, opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {2: "height", 3: "width"}})
    for model, reason in (("broken.onnx", "not a readable ONNX file"),
                          ("dynamic.onnx", "its input size is dynamic (N x 3 x H x W); give it: --input-size H,W"),
                          ("missing.onnx", "no such file")):
        assert main(["predict", "sample:chelsea", "--model", str(tmp_path / model)]) == 2, model
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and "Traceback" not in err, err
    assert main(["predict", "sample:chelsea", "--model", str(dynamic), "--input-size", "48,64", "--json"]) == 0
    capsys.readouterr()
    with pytest.raises(InputError, match="^preprocess 'bgr'"):
        convscope.load_model(str(dynamic), input_size=48, preprocess="bgr")


def test_the_keras_vgg19_exported_to_onnx_gives_the_keras_files_maps(tmp_path):
    """Keras's own ONNX export (NHWC input, a Transpose before and after each convolution, the softmax
    kept): convscope sees the NHWC nodes as C x H x W; the ONNX file's class scores are the Keras
    model's softmax, so its maps equal the .keras file's of the softmax target."""
    from convscope.models.keras_source import import_keras

    try:
        keras = import_keras()
    except InputError:
        pytest.skip("Keras is not installed")
    keras.utils.set_random_seed(0)
    net = keras.applications.VGG19(weights=None, input_shape=(64, 64, 3), classes=10)
    net.save(tmp_path / "vgg19.keras")
    net(torch.zeros(1, 64, 64, 3))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        net.export(str(tmp_path / "vgg19.onnx"), format="onnx")
    from_onnx = convscope.load_model(str(tmp_path / "vgg19.onnx"), preprocess="caffe")
    from_keras = convscope.load_model(str(tmp_path / "vgg19.keras"), target="softmax")
    x = from_keras.preprocess([sample_array("chelsea"), sample_array("coffee")])
    relus = [layer.name for layer in from_onnx.layers() if layer.type == "Relu"][:16]
    assert len(relus) == 16  # the 16 convolutions' ReLUs: block1_conv1 ... block5_conv4
    ours = convscope.activations(from_onnx, x, [relus[0], relus[-1]])
    theirs = convscope.activations(from_keras, x, ["block1_conv1", "block5_conv4"])
    torch.testing.assert_close(ours[relus[0]], theirs["block1_conv1"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours[relus[-1]], theirs["block5_conv4"], atol=1e-4, rtol=1e-5)
    onnx_maps = compute_cam(from_onnx, x, [1, 7], relus[-1])
    keras_maps = compute_cam(from_keras, x, [1, 7], "block5_conv4")
    torch.testing.assert_close(onnx_maps.maps, keras_maps.maps, atol=1e-4, rtol=0)
