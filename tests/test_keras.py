"""Keras models (Keras 3 on its PyTorch backend, the test extras install it): a `.keras` file or a
`keras.Model` opened by convscope, checked against Keras's own outputs and the Keras Grad-CAM
tutorial's recipe on Keras's VGG19 (random weights, seeded); names, preprocessing, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convscope
from convscope.errors import InputError
from convscope.model import IMAGENET_MEAN
from convscope.models.keras_source import import_keras
from convscope.samples import sample_array

try:
    keras = import_keras()  # before Keras is first imported: its PyTorch backend
except InputError:
    pytest.skip("Keras is not installed (the test extras install it)", allow_module_level=True)

BLOCKS = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)]
POOLS = [f"block{b}_pool" for b in range(1, 6)]


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG19(weights=None, input_shape=(64, 64, 3), classes=10)
    path = tmp_path_factory.mktemp("keras") / "vgg19.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def vgg19(vgg19_file):
    return convscope.load_model(str(vgg19_file))


def _keras_input(model, x):
    """What convscope hands the Keras model: NHWC, BGR for caffe."""
    nhwc = x.permute(0, 2, 3, 1)
    return nhwc.flip(-1) if model.module.bgr else nhwc


def test_layers_are_the_tutorials_names_in_order(vgg19):
    listed = [(layer.name, layer.type, layer.shape) for layer in vgg19.layers()]
    assert [name for name, _, _ in listed][:21] == [name for block in range(1, 6) for name in
                                                    [n for n in BLOCKS if n.startswith(f"block{block}_")]
                                                    + [f"block{block}_pool"]]
    assert listed[0] == ("block1_conv1", "Conv2D", (64, 64, 64)) and listed[2] == ("block1_pool", "MaxPooling2D",
                                                                                   (64, 32, 32))
    assert vgg19.loading_note.startswith("preprocessing: caffe (as Keras documents")
    from convscope.layers import default_activation_layers, default_cam_layer, default_filter_layers

    layers = vgg19.all_layers()
    assert default_activation_layers(layers) == [n for n in (name for name, _, _ in listed) if n in BLOCKS + POOLS]
    assert default_filter_layers(layers) == [f"block{b}_conv1" for b in range(1, 6)]
    assert default_cam_layer(layers, vgg19.num_outputs) == "block5_pool"


def test_activations_equal_kerass_own_intermediate_outputs(vgg19):
    photos = [sample_array("chelsea"), sample_array("coffee")]
    x = vgg19.preprocess(photos)
    ours = convscope.activations(vgg19, x, BLOCKS + POOLS)
    net = vgg19.module.keras_model
    probe = keras.Model(net.inputs, [net.get_layer(name).output for name in BLOCKS + POOLS])
    with torch.no_grad():
        theirs = probe(_keras_input(vgg19, x))
    for name, value in zip(BLOCKS + POOLS, theirs):
        expected = value.permute(0, 3, 1, 2)
        assert ours[name].shape == expected.shape
        torch.testing.assert_close(ours[name], expected, atol=1e-5, rtol=1e-5)


def test_gradcam_equals_the_keras_tutorials_recipe(vgg19):
    """The tutorial: the last layer's softmax removed, the gradient of the top class's score to
    block5_conv4's output by Keras's own backend, averaged over positions, weighting the channels;
    ReLU, divided by the maximum."""
    net = vgg19.module.keras_model
    clone = keras.models.clone_model(net)
    clone.set_weights(net.get_weights())
    clone.layers[-1].activation = None
    grad_model = keras.Model(clone.inputs, [clone.get_layer("block5_conv4").output, clone.output])
    for photo in ("chelsea", "coffee"):
        x = vgg19.preprocess(sample_array(photo))
        conv_output, predictions = grad_model(_keras_input(vgg19, x))
        top = int(predictions[0].argmax())
        (grads,) = torch.autograd.grad(predictions[:, top].sum(), conv_output)
        pooled = grads.mean(dim=(0, 1, 2))
        heatmap = torch.relu(conv_output[0] @ pooled)
        heatmap = (heatmap / heatmap.max()).detach()
        ours = convscope.compute_cam(vgg19, x, None, "block5_conv4")
        assert ours.classes == [top]
        torch.testing.assert_close(ours.low_res[0] / ours.low_res[0].max(), heatmap, atol=1e-4, rtol=0)
    assert net.layers[-1].activation.__name__ == "softmax"  # the model itself is left as it was


def test_the_user_model_is_left_as_it_was(vgg19):
    net = vgg19.module.keras_model
    before = [w.copy() for w in net.get_weights()]
    convscope.compute_cam(vgg19, vgg19.preprocess(sample_array("chelsea")), None, "block5_conv4", "gradcam++")
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    assert all(not layer._forward_hooks for layer in net.layers)
    assert all(p.grad is None for p in vgg19.module.parameters())


def test_preprocessing_as_keras_applications(vgg19):
    photo = sample_array("grace_hopper")
    x = vgg19.preprocess(photo)
    resized = np.asarray(vgg19.preprocessing.resized(convscope.load_image(photo)), np.float32)
    expected = np.ascontiguousarray(keras.applications.vgg19.preprocess_input(resized[None].copy()))
    torch.testing.assert_close(_keras_input(vgg19, x), torch.from_numpy(expected), atol=2e-3, rtol=0)
    keras.utils.set_random_seed(0)
    mobile = convscope.load_model(keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=4))
    assert mobile.loading_note.startswith("preprocessing: tf")
    x = mobile.preprocess(photo)
    resized = np.asarray(mobile.preprocessing.resized(convscope.load_image(photo)), np.float32)
    expected = np.ascontiguousarray(keras.applications.mobilenet_v2.preprocess_input(resized[None].copy()))
    torch.testing.assert_close(_keras_input(mobile, x), torch.from_numpy(expected), atol=1e-5, rtol=0)
    chosen = convscope.load_model(mobile.module.keras_model, preprocess="torch")
    assert chosen.loading_note is None and chosen.preprocessing.mean == IMAGENET_MEAN


def test_sequential_and_branching_models():
    keras.utils.set_random_seed(1)
    sequential = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                   keras.layers.MaxPooling2D(), keras.layers.GlobalAveragePooling2D(),
                                   keras.layers.Dense(3)])
    model = convscope.load_model(sequential, preprocess="tf")
    assert [layer.name for layer in model.layers()][:2] == ["conv2d", "max_pooling2d"]
    assert model.layers()[0].shape == (4, 10, 10)
    inputs = keras.Input((12, 12, 3))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    left = shared(inputs)
    right = shared(keras.layers.Conv2D(3, 1, name="mix")(inputs))
    merged = keras.layers.Add(name="add")([left, right])
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(merged))
    branching = convscope.load_model(keras.Model(inputs, outputs), preprocess="none")
    assert branching.layer("shared").calls == 2
    result = convscope.compute_cam(branching, torch.rand(1, 3, 12, 12), 1, "add")
    assert result.maps.shape == (1, 12, 12) and float(result.maps.max()) == 1.0


def test_the_command_line_takes_the_keras_file_first(vgg19_file, tmp_path, capsys):
    from convscope.cli.main import main

    assert main(["layers", "--model", str(vgg19_file)]) == 0
    out = capsys.readouterr().out
    assert "block1_conv1  Conv2D" in out and "64x64x64" in out
    assert main(["cam", str(vgg19_file), "sample:chelsea", "--layer", "block5_conv4", "--out", str(tmp_path)]) == 0
    assert "Grad-CAM on layer block5_conv4: 1 maps" in capsys.readouterr().out
    assert main(["predict", "sample:chelsea", "--model", str(vgg19_file), "--preprocess", "tf", "--json"]) == 0
    assert capsys.readouterr().out.lstrip().startswith("[")


def test_bad_keras_files_are_one_line(tmp_path, capsys):
    from convscope.cli.main import main

    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    lam = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(
        inputs))))
    lam.save(tmp_path / "lambda.keras")

    class Doubler(keras.layers.Layer):  # not registered: a loader cannot find it
        def call(self, t):
            return t * 2

    custom = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(Doubler(name="dbl")(inputs))))
    custom.save(tmp_path / "custom.keras")
    for model, reason in (("broken.keras", "not a readable Keras file"), ("saved", "a TensorFlow SavedModel"),
                          ("lambda.keras", "holds code (a Lambda layer)"), ("missing.keras", "no such file"),
                          ("custom.keras", "its layer class 'Doubler' cannot be found; import the module that "
                                           "defines it and pass it: keras.models.load_model(path, "
                                           "custom_objects={'Doubler': Doubler})")):
        assert main(["predict", "sample:chelsea", "--model", str(tmp_path / model)]) == 2, model
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and "Traceback" not in err, err


def test_keras_imported_with_another_backend_is_one_line(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(InputError, match="^model: Keras was imported with the jax backend; .* KERAS_BACKEND=torch"):
        import_keras()


def test_the_report_and_a_dataset_run_of_the_keras_vgg19(vgg19, tmp_path):
    from PIL import Image

    from convscope.dataset import load
    from convscope.presentation.run import html_report

    index = html_report(vgg19, [sample_array("chelsea")], tmp_path / "report", filters=False, trust=False,
                        attribution="none")
    page = index.read_text(encoding="utf-8")
    for name in BLOCKS + POOLS:  # every layer of the seed's tutorial, by its Keras name
        assert f'id="activations/{name}"' in page
    assert sorted(p.stem for p in (tmp_path / "report" / "activations").glob("*.png")) == sorted(BLOCKS + POOLS)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(sample_array(name)).save(photos / f"{name}.jpg")
    folder = convscope.dataset.run(vgg19, photos, tmp_path / "run", metrics=["deletion"], steps=4)
    rows = load(folder).to_pylist()
    x = vgg19.preprocess([str(photos / "chelsea.jpg")])
    expected = convscope.compute_cam(vgg19, x, None, None).low_res[0]
    assert rows[0]["cam_shape"] == list(expected.shape)
    torch.testing.assert_close(torch.tensor(rows[0]["cam"]).view(*expected.shape), expected, atol=1e-5, rtol=1e-4)


def test_classic_filter_pictures_reach_the_keras_tutorials_ascent(vgg19):
    """The ascent of Keras's "Visualizing what convnets learn", written in Keras on its backend: from
    a small random input, 30 steps of lr 10 along the L2-normalized gradient of the filter's mean
    activation (borders excluded). convscope's classic pictures of the 64 filters of block1_conv1
    reach at least that activation (the layer's mean output, measured alike on both inputs): they
    optimize the convolution before its fused ReLU, so a filter off everywhere at the start still moves."""
    net = vgg19.module.keras_model
    extractor = keras.Model(net.inputs, net.get_layer("block1_conv1").output)
    generator = torch.Generator().manual_seed(0)
    theirs = []
    for index in range(64):
        image = ((torch.rand(1, 64, 64, 3, generator=generator) - 0.5) * 0.25).requires_grad_(True)
        for _ in range(30):
            loss = extractor(image)[:, 2:-2, 2:-2, index].mean()
            (grad,) = torch.autograd.grad(loss, image)
            image = (image + 10.0 * grad / (grad.norm() + 1e-12)).detach().requires_grad_(True)
        with torch.no_grad():
            theirs.append(float(extractor(image)[0, :, :, index].mean()))
    pictures, scores = convscope.filters(vgg19, "block1_conv1", 64, size=64, method="classic", precision="fp32")
    with torch.no_grad():  # the same measure on convscope's pictures, through the model's preprocessing
        x = vgg19.preprocessing.normalize(pictures)
        ours = extractor(_keras_input(vgg19, x)).mean(dim=(1, 2))[torch.arange(64), torch.arange(64)]
        # convscope's score is the conv's mean before its fused ReLU, as for a torch model's conv
        layer = net.get_layer("block1_conv1")
        before = (layer.convolution_op(_keras_input(vgg19, x), layer.kernel) + layer.bias.value).mean(dim=(1, 2))
    torch.testing.assert_close(scores, before[torch.arange(64), torch.arange(64)], atol=1e-3, rtol=1e-3)
    short = [(i, float(ours[i]), theirs[i]) for i in range(64) if ours[i] < theirs[i] - 1e-6]
    assert not short, short


def test_a_keras_model_travels_to_a_ray_actor_whole(vgg19, tmp_path):
    """A Ray actor gets the model pickled: its registered layers must be its Keras model's own (a copy
    whose layers are other objects than the model's would see none of its hooks fire)."""
    import pickle

    copy = pickle.loads(pickle.dumps(vgg19.module))
    assert copy.layers["block5_conv4"] is copy.keras_model.get_layer("block5_conv4")
    pytest.importorskip("ray")
    from PIL import Image

    from convscope.dataset import load

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(sample_array(name)).save(photos / f"{name}.jpg")
    local = load(convscope.dataset.run(vgg19, photos, tmp_path / "local", metrics="drop")).to_pylist()
    on_ray = load(convscope.dataset.run(vgg19, photos, tmp_path / "ray", metrics="drop", engine="ray")).to_pylist()
    for a, b in zip(local, on_ray):
        torch.testing.assert_close(torch.tensor(a["cam"]), torch.tensor(b["cam"]), atol=1e-5, rtol=1e-4)


def test_the_sanity_check_randomizes_a_copy_of_the_keras_layers(vgg19):
    from convscope.techniques.metrics import randomization_cascade, sanity

    steps = randomization_cascade(vgg19, "block5_conv4")
    assert steps[0] == ("classifier", ["layers.fc1", "layers.fc2"])  # the head runs beside the model
    assert "layers.block1_conv1" in steps[-1][1]
    net = vgg19.module.keras_model
    before = [w.copy() for w in net.get_weights()]
    x = vgg19.preprocess(sample_array("chelsea"))
    (result,) = sanity(vgg19, x, [3], lambda m, inputs, classes: convscope.cam(m, inputs, classes, "block5_conv4"),
                       "block5_conv4", seeds=1, cascade=False)
    assert result.stages == ["classifier"] and -1 <= result.spearman[0] < 1
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
