"""Why this class: contributions equal hand-computed g * A sums; the figure, the files, the command,
the notebook display and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import convscope
from conftest import ModelState
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.techniques.explain import explain, score_without


class SquareAndLinear(nn.Module):
    """``feat`` is the identity (a 1x1 conv), so A = x; class 0 scores sum_kij w_k A_kij^2
    (g = 2 w_k A: contribution 2 w_k sum_ij A_k^2, total 2 Y_0), class 1 scores sum_kij v_k A_kij
    (g = v_k: contribution v_k sum_ij A_k, total Y_1)."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(3)[:, :, None, None])
        self.register_buffer("w", torch.tensor([1.0, -2.0, 0.5]))
        self.register_buffer("v", torch.tensor([0.5, 1.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.feat(x)
        square = (self.w[None, :, None, None] * a ** 2).sum(dim=(1, 2, 3))
        linear = (self.v[None, :, None, None] * a).sum(dim=(1, 2, 3))
        return torch.stack([square, linear], dim=1)


X = torch.tensor([[[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 0.0, 3.0], [0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]],
                  [[0.0, 1.0, 1.0, 0.0], [0.0, -2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.5]],
                  [[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]])[None]


@pytest.fixture
def square_model() -> convscope.Model:
    return convscope.load_model(SquareAndLinear(), input_size=4, labels=["square", "linear"])


def test_contributions_are_the_hand_computed_gradient_times_activation_sums(square_model):
    x = X.numpy()[0]
    w = np.array([1.0, -2.0, 0.5])
    square, linear = explain(square_model, X, classes=["square", "linear"], layer="feat", top=1)
    # class 0: 2 w_k sum A_k^2 = 2*1*(1+4+1+.25+9+1+4) = 40.5, 2*(-2)*(1+1+4+1+1+.25) = -33, 2*.5*(16+1+4) = 21
    assert square.contributions.tolist() == pytest.approx([40.5, -33.0, 21.0])
    assert square.contributions.numpy() == pytest.approx(2 * w * (x ** 2).sum(axis=(1, 2)))
    assert square.total == pytest.approx(28.5) and square.score == pytest.approx(14.25)  # total = 2 Y_0 here
    assert [c.index for c in square.ranked()] == [0, 2, 1]
    assert [c.index for c in square.supporting] == [0] and [c.index for c in square.opposing] == [1]
    first = square.channel(0)
    assert first.share == pytest.approx(40.5 / 28.5) and first.peak == (1, 3)  # 2*1*3^2 = 18, the largest term
    assert square.channel(1).peak == (1, 1)  # the most negative term: 2*(-2)*(-2)^2 = -16
    assert square.maps[0].numpy() == pytest.approx(2 * w[0] * x[0] ** 2)
    # class 1: v_k sum A_k = .5*8.5, 1*2.5, -1*5: linear, so the contributions sum to the score itself
    assert linear.contributions.tolist() == pytest.approx([4.25, 2.5, -5.0])
    assert linear.total == pytest.approx(linear.score) == pytest.approx(1.75)
    assert linear.maps[2].numpy() == pytest.approx(-x[2])
    assert linear.channel(2).peak == (0, 0)  # -4 is its most negative term


def test_after_global_pooling_and_a_linear_layer_the_total_is_the_score_minus_the_bias(tiny_model, tiny):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    state = ModelState.of(tiny)
    found = explain(tiny_model, x, classes=[1, 4], layer="relu2", top=2)
    state.assert_unchanged(tiny)
    acts = convscope.activations(tiny_model, x, ["relu2"])["relu2"]
    for row, (explanation, cls) in enumerate(zip(found, [1, 4])):
        expected = tiny.fc.weight[cls].detach() * acts[row].mean(dim=(1, 2))  # w_ck * mean_ij A_kij
        assert explanation.contributions.numpy() == pytest.approx(expected.numpy(), abs=1e-6)
        assert explanation.total == pytest.approx(explanation.score - float(tiny.fc.bias[cls].detach()), abs=1e-5)
        assert explanation.image == row and explanation.label == f"c{cls}"
        gradcam = torch.relu((tiny.fc.weight[cls].detach()[:, None, None] / 64 * acts[row]).sum(dim=0))
        assert explanation.cam.numpy() == pytest.approx(gradcam.numpy(), abs=1e-6)


def test_the_json_names_every_channel_largest_first(square_model):
    (found,) = explain(square_model, X, classes="linear", layer="feat", top=2)
    data = found.as_json()
    assert {k: data[k] for k in ("layer", "class", "label", "top", "against")} == {
        "layer": "feat", "class": 1, "label": "linear", "top": [0, 1], "against": [2]}
    assert data["total_contribution"] == pytest.approx(1.75) and data["score"] == pytest.approx(1.75)
    assert [c["index"] for c in data["channels"]] == [0, 1, 2]
    assert data["channels"][0] == {"index": 0, "contribution": pytest.approx(4.25),
                                   "share": pytest.approx(4.25 / 1.75), "peak": [1, 3]}


@pytest.mark.parametrize("options, message", [
    ({"top": 0}, "^top must be at least 1, got 0"),
    ({"top": 7}, "^top 7: layer relu2 has only 6 channels"),
    ({"classes": "nope"}, "^unknown class label 'nope'"),
    ({"layer": "fc"}, "^layer fc: outputs"),
    ({"layer": "missing"}, "^unknown layer 'missing'"),
])
def test_bad_input_is_refused_before_any_work(tiny_model, options, message):
    with pytest.raises(InputError, match=message):
        explain(tiny_model, torch.randn(1, 3, 16, 16), **{"layer": "relu2", **options})


# -- the command, the files, the cache ---------------------------------------------------------------------
def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_writes_the_figure_and_the_json_and_reuses_the_filter_pictures(capsys, tmp_path, monkeypatch,
                                                                                    default_model):
    out = tmp_path / "out"
    code, text, err = _run(capsys, "explain", "sample:chelsea", "--top", "3", "--filters-steps", "2", "--out", str(out))
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].startswith("sample:chelsea: class 285 Egyptian cat, score ") and "layer _act1" in lines[0]
    assert [line.split()[0] for line in lines[2:7]] == ["for", "for", "for", "against", "against"]
    data = json.loads((out / "explain" / "chelsea_285.json").read_text())
    assert {"layer", "class", "score", "total_contribution", "channels", "top", "against"} <= set(data)
    assert data["layer"] == "_act1" and data["class"] == 285 and data["filter_layer"] == "_conv_head"
    assert len(data["channels"]) == 1280 and set(data["channels"][0]) == {"index", "contribution", "share", "peak"}
    contributions = [c["contribution"] for c in data["channels"]]
    assert contributions == sorted(contributions, reverse=True)
    assert sum(contributions) == pytest.approx(data["total_contribution"], rel=1e-4)
    # EfficientNet: _act1 -> global average pooling -> dropout -> linear, so the total is the score less the bias
    bias = float(default_model.module._fc.bias[285].detach())
    assert data["total_contribution"] == pytest.approx(data["score"] - bias, abs=1e-3)
    from PIL import Image

    figure = Image.open(out / "explain" / "chelsea_285.png")
    assert figure.width == 1000 and figure.height > 900  # the header and five rows
    pictures = list((out / "filters").glob("*/_conv_head/*.png"))
    assert sorted(int(p.stem) for p in pictures) == sorted(data["top"] + data["against"])

    from convscope.presentation import filter_cache

    monkeypatch.setattr(filter_cache, "draw_filters", lambda *a, **k: pytest.fail("recomputed"))
    code, text, err = _run(capsys, "explain", "sample:chelsea", "--top", "3", "--filters-steps", "2", "--out",
                           str(out), "--json")
    assert code == 0, err
    (again,) = json.loads(text)
    assert again["channels"] == data["channels"] and again["image"] == "sample:chelsea"


@pytest.mark.parametrize("argv, fragments", [
    (["--top", "0"], ["--top", "at least 1"]),
    (["--top", "1281"], ["--top 1281: layer _act1 has only 1280 channels"]),
    (["--class", "nope"], ["unknown class label 'nope'"]),
    (["--layer", "nope"], ["unknown layer 'nope'"]),
    (["--layer", "_fc"], ["--layer _fc: outputs [1000], not a C x H x W feature map"]),
])
def test_bad_input_is_one_line_exit_2_before_any_work(capsys, tmp_path, argv, fragments):
    out = tmp_path / "out"
    code, text, err = _run(capsys, "explain", "sample:coffee", "--out", str(out), *argv)
    assert code == 2 and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_in_a_notebook_the_figure_and_the_table(tiny_model):
    from PIL import Image

    found = convscope.explain(tiny_model, torch.rand(1, 3, 16, 16), classes=[0, 3], layer="relu2", top=2,
                              filters_steps=1)
    assert isinstance(found, convscope.Explanations) and [e.class_index for e in found] == [0, 3]
    assert found[0].table[0]["rank"] == 1 and len(found[0].table) == 6
    assert set(found.pictures()) == {c.index for e in found for c in e.shown}
    assert all(isinstance(p, Image.Image) for p in found.pictures().values())
    html = found._repr_html_()
    assert html.count("<img") == 2 and html.count("<table>") == 2 and "relu2" in html


# -- it must be true: zeroing the top channels --------------------------------------------------------------
def test_score_without_zeroes_the_channels_by_hand(square_model):
    state = ModelState.of(square_model.module)
    # class 1 is linear: zeroing channel 0 removes its contribution 4.25 from the score 1.75
    assert score_without(square_model, X, "feat", [0], 1) == pytest.approx(1.75 - 4.25)
    assert score_without(square_model, X, "feat", [0, 2], 0) == pytest.approx(14.25 - 20.25 - 10.5)
    state.assert_unchanged(square_model.module)


@pytest.mark.parametrize("layer", [None, "_blocks.10"])  # the CAM layer, and one in the middle of the network
@pytest.mark.parametrize("sample", ["chelsea", "coffee", "grace_hopper"])
def test_zeroing_the_top_channels_lowers_the_score_most(default_model, sample, layer):
    from convscope.samples import sample_array

    x = default_model.preprocess([convscope.load_image(sample_array(sample))])
    (found,) = explain(default_model, x, layer=layer, top=10)
    cls, layer = found.class_index, found.layer
    ranked = [c.index for c in found.ranked()]
    smallest = sorted(ranked, key=lambda k: abs(float(found.contributions[k])))[:10]
    drop_top = found.score - score_without(default_model, x, layer, ranked[:10], cls)
    drop_smallest = found.score - score_without(default_model, x, layer, smallest, cls)
    generator = np.random.default_rng(0)
    drops = [found.score - score_without(default_model, x, layer, generator.choice(len(ranked), 10, replace=False),
                                         cls) for _ in range(20)]
    assert drop_top > drop_smallest and drop_top > float(np.median(drops))
    if layer is None:  # linear from _act1 to the score: the drop is exactly the sum of the contributions
        assert drop_top == pytest.approx(sum(float(found.contributions[k]) for k in ranked[:10]), rel=0.05)


def test_no_share_of_a_total_that_is_not_positive(square_model):
    x = -X.abs()  # every activation negative: class 1's contributions v_k sum A_k sum to a negative total
    (found,) = explain(square_model, x, classes="linear", layer="feat", top=1)
    assert found.total < 0 and all(c.share is None for c in found.ranked())


def test_the_pictures_of_a_layer_that_is_not_a_conv_are_the_conv_under_it(default_model, vgg19_random):
    from convscope.presentation.filter_cache import filter_layer

    assert filter_layer(default_model, "_act1") == "_conv_head"
    assert filter_layer(default_model, "_blocks.10") == "_blocks.10._project_conv"
    assert filter_layer(vgg19_random, "block5_pool") == "block5_conv4"  # its Keras name
    assert filter_layer(vgg19_random, "block4_conv1") == "block4_conv1"
