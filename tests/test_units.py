"""Feature pictures of any unit: class pictures, a Linear layer's neurons, any feature map's channels,
directions, diversity, dead filters and a plain module drawn at its own size -- each objective checked
against a hand computation on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import convscope
from conftest import assert_usage_errors
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.hooks import evaluating
from convscope.techniques.filters import DEAD, optimize_filters, score_images, truncated_at
from convscope.techniques.units import (
    LOGITS,
    dead_units,
    diversified,
    diversity_layer,
    diversity_penalty,
    unit_count,
    unit_values,
)


# -- the objectives, by hand ------------------------------------------------------------------------------
def test_unit_values_by_hand():
    acts = torch.arange(2 * 3 * 3 * 4, dtype=torch.float32).view(2, 3, 3, 4)
    # item 0 reads channel 2, item 1 channel 0
    assert unit_values(acts, [2, 0]).tolist() == [acts[0, 2].mean().item(), acts[1, 0].mean().item()]
    assert unit_values(acts, [2, 0], "neuron").tolist() == [acts[0, 2, 1, 2].item(), acts[1, 0, 1, 2].item()]
    vector = torch.tensor([[1.0, 5.0, 2.0], [7.0, 3.0, 4.0]])
    assert unit_values(vector, [1, 2]).tolist() == [5.0, 4.0]
    assert unit_values(vector, [1, 2], "neuron").tolist() == [5.0, 4.0]  # a vector has no centre: the entry
    d = torch.tensor([0.5, -1.0, 2.0])
    expected = [sum(d[c].item() * acts[b, c].mean().item() for c in range(3)) for b in range(2)]
    np.testing.assert_allclose(unit_values(acts, [0, 0], direction=d).tolist(), expected, rtol=1e-6)
    np.testing.assert_allclose(unit_values(vector, [0, 0], direction=d).tolist(),
                               [0.5 - 5 + 4, 3.5 - 3 + 8], rtol=1e-6)


def test_diversity_penalty_by_hand():
    torch.manual_seed(0)
    maps = torch.randn(4, 3, 2, 2)  # two groups of two copies
    grams = []
    for item in maps:
        a = item.reshape(3, 4)
        g = a @ a.T
        grams.append(g / g.norm())
    expected = 2 * (grams[0] * grams[1]).sum() + 2 * (grams[2] * grams[3]).sum()  # ordered pairs
    torch.testing.assert_close(diversity_penalty(maps, 2), expected)
    assert diversity_penalty(maps[:2].repeat(2, 1, 1, 1)[[0, 0, 1, 1]], 2).item() == pytest.approx(4.0)  # same
    values = torch.tensor([2.0, -4.0, 1.0, 1.0], requires_grad=True)
    total = diversified(values, maps, 2, weight=0.5)
    assert total.item() == pytest.approx(0.0 - 0.5 * 2.0 * expected.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(total, values)
    assert grad.tolist() == [1.0] * 4  # the scale is held constant


# -- which layers ---------------------------------------------------------------------------------------
def test_any_layer_has_units(tiny_model):
    assert unit_count(tiny_model, "fc") == 5 and unit_count(tiny_model, LOGITS) == 5
    assert unit_count(tiny_model, "pool") == 4 and unit_count(tiny_model, "relu2") == 6
    assert diversity_layer(tiny_model, "fc").name == "relu2"  # the last map larger than 1 x 1 before a vector
    assert diversity_layer(tiny_model, "relu2").name == "relu2"
    assert diversity_layer(tiny_model, "conv2").module == "bn"  # a conv's pre-activation


def test_class_pictures_raise_the_logit_and_equal_the_linear_layers(tiny_model, model_state):
    before = model_state(tiny_model.module)
    by_class = optimize_filters(tiny_model, LOGITS, [1, 4], steps=6, size=16, precision="fp32")
    assert by_class.labels == [tiny_model.labels[1], tiny_model.labels[4]]
    assert (by_class.scores > by_class.initial_scores).all()
    # the score is the logit of the picture, computed here by the model itself
    with evaluating(tiny_model.module), torch.no_grad():
        logits = tiny_model.module(tiny_model.preprocessing.normalize(by_class.images))
    torch.testing.assert_close(by_class.scores, logits[[0, 1], [1, 4]], rtol=1e-5, atol=1e-5)
    by_layer = optimize_filters(tiny_model, "fc", [1, 4], steps=6, size=16, precision="fp32")
    torch.testing.assert_close(by_layer.images, by_class.images)  # the fc's output is the logits
    assert by_layer.labels == []
    before.assert_unchanged(tiny_model.module)


def test_class_pictures_smaller_than_the_input_are_seen_at_the_input_size():
    from conftest import tiny_net

    model = convscope.load_model(tiny_net(), input_size=32)
    result = optimize_filters(model, LOGITS, [2], steps=3, size=16, precision="fp32")
    assert result.images.shape[-1] == 16
    seen = torch.nn.functional.interpolate(result.images, size=(32, 32), mode="bilinear", align_corners=False)
    with evaluating(model.module), torch.no_grad():
        logit = model.module(model.preprocessing.normalize(seen))[0, 2]
    assert result.scores[0].item() == pytest.approx(logit.item(), rel=1e-5)
    channel = optimize_filters(model, "conv2", [2], steps=1, size=16, precision="fp32")  # a map: its own size
    with evaluating(model.module), torch.no_grad(), truncated_at(model, "conv2") as run:
        assert run(channel.images, "fp32").shape[-1] == 8


def test_a_feature_maps_channel_and_a_pooling_layer(tiny_model):
    result = optimize_filters(tiny_model, "pool", 4, steps=6, size=16, precision="fp32")
    assert (result.scores > result.initial_scores).all()
    with evaluating(tiny_model.module), torch.no_grad():
        pooled = tiny_model.module.pool(tiny_model.module.relu1(tiny_model.module.conv1(
            tiny_model.preprocessing.normalize(result.images))))
    torch.testing.assert_close(result.scores, pooled[torch.arange(4), torch.arange(4)].mean(dim=(1, 2)))


def test_a_direction_is_the_weighted_channel_sum(tiny_model):
    one_hot = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    along = optimize_filters(tiny_model, "relu2", steps=5, size=16, precision="fp32", direction=one_hot)
    channel = optimize_filters(tiny_model, "relu2", [0], steps=5, size=16, precision="fp32")
    assert along.filters == [0] and along.direction
    # the direction's picture starts from unit 0's seed: a one-hot direction on channel 2 is channel 2's objective
    d = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    result = optimize_filters(tiny_model, "relu2", steps=5, size=16, precision="fp32", direction=d)
    with evaluating(tiny_model.module), torch.no_grad(), truncated_at(tiny_model, "relu2") as run:
        acts = run(result.images, "fp32")
    by_hand = sum(d[c] * acts[0, c].mean() for c in range(6))
    assert result.scores[0].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert result.scores[0] > result.initial_scores[0]
    assert not torch.equal(along.images, channel.images)


def test_diversity_gives_different_pictures_of_one_unit(tiny_model):
    plain = optimize_filters(tiny_model, "conv2", [1, 3], steps=8, size=16, precision="fp32", diversity=3)
    assert plain.filters == [1, 1, 1, 3, 3, 3] and plain.copies == 3 and len(plain.images) == 6
    kept = diversity_layer(tiny_model, "conv2")
    with evaluating(tiny_model.module), torch.no_grad(), truncated_at(tiny_model, "conv2", kept) as run:
        run(plain.images, "fp32")
        penalty = diversity_penalty(run.features, 3)
    import convscope.techniques.units as units

    weight = units.DIVERSITY_WEIGHT
    try:
        units.diversified.__defaults__ = (0.0,)  # the same ascent without the diversity term
        alike = optimize_filters(tiny_model, "conv2", [1, 3], steps=8, size=16, precision="fp32", diversity=3)
    finally:
        units.diversified.__defaults__ = (weight,)
    with evaluating(tiny_model.module), torch.no_grad(), truncated_at(tiny_model, "conv2", kept) as run:
        run(alike.images, "fp32")
        assert penalty < diversity_penalty(run.features, 3)


# -- dead filters, plain modules -----------------------------------------------------------------------------
def test_the_default_models_dead_stem_filters(default_model):
    dead = dead_units(default_model, "_conv_stem", list(range(32)))
    assert [i for i, flag in enumerate(dead) if flag] == [11, 16, 28, 31]
    assert dead_units(default_model, "_blocks.0", [0]) == [False]  # not a conv: never dead


class CifarNet(nn.Module):
    """A 32 x 32 network with a fixed flatten: it fails at 224 x 224."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.c1(x))).flatten(1))


