"""Each target against pytorch-grad-cam's own target (1.5.7) on the same torchvision model, random
weights (seeded), the same input and layer: Grad-CAM and LayerCAM maps within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

import convscope
from convscope.samples import sample_array
from convscope.targets import TargetOptions, region_mask
from convscope.techniques.cams import compute_cam

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    SemanticSegmentationTarget,
)

PEERS = {"gradcam": "GradCAM", "layercam": "LayerCAM"}
SIZE = 128


class SimilarityToConceptTarget:
    """pytorch-grad-cam's embeddings tutorial ("Pixel attribution for embeddings") defines this target
    in the notebook, not the package: the cosine similarity of the output to a concept's features."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return torch.nn.CosineSimilarity(dim=0)(model_output, self.features)


class SegmentationModelOutputWrapper(nn.Module):
    """pytorch-grad-cam's segmentation tutorial: the model's ``out`` only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


def _photos(model, names=("chelsea", "coffee")):
    return model.preprocess([sample_array(name) for name in names])


def _peer(module, layer_module, x, targets, method):
    with getattr(pytorch_grad_cam, PEERS[method])(model=module, target_layers=[layer_module]) as extractor:
        maps = extractor(input_tensor=x.clone(), targets=targets)
    module.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))


@pytest.mark.parametrize("method", list(PEERS))
@pytest.mark.parametrize("target, peer_target", [("softmax", ClassifierOutputSoftmaxTarget),
                                                 ("rest", ClassifierOutputReST)])
def test_class_targets(target, peer_target, method):
    net = _seeded(lambda: tvm.resnet18(weights=None))
    model = convscope.load_model(net, input_size=SIZE, target=target)
    x = _photos(model)
    classes = [3, 7]
    ours = compute_cam(model, x, classes, "layer4", method)
    theirs = _peer(net, net.layer4, x, [peer_target(c) for c in classes], method)
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", list(PEERS))
def test_multilabel_maps_every_class_above_the_threshold(method):
    net = _seeded(lambda: tvm.resnet18(weights=None, num_classes=6))
    model = convscope.load_model(net, input_size=SIZE, multilabel=True)
    x = _photos(model, ("chelsea",))
    chosen = [p.index for p in model.predict(x, top=1)[0] if p.chosen]
    with torch.no_grad():
        assert chosen == sorted((net(x)[0].sigmoid() > 0.5).nonzero()[:, 0].tolist(),
                                key=lambda c: -float(net(x)[0, c]))
    assert len(chosen) >= 2
    ours = compute_cam(model, x, chosen, "layer4", method)
    theirs = _peer(net, net.layer4, x.expand(len(chosen), -1, -1, -1), [ClassifierOutputTarget(c) for c in chosen],
                   method)
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)


SEGMENTERS = {
    "lraspp_mobilenet_v3_large": lambda net: net.backbone["16"],
    "deeplabv3_mobilenet_v3_large": lambda net: net.backbone["16"],
    "fcn_resnet50": lambda net: net.backbone.layer4,
}


@pytest.mark.parametrize("method", list(PEERS))
@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_segmentation_equals_semantic_segmentation_target(name, method):
    """The region: the pixels the model assigns to the class, as the tutorial's mask; the default layer is
    the one the tutorial hooks (the backbone's last stage)."""
    net = _seeded(lambda: tvm.segmentation.__dict__[name](weights=None, weights_backbone=None))
    model = convscope.load_model(net, input_size=SIZE)
    x = _photos(model, ("chelsea",))
    ours = compute_cam(model, x, None, None, method)
    assert model.submodule(ours.layer) is SEGMENTERS[name](net)
    with torch.no_grad():
        mask = (net(x)["out"][0].argmax(dim=0) == ours.classes[0]).float().numpy()
    assert mask.any()
    theirs = _peer(SegmentationModelOutputWrapper(net), SEGMENTERS[name](net), x,
                   [SemanticSegmentationTarget(ours.classes[0], mask)], method)
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)


def test_segmentation_over_a_box_equals_semantic_segmentation_target():
    net = _seeded(lambda: tvm.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None))
    region = region_mask("20,30,90,100", (SIZE, SIZE))
    model = convscope.load_model(net, input_size=SIZE, target_options=TargetOptions(region=region))
    x = _photos(model, ("coffee",))
    ours = compute_cam(model, x, 5, None, "gradcam")
    theirs = _peer(SegmentationModelOutputWrapper(net), net.backbone["16"], x,
                   [SemanticSegmentationTarget(5, region.numpy())], "gradcam")
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", list(PEERS))
def test_embedding_equals_similarity_to_concept_target(method):
    net = _seeded(lambda: tvm.resnet18(weights=None))
    net.fc = nn.Identity()
    plain = convscope.load_model(net, input_size=SIZE, target="output")
    reference = plain.outputs(_photos(plain, ("coffee",)))[0]
    model = convscope.load_model(net, input_size=SIZE, target_options=TargetOptions(reference=reference))
    assert model.target.name == "embedding"
    x = _photos(model, ("chelsea",))
    ours = compute_cam(model, x, None, "layer4", method)
    theirs = _peer(net, net.layer4, x, [SimilarityToConceptTarget(reference)], method)
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", list(PEERS))
def test_output_equals_the_raw_output(method):
    net = _seeded(lambda: tvm.resnet18(weights=None, num_classes=2))
    model = convscope.load_model(net, input_size=SIZE, target="output")
    x = _photos(model)
    ours = compute_cam(model, x, 1, "layer4", method)
    theirs = _peer(net, net.layer4, x, [ClassifierOutputTarget(1)] * 2, method)
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)
