"""Faithfulness metrics against values computed by hand on a tiny model, and the sanity check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import convscope
from convscope import metrics
from convscope.errors import InputError

W = np.array([[2.0, -1.0], [-1.0, 1.5], [0.5, 0.5]])
B = np.array([0.1, 0.0, -0.2])


class MeanNet(nn.Module):
    """logits = W @ mean over pixels of the first two input channels + b (channel 2 is ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.pick = nn.Conv2d(3, 2, 1, bias=False)
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.pick.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.head.weight.copy_(torch.tensor(W))
            self.head.bias.copy_(torch.tensor(B))

    def forward(self, x):
        return self.head(self.pick(x).mean(dim=(2, 3)))


def p_by_hand(image: np.ndarray, cls: int) -> float:
    logits = W @ image[:2].mean(axis=(1, 2)) + B
    return float(np.exp(logits[cls]) / np.exp(logits).sum())


@pytest.fixture
def mean_model():
    return convscope.load_model(MeanNet(), input_size=2, mean=(0.25, 0.5, 0.0), std=(0.5, 0.25, 1.0))


X = np.array([[[1.0, -2.0], [3.0, 0.5]], [[2.0, 1.0], [-1.0, 4.0]], [[7.0, 7.0], [7.0, 7.0]]])


def test_deletion_curve_and_auc_by_hand(mean_model):
    x = torch.tensor(X[None], dtype=torch.float32)
    heat = torch.tensor([[[0.2, 0.9], [0.2, 0.5]]])  # order: (0,1), (1,1), then the tie (0,0) before (1,0)
    black = np.array([(0 - 0.25) / 0.5, (0 - 0.5) / 0.25, 0.0])[:, None, None] * np.ones((3, 2, 2))
    steps = 4  # one pixel per step
    expected, image = [], X.copy()
    for changed in [None, (0, 1), (1, 1), (0, 0), (1, 0)]:
        if changed is not None:
            image[:, changed[0], changed[1]] = black[:, changed[0], changed[1]]
        expected.append(p_by_hand(image, 1))
    curve = metrics.curves(mean_model, x, heat, [1], "deletion", steps=steps)
    np.testing.assert_allclose(curve[0].numpy(), expected, atol=1e-6)
    assert float(metrics.deletion(mean_model, x, heat, [1], steps=steps)[0]) == pytest.approx(
        (sum(expected) - (expected[0] + expected[-1]) / 2) / steps, abs=1e-6)
    # two steps: t * 4 // 2 = 0, 2, 4 pixels
    two = metrics.curves(mean_model, x, heat, [1], "deletion", steps=2)
    np.testing.assert_allclose(two[0].numpy(), [expected[0], expected[2], expected[4]], atol=1e-6)


def test_insertion_starts_from_the_blurred_input(mean_model):
    x = torch.tensor(X[None], dtype=torch.float32)
    offsets = np.arange(11) - 5
    kernel = np.exp(-offsets ** 2 / 50.0)
    kernel /= kernel.sum()
    blurred = np.zeros_like(X)
    for c in range(3):
        for i in range(2):
            for j in range(2):  # zero padding: only the image's own pixels contribute
                blurred[c, i, j] = sum(kernel[5 + (a - i)] * kernel[5 + (b - j)] * X[c, a, b]
                                       for a in range(2) for b in range(2))
    np.testing.assert_allclose(metrics.blurred(x)[0].numpy(), blurred, atol=1e-6)
    heat = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])  # order: (1,1), (1,0), (0,1), (0,0)
    expected, image = [p_by_hand(blurred, 2)], blurred.copy()
    for i, j in [(1, 1), (1, 0), (0, 1), (0, 0)]:
        image[:, i, j] = X[:, i, j]
        expected.append(p_by_hand(image, 2))
    np.testing.assert_allclose(metrics.curves(mean_model, x, heat, [2], "insertion", steps=4)[0].numpy(),
                               expected, atol=1e-6)


def test_average_drop_and_increase_by_hand(mean_model):
    x = torch.tensor(np.stack([X, X[:, ::-1].copy()]), dtype=torch.float32)
    maps = torch.tensor([[[1.0, 0.0], [0.5, 0.25]], [[0.0, 1.0], [1.0, 1.0]]])
    for cls in range(3):
        drops, increases = [], []
        for image, heat in zip(x.numpy(), maps.numpy()):
            y, o = p_by_hand(image, cls), p_by_hand(image * heat[None], cls)
            drops.append(100 * max(0.0, y - o) / y)
            increases.append(100.0 * (o > y))
        np.testing.assert_allclose(metrics.average_drop(mean_model, x, maps, [cls, cls]).numpy(), drops, atol=1e-4)
        np.testing.assert_allclose(metrics.increase_in_confidence(mean_model, x, maps, [cls, cls]).numpy(), increases)


