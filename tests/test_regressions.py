"""Bugs found while giving the code its layout (issue #11), each held by a test that failed before its fix."""

from __future__ import annotations

import gc
import math
import re
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope
from conftest import tiny_net
from convscope.errors import InputError, LayerError
from convscope.hooks import record_call_order
from convscope.presentation.run import run_all
from convscope.techniques.cams import CamResult
from convscope.techniques.filter_recipes import random_transform
from convscope.techniques.filters import optimize_filters


class CifarNet(nn.Module):
    """A network that only accepts its own 32 x 32 input: conv -> ReLU -> pool -> flatten -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16 * 16, 10)
        self.forward_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


class TwoPaths(nn.Module):
    """32 px inputs take path ``small``, others path ``large``: a layer the real input may never reach."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.small = nn.Conv2d(3, 4, 3, padding=1)
        self.large = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.small(x) if x.shape[-1] == 32 else self.large(x))
        return self.head(features.mean(dim=(2, 3)))


# -- a plain module: its input size from the tensor, wrapped once ---------------------------------------
def test_plain_module_of_its_own_input_size():
    torch.manual_seed(0)
    net = CifarNet().eval()
    x = torch.randn(2, 3, 32, 32)
    outputs = convscope.activations(net, x)
    assert list(outputs) == ["conv", "pool"] and outputs["pool"].shape == (2, 4, 16, 16)
    maps = convscope.cam(net, x, [1, 2])
    assert maps.shape == (2, 32, 32)
    calls = net.forward_calls
    convscope.activations(net, x)
    assert net.forward_calls == calls + 1  # the layers are not discovered again
    alive = weakref.ref(net)
    del net
    gc.collect()
    assert alive() is None  # what convscope remembers of a module does not keep it alive


# -- a CAM layer the input never reaches ------------------------------------------------------------------
@pytest.mark.parametrize("method", list(convscope.CAM_METHODS))
def test_cam_layer_the_input_never_reaches_is_a_clear_error(method, model_state):
    net = TwoPaths().eval()
    model = convscope.load_model(net, input_size=224)  # layers found at 224 px: both paths known
    before = model_state(net)
    with pytest.raises(LayerError, match="^layer 'large' did not run in the forward pass$"):
        convscope.cam(model, torch.randn(1, 3, 32, 32), layer="large", method=method)
    before.assert_unchanged(net)
    with pytest.raises(LayerError, match="^layer 'large' did not run in the forward pass$"):
        convscope.activations(model, torch.randn(1, 3, 32, 32), "large")


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_no_hidden_forward_pass_while_the_cam_hook_is_live(method):
    """A class given by label on a fresh model: the labels (and the output count behind them, found by
    a forward pass on a dummy batch of one) are resolved before convscope's hook is registered."""
    model = convscope.load_model(tiny_net(), input_size=16)
    model.all_layers()  # layer discovery (with hooks of its own) is not what this test watches
    layer = model.module.relu2
    seen = []  # (convscope's hook live?, batch size) for every call of the CAM layer
    handle = layer.register_forward_hook(lambda m, i, o: seen.append((len(m._forward_hooks) > 1, o.shape[0])))
    try:
        convscope.compute_cam(model, torch.randn(2, 3, 16, 16), ["class 1", "class 4"], layer="relu2",
                              method=method)
    finally:
        handle.remove()
    assert [batch for live, batch in seen if live] == [2]  # only the real batch ran while hooked


def test_num_outputs_found_once():
    net = CifarNet()
    model = convscope.load_model(net, input_size=32)
    assert model.num_classes == 10 and model.num_classes == 10 and len(model.labels) == 10
    assert net.forward_calls == 1


# -- filters -----------------------------------------------------------------------------------------------
def test_filter_scoring_runs_in_batches(tiny_model):
    batches = []
    handle = tiny_model.module.register_forward_pre_hook(lambda _m, inputs: batches.append(inputs[0].shape[0]))
    try:
        optimize_filters(tiny_model, "conv2", "0-4", steps=1, size=16, batch_size=2, precision="fp32")
    finally:
        handle.remove()
    assert max(batches) == 2  # 5 filters: never more than the batch size in one forward pass


def test_filter_hooks_are_registered_once_per_batch_not_per_step(tiny_model, monkeypatch):
    tiny_model.all_layers()  # layer discovery (its own hooks) done beforehand
    counts = []
    for steps in (1, 6):
        registered = []
        original = nn.Module.register_forward_hook
        monkeypatch.setattr(nn.Module, "register_forward_hook",
                            lambda self, *a, **k: registered.append(self) or original(self, *a, **k))
        optimize_filters(tiny_model, "conv2", 2, steps=steps, size=16, precision="fp32")
        monkeypatch.undo()
        counts.append(len(registered))
    assert counts[0] == counts[1] > 0


