"""Vision transformers against pytorch-grad-cam (1.5.7) with its documented ``reshape_transform``s, random
weights (seeded), the layer its tutorials choose (the last block's first norm, which is convscope's
default): Grad-CAM and LayerCAM maps within 1e-4. timm's models where timm is installed (the test extras)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm

import convscope
from convscope.samples import sample_array
from convscope.techniques.cams import compute_cam

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

PEERS = {"gradcam": "GradCAM", "layercam": "LayerCAM"}


def vit_reshape_transform(prefix: int, height: int, width: int):
    """pytorch-grad-cam's ViT tutorial's transform (``tensor[:, 1:, :]``), for ``prefix`` leading tokens."""
    def transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return transform


def channels_last_transform(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's Swin transform for B x H x W x C outputs."""
    return tensor.permute(0, 3, 1, 2)


def _compare(net, layer_module, transform, method, size=224):
    model = convscope.load_model(net, input_size=size)
    x = torch.nn.functional.interpolate(model.preprocess([sample_array("chelsea")]), size=(size, size),
                                        mode="bilinear")
    ours = compute_cam(model, x, 3, None, method)
    assert model.submodule(ours.layer) is layer_module  # convscope's default: the tutorials' layer
    with getattr(pytorch_grad_cam, PEERS[method])(model=net, target_layers=[layer_module],
                                                   reshape_transform=transform) as extractor:
        theirs = extractor(input_tensor=x.clone(), targets=[ClassifierOutputTarget(3)])
    net.zero_grad(set_to_none=True)
    assert float(ours.maps.max()) > 0
    torch.testing.assert_close(ours.maps, torch.from_numpy(np.asarray(theirs, dtype=np.float32)), atol=1e-4, rtol=0)


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


@pytest.mark.parametrize("method", list(PEERS))
def test_torchvision_vit_b_16(method):
    net = _seeded(lambda: tvm.vit_b_16(weights=None))
    with torch.no_grad():  # torchvision starts the head at zero: every map would be empty
        net.heads.head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    _compare(net, net.encoder.layers.encoder_layer_11.ln_1, vit_reshape_transform(1, 14, 14), method)


@pytest.mark.parametrize("method", list(PEERS))
def test_torchvision_swin_t(method):
    net = _seeded(lambda: tvm.swin_t(weights=None))
    _compare(net, net.features[7][1].norm1, channels_last_transform, method)


TIMM = {  # model -> (its last block's first norm, leading tokens, patch grid, input size)
    "vit_tiny_patch16_224": (lambda net: net.blocks[-1].norm1, 1, 14, 224),
    "deit_tiny_distilled_patch16_224": (lambda net: net.blocks[-1].norm1, 2, 14, 224),  # class + distillation
    "vit_small_patch14_reg4_dinov2": (lambda net: net.blocks[-1].norm1, 5, 16, 224),  # class + 4 registers
    "swin_tiny_patch4_window7_224": (lambda net: net.layers[-1].blocks[-1].norm1, 0, 7, 224),
}


@pytest.mark.parametrize("method", list(PEERS))
@pytest.mark.parametrize("name", list(TIMM))
def test_timm_transformers(name, method):
    timm = pytest.importorskip("timm")
    layer, prefix, grid, size = TIMM[name]
    options = {"img_size": size} if "dinov2" in name else {}
    net = _seeded(lambda: timm.create_model(name, pretrained=False, num_classes=5, **options))
    transform = channels_last_transform if "swin" in name else vit_reshape_transform(prefix, grid, grid)
    _compare(net, layer(net), transform, method, size)


@pytest.mark.parametrize("method", list(PEERS))
def test_torchvision_maxvit_t(method):
    """MaxViT's blocks already output B x C x H x W: no view, its default layer the last block's output."""
    net = _seeded(lambda: tvm.maxvit_t(weights=None))
    _compare(net, net.blocks[-1], None, method)
