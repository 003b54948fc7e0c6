"""Precision: ``auto`` measured and never slower than fp32, ``fp32`` without TF32 inside convscope's
calls (the caller's settings restored), ``tf32`` only where it exists."""

from __future__ import annotations

import pytest
import torch

import convscope
import convscope.precision as precision_module
from convscope.errors import InputError
from convscope.precision import choose_precision


def test_fp32_means_no_tf32_inside_and_the_callers_settings_after(tiny_model):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tiny_model.all_layers(), tiny_model.num_outputs  # found once, before: shapes only
    seen = []
    handle = tiny_model.module.conv1.register_forward_pre_hook(
        lambda m, i: seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)))
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the user's choice
        convscope.cam(tiny_model, torch.randn(1, 3, 16, 16), precision="fp32")
        convscope.filters(tiny_model, "conv1", 1, steps=1, size=16, precision="fp32")
        tiny_model.predict(torch.randn(1, 3, 16, 16), top=1)
        assert seen and all(flags == (False, False) for flags in seen)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        handle.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_only_on_gpus_that_have_it(tiny_model):
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        pytest.skip("this machine has a GPU with TF32")
    with pytest.raises(InputError, match="^precision tf32 needs a CUDA GPU of compute capability 8.0 or newer"):
        convscope.cam(tiny_model, torch.randn(1, 3, 16, 16), precision="tf32")


@pytest.mark.parametrize("bf16_seconds, expected, reason", [
    (0.01, "bf16", "auto: bf16 measured 2.0x faster than fp32 here"),
    (0.04, "fp32", "auto: fp32, bf16 measured 2.0x its time here"),
    (0.019, "fp32", "auto: fp32, bf16 measured only 1.05x faster here"),  # not worth its lower precision
])
def test_auto_measures_and_never_picks_a_slower_precision(monkeypatch, bf16_seconds, expected, reason):
    monkeypatch.setattr(precision_module, "candidates", lambda device: ["fp32", "bf16"])
    now = [0.0]  # a clock of the test's own: work takes exactly its seconds, whatever the machine's load
    monkeypatch.setattr(precision_module, "_clock", lambda: now[0])
    calls = []

    def work(option: str) -> None:
        calls.append(option)
        now[0] += 0.02 if option == "fp32" else bf16_seconds

    module = torch.nn.Linear(1, 1)
    assert choose_precision("auto", module, torch.device("cpu"), "key", work) == (expected, reason)
    assert calls == ["fp32", "fp32", "fp32", "bf16", "bf16", "bf16"]  # a warm-up and the best of two each
    assert choose_precision("auto", module, torch.device("cpu"), "key", work) == (expected, reason)
    assert len(calls) == 6  # remembered for this module, device and work
    assert choose_precision("fp32", module, torch.device("cpu"), "key", work) == ("fp32", "as asked")


def test_auto_on_hardware_without_fast_bf16_is_fp32(monkeypatch, tiny_model):
    monkeypatch.setattr(precision_module, "has_fast_bf16", lambda device: False)
    result = convscope.compute_cam(tiny_model, torch.randn(1, 3, 16, 16), precision="auto")
    assert (result.precision, result.precision_reason) == ("fp32", "auto: no faster precision on cpu")
