"""On a CUDA GPU (skipped elsewhere, e.g. in CI): fp32 means fp32 there too -- maps match the CPU's
even with the user's TF32 switched on -- and every precision runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convscope

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def _vgg_like() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(256, 10)).eval()


def test_fp32_maps_on_the_gpu_match_the_cpu_with_tf32_switched_on():
    x = torch.randn(8, 3, 64, 64)
    cpu = convscope.cam(convscope.load_model(_vgg_like(), input_size=64), x, [1] * 8, layer="4")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        gpu = convscope.cam(convscope.load_model(_vgg_like().cuda(), input_size=64, device="cuda"), x.cuda(),
                            [1] * 8, layer="4")
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    torch.testing.assert_close(gpu.cpu().as_subclass(torch.Tensor), cpu.as_subclass(torch.Tensor), atol=1e-4, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "auto"])
def test_every_precision_runs_on_the_gpu(precision, model_state):
    net = _vgg_like().cuda()
    before = model_state(net)
    model = convscope.load_model(net, input_size=64, device="cuda")
    result = convscope.compute_cam(model, torch.randn(4, 3, 64, 64, device="cuda"), precision=precision)
    assert result.maps.shape == (4, 64, 64) and result.maps.is_cuda
    images, scores = convscope.filters(model, "0", 4, steps=2, size=32, precision=precision)
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(scores).all()
    before.assert_unchanged(net)


def test_many_calls_give_the_allocated_memory_back():
    """cam and filters, called again and again, leave CUDA's allocated memory where it started."""
    model = convscope.load_model(_vgg_like().cuda(), input_size=64, device="cuda")
    x = torch.randn(2, 3, 64, 64, device="cuda")

    def calls() -> None:
        convscope.cam(model, x, [1, 2], layer="4")
        convscope.filters(model, "0", filters=2, steps=2, size=32)

    calls()  # warm-up: cuDNN's workspaces and the precision measured once
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    for _ in range(200):
        calls()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= start
