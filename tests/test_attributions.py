"""Pixel attributions: every method against values written out by hand on a tiny ReLU6 network, the
backward rules on every spelling of a ReLU-like unit, the model left untouched, the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convscope
from conftest import assert_usage_errors
from convscope.catalog import ATTRIBUTION_METHOD_NAMES
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.samples import sample_array
from convscope.techniques.attributions import METHODS, attribute, attribution_settings, gauss_legendre
from convscope.techniques.backward_rules import backward_rule

SCALE = np.array([1.0, -2.0, 0.5])  # the 1x1 depthwise conv: h_c = ReLU6(a_c x_c)
V = np.array([[1.0, -0.5, 2.0], [-1.0, 1.5, 0.25]])  # the head: Y_k = sum_c v_kc mean(h_c) + b_k
B = np.array([0.2, -0.1])
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.5, 1.0)
X = np.array([[[0.5, 7.0, -1.0], [2.0, 3.0, 0.1], [-0.2, 6.5, 1.0]],
              [[-1.0, 0.5, -4.0], [1.0, -0.1, -2.0], [0.2, -3.5, 2.0]],
              [[4.0, 13.0, -2.0], [1.0, 0.0, 6.0], [11.0, 2.0, -1.0]]])


class PixelNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Conv2d(3, 3, 1, groups=3, bias=False)
        self.act = nn.ReLU6()
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.scale.weight.copy_(torch.tensor(SCALE).view(3, 1, 1, 1))
            self.head.weight.copy_(torch.tensor(V))
            self.head.bias.copy_(torch.tensor(B))

    def forward(self, x):
        return self.head(self.act(self.scale(x)).mean(dim=(2, 3)))


def scores_by_hand(x: np.ndarray) -> np.ndarray:
    h = np.clip(SCALE[:, None, None] * x, 0, 6)
    return V @ h.mean(axis=(1, 2)) + B


def gradient_by_hand(x: np.ndarray, cls: int, rule: str | None = None) -> np.ndarray:
    """dY/dx_cij = a_c * r_c * [0 < a_c x_cij < 6], r_c = v_kc / 9 the gradient reaching the unit."""
    g = np.zeros_like(x)
    for c in range(3):
        r = V[cls, c] / 9
        for i in range(3):
            for j in range(3):
                open_ = 0.0 < SCALE[c] * x[c, i, j] < 6.0
                if rule == "guided":
                    g[c, i, j] = SCALE[c] * max(r, 0.0) * open_
                elif rule == "deconvolution":
                    g[c, i, j] = SCALE[c] * max(r, 0.0)
                else:
                    g[c, i, j] = SCALE[c] * r * open_
    return g


def attribution_by_hand(method: str, cls: int) -> np.ndarray:
    baseline = np.array([(0 - m) / s for m, s in zip(MEAN, STD)])[:, None, None] * np.ones_like(X)
    if method == "saliency":
        return np.abs(gradient_by_hand(X, cls))
    if method == "inputxgradient":
        return X * gradient_by_hand(X, cls)
    if method == "guidedbackprop":
        return gradient_by_hand(X, cls, "guided")
    if method == "deconvolution":
        return gradient_by_hand(X, cls, "deconvolution")
    if method == "guidedgradcam":  # Grad-CAM at the ReLU6: w_c = v_kc / 9, the 3x3 map needs no upsampling
        h = np.clip(SCALE[:, None, None] * X, 0, 6)
        cam = np.maximum(sum(V[cls, c] / 9 * h[c] for c in range(3)), 0)
        return gradient_by_hand(X, cls, "guided") * cam[None]
    if method == "integratedgradients":
        nodes, weights = np.polynomial.legendre.leggauss(50)
        total = sum(0.5 * w * gradient_by_hand(baseline + 0.5 * (n + 1) * (X - baseline), cls)
                    for n, w in zip(nodes, weights))
        return (X - baseline) * total
    if method == "smoothgrad":  # 50 copies, noise 0.15 x the image's range, from the seed-0 generator
        generator = torch.Generator().manual_seed(0)
        spread = 0.15 * (X.max() - X.min())
        copies = [X + (torch.randn((3, 3, 3), generator=generator) * spread).numpy() for _ in range(50)]
        return sum(np.abs(gradient_by_hand(c.astype(np.float32), cls)) for c in copies) / 50
    if method == "occlusion":  # window 2, stride 1 (set in the test): squares at (0, 0), (0, 1), (1, 0), (1, 1)
        total, counts = np.zeros_like(X), np.zeros((3, 3))
        for top in (0, 1):
            for left in (0, 1):
                occluded = X.copy()
                occluded[:, top:top + 2, left:left + 2] = baseline[:, top:top + 2, left:left + 2]
                total[:, top:top + 2, left:left + 2] += scores_by_hand(X)[cls] - scores_by_hand(occluded)[cls]
                counts[top:top + 2, left:left + 2] += 1
        return total / counts
    raise AssertionError(method)


@pytest.fixture
def pixel_model():
    return convscope.load_model(PixelNet(), input_size=3, mean=MEAN, std=STD, labels=["a", "b"])


def test_the_catalog_names_every_registered_method():
    assert tuple(METHODS) == ATTRIBUTION_METHOD_NAMES


@pytest.mark.parametrize("method", ATTRIBUTION_METHOD_NAMES)
@pytest.mark.parametrize("cls", [0, 1])
def test_every_method_matches_the_hand_computation(pixel_model, method, cls, model_state):
    before = model_state(pixel_model.module)
    options = {"window": 2, "stride": 1} if method == "occlusion" else {}
    result = attribute(pixel_model, torch.tensor(X[None], dtype=torch.float32), cls, method, **options)
    np.testing.assert_allclose(result.attributions[0].numpy(), attribution_by_hand(method, cls), rtol=1e-4,
                               atol=1e-6)
    assert result.classes == [cls] and result.method == method
    before.assert_unchanged(pixel_model.module)


def test_the_hand_cases_are_not_trivial():
    """The input reaches all three regions of ReLU6 and both signs of the upstream gradient, so
    guided backprop, deconvolution and the plain gradient all differ."""
    plain, guided, deconv = (gradient_by_hand(X, 1, rule) for rule in (None, "guided", "deconvolution"))
    assert not np.allclose(plain, guided) and not np.allclose(guided, deconv) and not np.allclose(plain, deconv)
    h = SCALE[:, None, None] * X
    assert (h >= 6).any() and (h <= 0).any() and ((h > 0) & (h < 6)).any()


def test_integrated_gradients_reports_its_completeness_gap(pixel_model):
    x = torch.tensor(X[None], dtype=torch.float32)
    result = attribute(pixel_model, x, 0, "integratedgradients", steps=64)
    baseline = np.array([(0 - m) / s for m, s in zip(MEAN, STD)])[:, None, None] * np.ones_like(X)
    expected = result.attributions.sum().item() - (scores_by_hand(X)[0] - scores_by_hand(baseline)[0])
    assert result.gap is not None and result.gap[0].item() == pytest.approx(expected, abs=1e-5)
    nodes, weights = gauss_legendre(2)
    assert nodes == pytest.approx([0.5 - 0.5 / 3 ** 0.5, 0.5 + 0.5 / 3 ** 0.5]) and weights == pytest.approx([0.5, 0.5])


class Functional(nn.Module):
    """Every spelling of a ReLU-like unit: each one's guided gradient must differ from the plain one."""

    def __init__(self, spelling: str) -> None:
        super().__init__()
        self.spelling = spelling
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        a = self.conv(x)
        units = {"nn.ReLU": lambda t: nn.ReLU()(t), "nn.ReLU(inplace)": lambda t: nn.ReLU(inplace=True)(t),
                 "nn.ReLU6": lambda t: nn.ReLU6()(t), "F.relu": F.relu, "torch.relu": torch.relu,
                 "Tensor.relu": lambda t: t.relu(), "F.relu_": lambda t: F.relu(t, inplace=True),
                 "F.relu6": F.relu6, "clamp": lambda t: t.clamp(min=0), "F.hardtanh": lambda t: F.hardtanh(t, 0.0, 6.0)}
        return self.head(units[self.spelling](a).mean(dim=(2, 3)))