def test_pointing_game_by_hand():
    heat = torch.zeros(1, 4, 4)
    heat[0, 1, 2] = 1.0
    heat[0, 3, 0] = 0.5
    heat[0, 0, 0] = 0.5
    hit, energy = metrics.pointing(heat, [[[4, 2, 6, 4]]], photo_sizes=[(8, 8)])  # holds pixel (1, 2): centre (5, 3)
    assert hit.tolist() == [True] and energy.tolist() == [pytest.approx(1.0 / 2.0)]
    miss, energy = metrics.pointing(heat, [[[0, 0, 2, 2], [0, 6, 2, 8]]], photo_sizes=[(8, 8)])
    assert miss.tolist() == [False] and energy.tolist() == [pytest.approx(1.0 / 2.0)]  # both 0.5s, not the max
    plateau = torch.ones(1, 2, 2)
    assert metrics.pointing(plateau, [[[0, 0, 0.6, 0.6]]])[0].tolist() == [True]  # any pixel of a plateau
    empty = metrics.pointing(torch.zeros(1, 2, 2), [[[0, 0, 2, 2]]])
    assert empty[0].tolist() == [False] and empty[1].tolist() == [0.0]  # an empty map is a miss


def test_boxes_are_checked():
    assert metrics.check_box([1, 2, 3, 4], (10, 10), "cat.jpg 285") == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(InputError, match=r"^boxes: cat.jpg 285: box \[0, 0, 20, 5\] is not inside the 10x10 photo"):
        metrics.check_box([0, 0, 20, 5], (10, 10), "cat.jpg 285")
    with pytest.raises(InputError, match="a box is"):
        metrics.check_box([0, 0, 1], (10, 10), "x")


def test_spearman_and_ssim():
    a = torch.tensor([[0.0, 0.2], [0.4, 1.0]])
    assert metrics.spearman(a, a * 0.5 + 0.1) == pytest.approx(1.0)
    assert metrics.spearman(a, 1 - a) == pytest.approx(-1.0)
    assert metrics.spearman(a, torch.zeros(2, 2)) == 0.0  # a constant map: no rank order
    assert metrics.ssim(a.repeat(4, 4), a.repeat(4, 4)) == pytest.approx(1.0)


def test_sanity_cascade_on_a_copy(tiny, model_state):
    before = model_state(tiny)
    model = convscope.load_model(tiny, input_size=16)
    x = torch.randn(2, 3, 16, 16)
    assert [stage for stage, _ in metrics.randomization_cascade(model, "relu2")] == [
        "classifier", "stage 2 (8x8)", "stage 1 (16x16)"]
    assert dict(metrics.randomization_cascade(model, "relu2"))["stage 2 (8x8)"] == ["conv2", "bn"]

    def cam(m, inputs, classes):
        return convscope.compute_cam(m, inputs, classes, layer="relu2", method="gradcam").maps

    results = metrics.sanity(model, x, [1, 2], cam, "relu2", seeds=1)  # the one randomization done by hand below
    before.assert_unchanged(tiny)  # the user's model is never randomized
    trained = cam(model, x, [1, 2])
    copied = tiny_copy_randomized(tiny, [["fc"]])
    by_hand = cam(convscope.load_model(copied, input_size=16), x, [1, 2])
    for index, result in enumerate(results):
        assert result.stages[0] == "classifier" and len(result.spearman) == 3
        assert result.spearman[0] == pytest.approx(metrics.spearman(trained[index], by_hand[index]))
        assert result.passed == (result.spearman[0] < 0.5)
    eigen = metrics.sanity(model, x, [1, 2], lambda m, i, c: convscope.compute_cam(
        m, i, c, layer="relu2", method="eigencam").maps, "relu2")
    assert all(r.spearman[0] == pytest.approx(1.0) and not r.passed for r in eigen)  # it ignores the classifier


def tiny_copy_randomized(module: nn.Module, steps: list[list[str]]) -> nn.Module:
    import copy

    copied = copy.deepcopy(module)
    for number, paths in enumerate(steps):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(number)
            for path in paths:
                copied.get_submodule(path).reset_parameters()
    return copied


def test_maps_of_the_wrong_shape_are_refused(mean_model):
    with pytest.raises(InputError, match=r"^maps: expected 1 x 2 x 2"):
        metrics.deletion(mean_model, torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 3), [0])
    assert math.isclose(float(metrics.auc(torch.tensor([1.0, 0.5, 0.0]))), 0.5)