def test_random_transform_matches_the_per_picture_formula():
    images = torch.rand(3, 3, 32, 32)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    got = random_transform(images, gens)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    pad, jitter, fine = 3, 2, 1  # 12, 8, 4 px at 128 -> 32 px
    out = 32 + 2 * pad - jitter - fine
    thetas = []
    for g in gens:
        d = torch.rand(6, generator=g).tolist()
        scale, angle = 0.9 + 0.2 * d[0], math.radians(-10 + 20 * d[1])
        sx = (round(jitter * (d[2] - 0.5)) + round(fine * (d[3] - 0.5))) * 2.0 / 32
        sy = (round(jitter * (d[4] - 0.5)) + round(fine * (d[5] - 0.5))) * 2.0 / 32
        c, s = math.cos(angle) / scale * out / 32, math.sin(angle) / scale * out / 32
        thetas.append([[c, -s, sx], [s, c, sy]])
    grid = torch.nn.functional.affine_grid(torch.tensor(thetas), [3, 3, out, out], align_corners=False)
    expected = torch.nn.functional.grid_sample(images - 0.5, grid, align_corners=False) + 0.5
    torch.testing.assert_close(got, expected)


def test_call_order_keeps_shapes_not_outputs(tiny):
    with record_call_order(tiny) as calls:
        tiny(torch.randn(1, 3, 16, 16))
    assert all(call.shape is None or isinstance(call.shape, tuple) for call in calls)
    assert {call.path: call.shape for call in calls}["fc"] == (5,)


# -- settings that mean the same everywhere ----------------------------------------------------------------
def test_cam_accepts_auto_precision(tiny_model):
    x = torch.randn(2, 3, 16, 16)
    auto = convscope.compute_cam(tiny_model, x, precision="auto")
    assert auto.precision in ("fp32", "bf16") and auto.precision_reason.startswith("auto")
    torch.testing.assert_close(auto.maps, convscope.compute_cam(tiny_model, x, precision=auto.precision).maps)


def test_a_module_is_not_silently_left_on_another_device(tiny):
    assert convscope.load_model(tiny, device="cpu").device == torch.device("cpu")
    with pytest.raises(InputError, match="^device 'meta': your module is on cpu"):
        convscope.load_model(tiny, device="meta")
    assert next(tiny.parameters()).device == torch.device("cpu")


def test_layer_error_is_not_a_key_error(tiny_model):
    assert not issubclass(LayerError, KeyError)
    with pytest.raises(LayerError) as info:
        tiny_model.layer("nope")
    assert str(info.value).startswith("unknown layer 'nope'")


# -- one scale for every picture of a map --------------------------------------------------------------------
def test_heatmap_is_min_max_scaled_like_the_overlay(tmp_path, monkeypatch):
    import convscope.presentation.writers as writers

    drawn = []
    monkeypatch.setattr(writers, "heatmap_png", lambda values, title: drawn.append(values) or b"png")
    low = torch.tensor([[[0.5, 1.0], [2.0, 3.0]]])  # all positive: min-max differs from dividing by the peak
    result = CamResult(torch.zeros(1, 4, 4), low, [1], "conv2", "gradcam", torch.zeros(1, 5))
    writers.write_cam_files(result, [0], [Image.new("RGB", (4, 4))], ["photo"], list("abcde"), tmp_path,
                            alpha=0.4, save_raw=False)
    np.testing.assert_allclose(drawn[0], [[0.0, 0.2], [0.6, 1.0]])


# -- the report ----------------------------------------------------------------------------------------------
def test_report_filter_chooser_for_unordered_indices_and_no_argv(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["pytest", "--not-a-convscope-flag"])
    model = convscope.load_model(tiny_net(), input_size=16, labels=list("abcde"))
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    html = run_all(model, [photo], ["p.png"], tmp_path / "out", filters_steps=1, filters_count="3,1-2",
                   say=lambda line: None).read_text()
    chooser = re.search(r'data-layer="conv1">\s*<label>Filter <input type="number" min="(\d+)" max="(\d+)" '
                        r'value="(\d+)"', html)
    assert chooser.groups() == ("1", "3", "3")
    assert "3 filters (indices 1&ndash;3)" not in html and "3 filters (indices 3, 1, 2)" in html
    assert "--not-a-convscope-flag" not in html and "called from Python" in html
