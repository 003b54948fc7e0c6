"""Filters by gradient ascent: spec parsing, layer rules, rising scores, batching, determinism, and the
model left untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import convscope
from conftest import assert_usage_errors
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.layers import default_filter_layers
from convscope.techniques.filter_recipes import _RedirectedClamp
from convscope.techniques.filters import optimize_filters, parse_filter_spec, preactivation_path, score_images
from reference_ascent import plain_batched_ascent


# -- the filter spec -------------------------------------------------------------------------------
def test_filter_spec_counts_indices_ranges():
    assert parse_filter_spec(None, 512) == list(range(64))
    assert parse_filter_spec(None, 32) == list(range(32))
    assert parse_filter_spec("16", 64) == list(range(16))
    assert parse_filter_spec(16, 64) == list(range(16))
    assert parse_filter_spec("0-3,32", 64) == [0, 1, 2, 3, 32]
    assert parse_filter_spec("5, 2-3, 2", 64) == [5, 2, 3]
    assert parse_filter_spec("7-7", 64) == [7]
    assert parse_filter_spec([3, 1], 4) == [3, 1]
    assert parse_filter_spec("65", 64) == list(range(64))  # a count takes up to N: all of a smaller layer
    assert parse_filter_spec(100, 8) == list(range(8))


@pytest.mark.parametrize("spec, message", [
    ("-1", "negative"), ("", "empty"), ("0", "at least 1"),
    ("0-70", "filter 64 is out of range"), ("5-3", "empty range"), ("a", "not an index"),
    ("1,,x", "not an index"), ("-2-3", "not an index"), ([], "empty"), ([64], "out of range"),
])
def test_filter_spec_errors(spec, message):
    with pytest.raises(InputError, match=message):
        parse_filter_spec(spec, 64)


# -- which layers ----------------------------------------------------------------------------------
def test_default_layers_first_conv_of_each_block(vgg19_random, tiny_model, default_model):
    assert default_filter_layers(vgg19_random.all_layers()) == [f"block{i}_conv1" for i in range(1, 6)]
    assert default_filter_layers(tiny_model.all_layers()) == ["conv1", "conv2"]
    assert default_filter_layers(default_model.all_layers())[0] == "_conv_stem"
    assert len(default_filter_layers(default_model.all_layers())) == 5  # 112, 56, 28, 14, 7 px


def test_preactivation_is_before_the_relu(vgg19_random, tiny_model, default_model):
    assert preactivation_path(vgg19_random, "block3_conv1") == "features.10"  # the conv, not its ReLU
    assert preactivation_path(vgg19_random, "features.10") == "features.10"
    assert preactivation_path(tiny_model, "conv1") == "conv1"
    assert preactivation_path(tiny_model, "conv2") == "bn"  # conv -> BatchNorm -> ReLU
    assert preactivation_path(default_model, "_conv_stem") == "_bn0"
    assert preactivation_path(vgg19_random, "block3_pool") == "features.18"  # any other layer: its own output
    assert preactivation_path(vgg19_random, "classifier.6") == "classifier.6"


# -- the optimization on tiny models -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lucid", "classic"])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_score_rises_for_every_filter(tiny_model, model_state, method, layer):
    before = model_state(tiny_model.module)
    result = optimize_filters(tiny_model, layer, None, steps=12, size=16, method=method, precision="fp32")
    assert result.images.shape == (len(result.filters), 3, 16, 16)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.scores > result.initial_scores).all(), (result.initial_scores, result.scores)
    assert result.history.shape == (12, len(result.filters))
    torch.testing.assert_close(result.scores, score_images(tiny_model, layer, result.images, result.filters))
    before.assert_unchanged(tiny_model.module)


@pytest.mark.parametrize("method", ["lucid", "classic"])
def test_batched_equals_one_at_a_time(tiny_model, method):
    batched = optimize_filters(tiny_model, "conv2", "0-3", steps=6, size=16, method=method, precision="fp32")
    for row, index in enumerate(batched.filters):
        single = optimize_filters(tiny_model, "conv2", [index], steps=6, size=16, method=method, precision="fp32")
        torch.testing.assert_close(single.images[0], batched.images[row], atol=1e-4, rtol=1e-4)
    chunked = optimize_filters(tiny_model, "conv2", "0-3", steps=6, size=16, method=method, precision="fp32",
                             batch_size=3)
    torch.testing.assert_close(chunked.images, batched.images, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_classic_reaches_at_least_the_plain_batched_ascent(tiny_model, layer):
    ours = optimize_filters(tiny_model, layer, None, steps=10, size=16, method="classic", precision="fp32")
    plain = plain_batched_ascent(tiny_model, layer, ours.filters, steps=10, size=16)
    assert ours.scores.mean() >= plain.mean()


def test_deterministic_for_a_seed(tiny_model):
    a, score_a = convscope.filters(tiny_model, "conv1", 2, steps=4, size=16, seed=3, precision="fp32")
    b, score_b = convscope.filters(tiny_model, "conv1", 2, steps=4, size=16, seed=3, precision="fp32")
    c, _ = convscope.filters(tiny_model, "conv1", 2, steps=4, size=16, seed=4, precision="fp32")
    assert torch.equal(a, b) and torch.equal(score_a, score_b)
    assert not torch.equal(a, c)


def test_frozen_train_mode_model_with_in_place_relus(tiny, model_state):
    tiny.train()
    for p in tiny.parameters():
        p.requires_grad_(False)
    before = model_state(tiny)
    model = convscope.load_model(tiny, input_size=16)
    result = optimize_filters(model, "conv2", 2, steps=5, size=16)
    assert (result.scores > result.initial_scores).all()
    before.assert_unchanged(tiny)
    assert tiny.training


def test_redirected_relu_gradient():
    x = torch.tensor([[-1.0, -2.0], [-1.0, 3.0]], requires_grad=True)
    y = _RedirectedClamp.apply(x, x.clamp(min=0).detach(), None)
    assert torch.equal(y, torch.tensor([[0.0, 0.0], [0.0, 3.0]]))
    (g,) = torch.autograd.grad((y * torch.tensor([[1.0, -1.0], [1.0, 1.0]])).sum(), x)
    # row 0 is dead everywhere: the gradient that asks for a larger x passes, the one pushing lower not;
    # row 1 has a live unit: the ordinary ReLU gradient
    assert torch.equal(g, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x6 = torch.tensor([[7.0, 8.0]], requires_grad=True)
    redirected = _RedirectedClamp.apply(x6, x6.clamp(0, 6).detach(), 6.0)
    (g6,) = torch.autograd.grad((redirected * torch.tensor([[-1.0, 1.0]])).sum(), x6)
    assert torch.equal(g6, torch.tensor([[-1.0, 0.0]]))  # saturated ReLU6: only "go lower" passes


def test_progress_callback_counts_steps(tiny_model):
    calls = []
    optimize_filters(tiny_model, "conv1", 3, steps=4, size=16, batch_size=2, progress=calls.append)
    assert sum(calls) == 8  # two batches of four steps


def test_bad_options(tiny_model):
    # the library names its Python parameters; the CLI words the same errors with flags (below)
    with pytest.raises(InputError, match="^steps must be at least 1"):
        optimize_filters(tiny_model, "conv1", steps=0)
    with pytest.raises(InputError, match="^size must be between"):
        optimize_filters(tiny_model, "conv1", size=8)
    with pytest.raises(InputError, match="^method: unknown 'deepdream'"):
        optimize_filters(tiny_model, "conv1", method="deepdream")
    with pytest.raises(InputError, match="^precision: unknown 'fp8'"):
        optimize_filters(tiny_model, "conv1", precision="fp8")
    with pytest.raises(InputError, match="^filters 0-9: filter 4 is out of range"):
        optimize_filters(tiny_model, "conv1", "0-9")


# -- real models ---------------------------------------------------------------------------------------
def test_default_model_stem_filters_improve(default_model, model_state):
    before = model_state(default_model.module)
    result = optimize_filters(default_model, "_conv_stem", "0-3", steps=24, size=48)
    assert (result.scores > result.initial_scores).all()
    before.assert_unchanged(default_model.module)


def test_cli_filters_files_and_errors(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["filters", "--model", "vgg16", "--weights", "random", "--layers", "block1_conv1,block2_conv1",
                 "--filters", "0-2,9", "--steps", "3", "--size", "32", "--out", str(out), "--save-raw",
                 "--method", "classic"])
    assert code == 0, capsys.readouterr().err
    folder = out / "filters"
    assert sorted(p.name for p in folder.iterdir()) == [
        "block1_conv1.json", "block1_conv1.npy", "block1_conv1.png", "block1_conv1_kernels.png",  # the first layer
        "block2_conv1.json", "block2_conv1.npy", "block2_conv1.png"]
    raw = np.load(folder / "block1_conv1.npy")
    assert raw.shape == (4, 3, 32, 32) and raw.dtype == np.float32 and 0 <= raw.min() and raw.max() <= 1
    meta = json.loads((folder / "block1_conv1.json").read_text())
    assert [f["index"] for f in meta["filters"]] == [0, 1, 2, 9]
    assert meta["method"] == "classic" and meta["steps"] == 3 and meta["size"] == 32
    model = convscope.load_model("vgg16", "random")
    rescored = score_images(model, "block1_conv1", torch.from_numpy(raw), [0, 1, 2, 9])
    np.testing.assert_allclose([f["score"] for f in meta["filters"]], rescored.numpy(), rtol=1e-4, atol=1e-5)
    from PIL import Image

    grid = Image.open(folder / "block1_conv1.png")
    assert grid.size == (4 * (32 + 4) + 4, 32 + 8)  # 4 pictures, 4 px margins
    kernels = np.asarray(Image.open(folder / "block1_conv1_kernels.png"), np.float32) / 255
    assert kernels.shape == (32 + 8, 4 * (32 + 4) + 4, 3)
    weight = model.module.features[0].weight.detach()[[0, 1, 2, 9]]  # each patch: 0.5 + 0.5 w / max|W|
    expected = 0.5 + 0.5 * weight / model.module.features[0].weight.detach().abs().max()
    patch = kernels[4:36, 4 + 36:4 + 36 + 32].transpose(2, 0, 1)  # filter 1, enlarged 3 x 3 -> 32 x 32
    np.testing.assert_allclose(patch[:, ::11, ::11], expected[1].numpy(), atol=1 / 255 + 1e-6)
    command = ["filters", "--model", "vgg16", "--weights", "random", "--layers", "block1_conv1", "--out", str(out)]
    assert_usage_errors(capsys, command, [
        (["--filters", "-1"], "negative"),
        (["--filters", "0-99"], "--filters 0-99: filter 64 is out of range"),
        (["--layers", "nosuch"], "nosuch"),
        (["--diversity", "0"], "diversity must be at least 1"),
        (["--size", "8"], "--size must be between"),
        (["--steps", "0"], "at least 1"),
    ])


def test_flat_and_unreached_pictures_are_redrawn_with_the_centre_unit_and_marked(tmp_path):
    from conftest import MarkedNet
    from convscope.presentation.writers import write_filter_grids
    from convscope.techniques.filters import DEAD, FLAT_REDRAWN, draw_filters, flat_pictures

    model = convscope.load_model(MarkedNet(), input_size=32, labels=["a", "b"])
    # 3 steps: filter 1's flat picture drifts only by Adam following float rounding (pixel std 0.0045
    # against the 0.01 threshold; 0.0086 after 8 steps), and the others are well clear of it
    first = optimize_filters(model, "conv", 3, steps=3, size=32, precision="fp32")
    assert first.flat == [False, True, True] and first.reached == [True, False, False]
    assert first.scores[1] == pytest.approx(first.initial_scores[1])  # the mean is the bias, whatever the picture
    result = draw_filters(model, "conv", 3, steps=3, size=32, precision="fp32")
    assert result.objectives == ["mean", "neuron", "mean"] and result.reached == [True, True, False]
    assert result.dead == [False, False, True]  # all weights zero: said so, not drawn again
    assert [result.status(i) for i in range(3)] == ["", FLAT_REDRAWN, DEAD]
    assert torch.equal(result.images[0], first.images[0]) and torch.equal(result.images[2], first.images[2])
    assert not flat_pictures(result.images[1:2]).item()  # the centre unit gave it a picture
    assert result.scores[1] > result.initial_scores[1]  # scored with the objective it maximized
    write_filter_grids(result, tmp_path)
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert (saved["objective"], saved["flat"], saved["not_reached"], saved["dead"]) == ("mean", 2, 1, 1)
    assert [(f["objective"], f["reached"], f.get("status")) for f in saved["filters"]] == [
        ("mean", True, None), ("neuron", True, FLAT_REDRAWN), ("mean", False, DEAD)]
    asked = draw_filters(model, "conv", 3, steps=3, size=32, precision="fp32", objective="neuron")
    assert asked.objectives == ["neuron"] * 3 and asked.status(1) == "" and asked.status(2) == DEAD


def test_objective_is_checked(tiny_model):
    with pytest.raises(InputError, match="objective"):
        optimize_filters(tiny_model, "conv1", 2, steps=1, size=16, objective="max")


def test_objective_from_the_command_line(tmp_path, capsys):
    code = main(["filters", "--model", "vgg16", "--weights", "random", "--layers", "block1_conv1", "--filters", "2",
                 "--steps", "1", "--size", "16", "--objective", "neuron", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "filters" / "block1_conv1.json").read_text())
    assert saved["objective"] == "neuron" and [f["objective"] for f in saved["filters"]] == ["neuron", "neuron"]
    assert_usage_errors(capsys, ["filters", "--objective"], [(["max"], "invalid choice: 'max'")])
