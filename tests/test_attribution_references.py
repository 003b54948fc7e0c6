"""convscope's pixel attributions against Captum 0.9's own code (and pytorch-grad-cam's guided
backprop), on VGG19 with random weights (only ``nn.ReLU``: the peers are right there) and on the
default model (ReLU6: the peers' guided backprop and deconvolution are the plain gradient there)."""

import copy

import numpy as np
import pytest
import torch

from convscope.samples import sample_array
from convscope.techniques.attributions import attribute, black_baseline
from convscope.techniques.capture import cam_layer

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")

SIZES = {"default": 128, "vgg19": 64}


@pytest.fixture(scope="module")
def photos():
    return [sample_array("chelsea"), sample_array("coffee")]


def _inputs(model, model_name, photos):
    x = model.preprocess(photos)
    return torch.nn.functional.interpolate(x, size=(SIZES[model_name],) * 2, mode="bilinear")


class ChannelsLast(torch.nn.Module):
    """The model as convscope runs it: on its input in channels-last layout (Captum's own code then
    sees the same kernels; integrated gradients' path points would otherwise be built contiguous)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def _captum(model, x, method, classes, **options):
    """Captum's attributions of ``method`` (convscope's name) with the same settings, on the input in
    the memory layout convscope runs the model in (channels-last: in the other layout the kernels
    round differently, and VGG's max-pooling near-ties then route some gradients elsewhere); the
    model's ``.grad`` cleared afterwards."""
    module = ChannelsLast(model.module)
    baselines = black_baseline(model).expand_as(x).contiguous()
    if method == "saliency":
        found = captum_attr.Saliency(module).attribute(x.clone(), target=classes)
    elif method == "inputxgradient":
        found = captum_attr.InputXGradient(module).attribute(x.clone(), target=classes)
    elif method == "integratedgradients":
        found = captum_attr.IntegratedGradients(module).attribute(x.clone(), baselines=baselines, target=classes,
                                                                  n_steps=options["steps"], internal_batch_size=16)
    elif method == "guidedbackprop":
        found = captum_attr.GuidedBackprop(module).attribute(x.clone(), target=classes)
    elif method == "deconvolution":
        found = captum_attr.Deconvolution(module).attribute(x.clone(), target=classes)
    elif method == "guidedgradcam":
        found = captum_attr.GuidedGradCam(module, model.submodule(cam_layer(model))).attribute(
            x.clone(), target=classes, interpolate_mode="bilinear")
    elif method == "occlusion":
        window, stride = options["window"], options["stride"]
        found = captum_attr.Occlusion(module).attribute(x.clone(), sliding_window_shapes=(3, window, window),
                                                        strides=(3, stride, stride), baselines=baselines,
                                                        target=classes, perturbations_per_eval=16)
    else:
        raise AssertionError(method)
    model.module.zero_grad(set_to_none=True)
    return found.detach()


def _plain_gradient(model, x, classes):
    leaf = x.clone().requires_grad_(True)
    scores = model.module(leaf)
    (grad,) = torch.autograd.grad(scores[torch.arange(len(x)), classes].sum(), leaf)
    return grad


def _relative(ours, theirs):
    return float((ours - theirs).abs().max()) / float(ours.max() - ours.min())


OPTIONS = {"integratedgradients": {"steps": 16}, "occlusion": {"window": 16, "stride": 16}}


@pytest.mark.parametrize("model_name", ["default", "vgg19"])
@pytest.mark.parametrize("method", ["saliency", "inputxgradient", "integratedgradients", "guidedbackprop",
                                    "deconvolution", "guidedgradcam", "occlusion"])
def test_each_attribution_equals_captums_where_captum_is_right(method, model_name, default_model, vgg19_random,
                                                               photos):
    model = default_model if model_name == "default" else vgg19_random
    x = _inputs(model, model_name, photos)
    ours = attribute(model, x, None, method, **OPTIONS.get(method, {}))
    theirs = _captum(model, x, method, ours.classes, **OPTIONS.get(method, {}))
    guided = method in ("guidedbackprop", "deconvolution", "guidedgradcam")
    if model_name == "vgg19" or not guided:
        assert _relative(ours.attributions, theirs) <= 1e-4
        return
    # ReLU6: Captum replaces nothing, so its guided backprop and deconvolution are the plain gradient
    plain = _plain_gradient(model, x, ours.classes)
    reference = theirs if method != "guidedgradcam" else None
    if reference is not None:
        assert _relative(plain, reference) <= 1e-4
    assert _relative(ours.attributions, theirs) > 0.1


def test_pytorch_grad_cams_guided_backprop_is_the_plain_gradient_on_relu6_and_leaves_a_shared_relu(
        default_model, vgg19_random, photos):
    """pytorch-grad-cam's ``GuidedBackpropReLUModel`` takes one image (``output[0, target]``),
    replaces only ``nn.ReLU`` -- none in the default model, so it returns the plain gradient -- and
    afterwards puts back one ``nn.ReLU`` module shared by every position of the model."""
    x = _inputs(default_model, "default", photos)[:1]
    ours = attribute(default_model, x, None, "guidedbackprop")
    peer = pytorch_grad_cam.GuidedBackpropReLUModel(default_model.module, device="cpu")
    theirs = torch.from_numpy(np.ascontiguousarray(peer(x.clone(), ours.classes[0]).transpose(2, 0, 1)))[None]
    default_model.module.zero_grad(set_to_none=True)
    plain = _plain_gradient(default_model, x, ours.classes)
    assert _relative(plain, theirs) <= 1e-4 and _relative(ours.attributions, theirs) > 0.1

    vgg = copy.deepcopy(vgg19_random)  # the peer changes the model it is given
    xv = _inputs(vgg, "vgg19", photos)[:1]
    ours = attribute(vgg, xv, None, "guidedbackprop")
    relus_before = [m for m in vgg.module.modules() if isinstance(m, torch.nn.ReLU)]
    peer = pytorch_grad_cam.GuidedBackpropReLUModel(vgg.module, device="cpu")
    theirs = torch.from_numpy(np.ascontiguousarray(peer(xv.clone(), ours.classes[0]).transpose(2, 0, 1)))[None]
    assert _relative(ours.attributions, theirs) <= 1e-4
    relus_after = [m for m in vgg.module.modules() if isinstance(m, torch.nn.ReLU)]
    assert len({id(m) for m in relus_before}) == len(relus_before) > 1
    assert len({id(m) for m in relus_after}) == 1  # one module object at every position


@pytest.mark.parametrize("model_name", ["default"])  # sampled: the same sampling on VGG19 adds 10-25 s, nothing more
def test_smoothgrad_has_captums_mean_over_32_seeds(model_name, default_model, vgg19_random, photos):
    """Captum's ``NoiseTunnel(Saliency)`` with ``stdevs`` = 0.15 x the image's range (convscope's
    sigma is that fraction): over 32 seeds of 2 copies each, the mean attribution agrees within 5 %."""
    model = default_model if model_name == "default" else vgg19_random
    x = _inputs(model, model_name, photos)[:1]
    cls = attribute(model, x, None, "saliency").classes[0]
    ours = torch.stack([attribute(model, x, cls, "smoothgrad", samples=2, seed=seed).attributions
                        for seed in range(32)])
    stdev = 0.15 * float(x.max() - x.min())
    theirs = []
    for seed in range(32):
        torch.manual_seed(1000 + seed)
        theirs.append(captum_attr.NoiseTunnel(captum_attr.Saliency(model.module)).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=2, stdevs=stdev, target=cls).detach())
    model.module.zero_grad(set_to_none=True)
    theirs = torch.stack(theirs)
    assert float(ours.mean()) == pytest.approx(float(theirs.mean()), rel=0.05)
    assert float((ours.mean(dim=0) - theirs.mean(dim=0)).abs().mean()) <= 0.2 * float(ours.mean())


def test_integrated_gradients_completeness_on_the_default_model(default_model, photos):
    """The gap sum(attr) - (Y(x) - Y(x')) shrinks with the steps: on the coffee photo 4.9 % of the change
    at 64 steps (the cat: 1.4 %; ReLU6 makes the path's gradient jump, which slows every quadrature),
    0.5 % at 256."""
    x = default_model.preprocess(photos[1:])
    coarse = attribute(default_model, x, None, "integratedgradients", steps=64)
    fine = attribute(default_model, x, coarse.classes, "integratedgradients", steps=256)
    assert (fine.gap / fine.change).abs().max() < 0.01
    assert (fine.gap.abs() < coarse.gap.abs()).all()