@pytest.mark.parametrize("spelling", ["nn.ReLU", "nn.ReLU(inplace)", "nn.ReLU6", "F.relu", "torch.relu",
                                      "Tensor.relu", "F.relu_", "F.relu6", "clamp", "F.hardtanh"])
def test_the_guided_rule_reaches_every_spelling_of_a_relu(spelling):
    torch.manual_seed(0)
    net = Functional(spelling).eval()
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    plain = torch.autograd.grad(net(x)[0, 1], x)[0]
    with backward_rule("guided"):
        guided = torch.autograd.grad(net(x)[0, 1], x)[0]
    # by hand: the gradient reaching the unit, its positive part where the unit is open, back through the conv
    a = net.conv(x).detach().requires_grad_(True)
    high = 6.0 if spelling in ("nn.ReLU6", "F.relu6", "F.hardtanh") else float("inf")
    upstream = net.head.weight[1].detach()[None, :, None, None].expand_as(a) / 36
    open_ = ((a > 0) & (a < high)).float()
    (expected,) = torch.autograd.grad(net.conv(x), x, grad_outputs=upstream.clamp(min=0) * open_)
    torch.testing.assert_close(guided, expected)
    assert not torch.allclose(guided, plain)


def test_units_without_a_rule_are_refused_in_one_line():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model = convscope.load_model(net, input_size=8, labels=["a", "b"])
    with pytest.raises(InputError, match="method guidedbackprop: the model uses SiLU"):
        attribute(model, torch.randn(1, 3, 8, 8), 0, "guidedbackprop")
    assert attribute(model, torch.randn(1, 3, 8, 8), 0, "saliency").attributions.shape == (1, 3, 8, 8)