def test_a_plain_module_is_drawn_at_the_size_given():
    net = CifarNet()
    images, scores = convscope.filters(net, "c1", 4, steps=4, size=32)
    assert images.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(scores.numpy(), score_images(net, "c1", images, [0, 1, 2, 3]).numpy(), rtol=1e-5)
    images, scores = convscope.filters(net, LOGITS, [2, 7], steps=4, size=32)
    assert images.shape == (2, 3, 32, 32)


# -- the command line ---------------------------------------------------------------------------------------
def test_cli_class_pictures_diversity_direction_and_errors(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["filters", "--weights", "random", "--classes", "platypus,3", "--steps", "2", "--size", "32",
                 "--diversity", "2", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "filters" / "logits.json").read_text())
    assert [(f["index"], f["label"], f["copy"]) for f in meta["filters"]] == [
        (103, "platypus", 0), (103, "platypus", 1), (3, "tiger shark", 0), (3, "tiger shark", 1)]
    assert meta["diversity"] == 2
    from PIL import Image

    assert Image.open(out / "filters" / "logits.png").size == (2 * (32 + 4) + 4, 2 * (32 + 4) + 4)  # a row a class
    direction = tmp_path / "d.npy"
    np.save(direction, np.linspace(-1, 1, 40).astype(np.float32))
    code = main(["filters", "--weights", "random", "--layers", "_blocks.3", "--direction", str(direction),
                 "--steps", "2", "--size", "32", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "filters" / "_blocks.3_direction.json").read_text())
    assert meta["direction"] == "d.npy" and len(meta["filters"]) == 1
    code = main(["filters", "--layers", "_conv_stem", "--steps", "2", "--size", "32",
                 "--out", str(out), "--quiet"])
    assert code == 0
    meta = json.loads((out / "filters" / "_conv_stem.json").read_text())
    assert [f["index"] for f in meta["filters"] if f.get("status") == DEAD] == [11, 16, 28, 31]

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones(7, np.float32))
    (tmp_path / "text.npy").write_text("not an array")
    command = ["filters", "--weights", "random", "--out", str(out), "--steps", "1", "--size", "32"]
    assert_usage_errors(capsys, command, [
        (["--classes", "platypuss"], "unknown class label 'platypuss'"),
        (["--classes", "1000"], "out of range"),
        (["--diversity", "0"], "diversity must be at least 1"),
        (["--layers", "_blocks.3", "--direction", str(wrong)], "_blocks.3 has 40 channels"),
        (["--layers", "_blocks.3", "--direction", str(tmp_path / "text.npy")], "cannot read"),
        (["--layers", "_blocks.3,_blocks.4", "--direction", str(direction)], "exactly one layer"),
        (["--classes", "tabby", "--method", "accentuate"], "the accentuate method starts from a photo"),
        (["--classes", "tabby", "--method", "accentuate", "--from", str(tmp_path / "nosuch.jpg")], "no such file"),
        (["--classes", "tabby", "--method", "accentuate", "--from", str(wrong)], "wrong.npy"),
        (["--classes", "tabby", "--from", "sample:chelsea"], "the lucid method does not start from a photo"),
        (["--layers", "_blocks.2", "--method", "accentuate", "--from", "sample:chelsea", "--reg-layer", "_blocks.9"],
         "_blocks.9 runs after _blocks.2"),
    ])


def test_cli_maco_transparency_and_accentuation_files(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["filters", "--weights", "random", "--classes", "tabby,7", "--method", "maco", "--transparency",
                 "--steps", "2", "--size", "32", "--out", str(out), "--quiet", "--save-raw"])
    assert code == 0, capsys.readouterr().err
    from PIL import Image

    with Image.open(out / "filters" / "logits_transparency.png") as picture:
        assert picture.mode == "RGBA" and picture.size == Image.open(out / "filters" / "logits.png").size
    alpha = np.load(out / "filters" / "logits_transparency.npy")
    assert alpha.shape == (2, 32, 32) and alpha.max() == pytest.approx(1.0)
    code = main(["filters", "--weights", "random", "--classes", "tabby", "--method", "accentuate", "--from",
                 "sample:chelsea", "--steps", "2", "--size", "32", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "filters" / "logits.json").read_text())
    assert meta["method"] == "accentuate" and [f["label"] for f in meta["filters"]] == ["tabby"]


def test_class_pictures_refused_for_a_detector():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    net = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3).eval()
    model = convscope.load_model(net, input_size=64)
    with pytest.raises(InputError, match="class pictures need class scores"):
        optimize_filters(model, LOGITS, [1], steps=1, size=32)