def test_smoothgrad_is_seeded(pixel_model):
    x = torch.tensor(X[None], dtype=torch.float32)
    first = attribute(pixel_model, x, 1, "smoothgrad", samples=4, seed=3).attributions
    assert torch.equal(first, attribute(pixel_model, x, 1, "smoothgrad", samples=4, seed=3).attributions)
    assert not torch.equal(first, attribute(pixel_model, x, 1, "smoothgrad", samples=4, seed=4).attributions)


def test_settings_are_checked(pixel_model):
    x = torch.tensor(X[None], dtype=torch.float32)
    for options, fragment in [({"method": "nope"}, "unknown"), ({"method": "occlusion", "window": 4}, "window 4"),
                              ({"method": "occlusion", "window": 2, "stride": 3}, "stride 3"),
                              ({"method": "smoothgrad", "samples": 0}, "samples"),
                              ({"method": "integratedgradients", "steps": 0}, "steps"),
                              ({"method": "smoothgrad", "sigma": 0}, "sigma")]:
        with pytest.raises(InputError, match=fragment):
            attribute(pixel_model, x, 0, **options)


def test_the_command_line_writes_each_attribution(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["attribute", "sample:coffee", "--method", "integratedgradients", "--steps", "8", "--save-raw",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "espresso" in printed and "completeness gap" in printed and "Integrated Gradients: 1 attributions" in printed
    names = sorted(p.name for p in (out / "attribute").iterdir())
    assert names == ["coffee_967_integratedgradients.npy", "coffee_967_integratedgradients_heatmap.png",
                     "coffee_967_integratedgradients_overlay.jpg"]
    raw = np.load(out / "attribute" / "coffee_967_integratedgradients.npy")
    model = convscope.load_model()
    x = model.preprocess([sample_array("coffee")])
    expected = attribute(model, x, 967, "integratedgradients", steps=8).attributions[0].numpy()
    assert raw.shape == (3, 224, 224) and raw.dtype == np.float32
    np.testing.assert_allclose(raw, expected, atol=1e-6)
    assert main(["attribute", "sample:coffee", "--method", "occlusion", "--window", "56", "--stride", "56",
                 "--top", "2", "--out", str(out)]) == 0
    assert "Occlusion: 2 attributions" in capsys.readouterr().out
    assert_usage_errors(capsys, ["attribute", "sample:coffee", "--out", str(out)], [
        (["--method", "nope"], "invalid choice"),
        (["--method", "occlusion", "--window", "300"], "--window 300: larger than the 224x224 input"),
        (["--method", "occlusion", "--window", "8", "--stride", "9"], "--stride 9: larger than the window"),
        (["--method", "smoothgrad", "--samples", "0"], "--samples must be at least 1"),
        (["--method", "integratedgradients", "--steps", "0"], "--steps must be at least 1"),
        (["--class", "1000"], "class index 1000 is out of range"),
    ])


def test_occlusion_defaults_fit_a_small_input(pixel_model):
    """The 16 px window and 8 px stride are cut to a 3 x 3 input (so `evaluate --methods all` runs on it);
    a window the user gives must fit."""
    settings = attribution_settings(pixel_model, "occlusion")
    assert (settings.window, settings.stride) == (3, 3)
    x = torch.tensor(X[None], dtype=torch.float32)
    assert torch.equal(attribute(pixel_model, x, 1, "occlusion").attributions,
                       attribute(pixel_model, x, 1, "occlusion", window=3, stride=3).attributions)
    assert attribution_settings(pixel_model, "occlusion", window=2).stride == 2
