"""convscope's maps against the reference libraries' own code (pytorch-grad-cam 1.5.7, torchcam 0.5.0),
on the default model and on VGG19 with random weights, the same inputs and classes: within 1e-4 after
each library's min-max normalization, both signs for the methods whose sign a principal component
leaves open in the peer. Where the peer differs from the paper, a test shows how."""

import numpy as np
import pytest
import torch

import convscope
from convscope.errors import InputError
from convscope.samples import sample_array
from convscope.techniques.cams import METHODS, CamInputs, compute_cam, map_of_terms, minmax, upsample
from convscope.techniques.capture import layer_pass

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
torchcam_methods = pytest.importorskip("torchcam.methods")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

#: convscope method -> (pytorch-grad-cam class, whether the peer leaves the sign to the SVD routine)
GRAD_CAM_PEERS = {
    "gradcam": ("GradCAM", False),
    "xgradcam": ("XGradCAM", False),
    "layercam": ("LayerCAM", False),
    "hirescam": ("HiResCAM", False),
    "gradcam-elementwise": ("GradCAMElementWise", False),
    "eigencam": ("EigenCAM", True),
    "eigengradcam": ("EigenGradCAM", True),
    "segeigencam": ("SegEigenCAM", False),
    "kpcacam": ("KPCA_CAM", True),
    "fem": ("FEM", False),
    "fullgrad": ("FullGrad", False),
    "finercam": ("FinerCAM", False),
    "shapleycam": ("ShapleyCAM", False),
}


@pytest.fixture(scope="module")
def photos():
    return [sample_array("chelsea"), sample_array("coffee")]


def _peer_maps(model, x, layer, peer, classes):
    """The peer's maps for ``classes``; the model's modes and gradients restored afterwards (the peer
    sets eval mode for good and fills ``.grad``)."""
    module = model.module
    layers = [] if peer == "FullGrad" else [model.submodule(layer)]  # FullGrad uses every biased layer
    with getattr(pytorch_grad_cam, peer)(model=module, target_layers=layers) as extractor:
        # FinerCAM builds its own target for each image's top-1 class (the classes compared here)
        targets = None if peer == "FinerCAM" else [ClassifierOutputTarget(c) for c in classes]
        maps = extractor(input_tensor=x.clone(), targets=targets)
    module.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))


@pytest.mark.parametrize("model_name", ["default", "vgg19"])
@pytest.mark.parametrize("method", list(GRAD_CAM_PEERS))
def test_layer_maps_equal_pytorch_grad_cam(method, model_name, default_model, vgg19_random, photos):
    model = default_model if model_name == "default" else vgg19_random
    x = model.preprocess(photos)
    result = compute_cam(model, x, None, None, method)
    peer, either_sign = GRAD_CAM_PEERS[method]
    theirs = _peer_maps(model, x, result.layer, peer, result.classes)
    if not either_sign:
        torch.testing.assert_close(result.maps, theirs, atol=1e-4, rtol=0)
        return
    flipped = upsample(torch.relu(-_raw_map(model, x, result, method)), tuple(x.shape[2:]))
    for ours_map, other_map, their_map in zip(result.maps, flipped, theirs):
        # the peer leaves the principal direction's sign to the SVD routine: ours, or the opposite one
        assert min(float((ours_map - their_map).abs().max()), float((other_map - their_map).abs().max())) <= 1e-4


def _raw_map(model, x, result, method):
    """The method's map before its final ReLU, from the same pass convscope makes."""
    found = layer_pass(model, x, result.layer, "fp32", result.classes, METHODS[method].needs_gradients)
    return map_of_terms(METHODS[method].compute(CamInputs(found.acts, found.grads, x, found.logits, found.classes,
                                                          None, 1)), channel_terms=METHODS[method].channel_terms)


@pytest.mark.parametrize("model_name, size", [("default", 96), ("vgg19", 64)])
def test_ablationcam_equals_pytorch_grad_cam_where_the_score_is_positive(model_name, size, default_model,
                                                                           vgg19_random, photos):
    """One image at a small size (the peer runs the whole network once per channel). The layers are
    post-ReLU (minimum 0), so the peer ablates to zero as the paper does. The default model's layer
    feeds global average pooling and one Linear layer, so convscope computes its drops without running
    the copies; VGG19's does not, so its copies run: the peer's passes check both."""
    model = default_model if model_name == "default" else vgg19_random
    x = torch.nn.functional.interpolate(model.preprocess(photos[1:]), size=(size, size), mode="bilinear")
    result = compute_cam(model, x, None, None, "ablationcam")
    assert float(result.logits[0, result.classes[0]]) > 0
    theirs = _peer_maps(model, x, result.layer, "AblationCAM", result.classes)
    torch.testing.assert_close(result.maps, theirs, atol=1e-4, rtol=0)


def test_ablationcam_keeps_the_sign_where_the_score_is_negative():
    """Where Y_c < 0 pytorch-grad-cam divides by it and every weight flips: zeroing a channel that
    lowers the score further then counts against the region. convscope divides by |Y_c|."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[4].weight.copy_(torch.tensor([[1.0, 0.5, 0.2, 0.1], [-1.0, -0.5, -0.2, -0.1]]))
        net[4].bias.zero_()
    model = convscope.load_model(net, input_size=8, labels=["up", "down"])
    x = torch.rand(1, 3, 8, 8)
    result = compute_cam(model, x, 1, "1", "ablationcam")  # class "down": its score is negative
    assert float(result.logits[0, 1]) < 0
    # every channel lowers "down" (negative weights, positive activations): zeroing one raises the score,
    # so each weight is negative and the map is empty -- nothing here argues for "down"
    assert float(result.low_res.max()) == 0.0
    theirs = _peer_maps(model, x, "1", "AblationCAM", [1])
    assert float(theirs.max()) > 0  # the peer's flipped signs make the whole region argue for "down"


def test_shapleycam_takes_the_second_order_term_where_the_network_is_not_piecewise_linear():
    """After the layer, Y_c = sum_k v_ck mean(a_k^2 + a_k): g = v (2a + 1) / hw and H A = 2 v a / hw,
    so w_k = mean(g - H A / 2) = v_ck mean(a_k + 1) / hw -- not Grad-CAM's v_ck mean(2 a_k + 1) / hw;
    convscope's map is that hand-computed one, and pytorch-grad-cam's."""
    torch.manual_seed(1)

    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            a = self.conv(x)
            return self.fc((a * a + a).mean(dim=(2, 3)))

    net = Quadratic().eval()
    model = convscope.load_model(net, input_size=8, labels=["a", "b"])
    x = torch.randn(1, 3, 8, 8)
    ours = compute_cam(model, x, 1, "conv", "shapleycam")
    with torch.no_grad():
        a = net.conv(x)
    weights = net.fc.weight[1].detach()[None] * (a + 1).mean(dim=(2, 3)) / 64
    torch.testing.assert_close(ours.low_res, torch.relu((weights[:, :, None, None] * a).sum(dim=1)), atol=1e-6,
                               rtol=1e-4)
    grad_cam = compute_cam(model, x, 1, "conv", "gradcam")
    assert float((ours.maps - grad_cam.maps).abs().max()) > 0.05
    theirs = _peer_maps(model, x, "conv", "ShapleyCAM", [1])
    torch.testing.assert_close(ours.maps, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method, peer", [("gradcam", "GradCAM"), ("layercam", "LayerCAM")])
def test_aug_smooth_equals_pytorch_grad_cams(method, peer, default_model, photos):
    """The mean over flip x (0.9, 1, 1.1) of the maps put back in place; the peer returns the mean
    unnormalized, convscope normalizes it as every map."""
    import pytorch_grad_cam

    x = torch.nn.functional.interpolate(default_model.preprocess(photos), size=(128, 128), mode="bilinear")
    result = compute_cam(default_model, x, None, None, method, aug_smooth=True)
    plain = compute_cam(default_model, x, None, None, method)
    assert result.classes == plain.classes and float((result.maps - plain.maps).abs().max()) > 0.01
    with getattr(pytorch_grad_cam, peer)(model=default_model.module,
                                         target_layers=[default_model.submodule(result.layer)]) as extractor:
        theirs = extractor(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c) for c in result.classes],
                           aug_smooth=True)
    default_model.module.zero_grad(set_to_none=True)
    torch.testing.assert_close(result.maps, minmax(torch.from_numpy(theirs)), atol=1e-4, rtol=0)


def test_the_principal_component_signs_are_deterministic(default_model, photos):
    """Eigen-CAM's rule fixes the sign: the map correlates positively with the summed channels, so
    it never depends on the SVD routine (the peer's can come out flipped)."""
    x = default_model.preprocess(photos[:1])
    for method in ("eigencam", "eigengradcam", "kpcacam"):
        result = compute_cam(default_model, x, None, None, method)
        again = compute_cam(default_model, x.clone(), None, None, method)
        torch.testing.assert_close(result.maps, again.maps)
        assert float(result.low_res.sum()) > 0


def test_cam_equals_torchcam_on_a_gap_linear_model(default_model, photos):
    x = default_model.preprocess(photos)
    result = compute_cam(default_model, x, None, None, "cam")
    module = default_model.module
    with torchcam_methods.CAM(module, target_layer=result.layer, fc_layer="_fc") as extractor:
        with torch.no_grad():
            module(x)
        raw = extractor(result.classes, normalized=False)[0]
    theirs = upsample(torch.relu(raw), tuple(x.shape[2:]))  # torchcam's CAM keeps negatives; the map is ReLU'd
    torch.testing.assert_close(result.maps, theirs, atol=1e-4, rtol=0)
    # where GAP and one Linear follow the layer, CAM is Grad-CAM up to the factor 1/hw
    torch.testing.assert_close(result.maps, compute_cam(default_model, x, None, None, "gradcam").maps,
                               atol=1e-4, rtol=0)


def test_cam_is_refused_where_the_layer_does_not_feed_gap_and_one_linear(vgg19_random, capsys, tmp_path):
    x = vgg19_random.preprocess([sample_array("coffee")])
    with pytest.raises(InputError, match="does not feed global average pooling and one Linear layer"):
        compute_cam(vgg19_random, x, None, None, "cam")
    from convscope.cli.main import main

    code = main(["cam", "sample:coffee", "--model", "vgg19", "--weights", "random", "--method", "cam",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("convscope: error: --method cam: the layer (512 channels) does not feed")


def test_torchcam_gradcampp_never_divides():
    """torchcam 0.5.0's ``GradCAMpp`` divides a copy (``alpha[idx][mask].div_``), so its weights are
    sum_ij g^2 ReLU(g); convscope follows the paper's closed form. On a tiny model with a square
    after the layer (so the third derivative is not zero) the two differ, and torchcam's equals the
    undivided sum."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)

    class Squared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            a = self.conv(x)
            return self.fc((a * a.abs()).mean(dim=(2, 3)))

    net = Squared().eval()
    x = torch.randn(1, 1, 6, 6)
    with torchcam_methods.GradCAMpp(net, target_layer="conv", input_shape=(1, 6, 6)) as extractor:
        scores = net(x)
        theirs = extractor(0, scores, normalized=False)[0]
    acts = conv(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.fc((acts * acts.abs()).mean(dim=(2, 3)))[0, 0], acts)
    acts = acts.detach()
    undivided = (g.pow(2) * torch.relu(g)).sum(dim=(2, 3))
    torch.testing.assert_close(theirs, torch.relu((undivided[:, :, None, None] * acts).sum(dim=1)))
    denominator = 2 * g.pow(2) + acts.sum(dim=(2, 3), keepdim=True) * g.pow(3)
    alpha = torch.where(denominator != 0, g.pow(2) / torch.where(denominator != 0, denominator, 1.0), 0.0)
    paper = (alpha * torch.relu(g)).sum(dim=(2, 3))
    model = convscope.load_model(net, input_size=6, mean=(0.0,), std=(1.0,), labels=["a", "b"])
    ours = compute_cam(model, x, 0, "conv", "gradcam++").low_res
    torch.testing.assert_close(ours, torch.relu((paper[:, :, None, None] * acts).sum(dim=1)), atol=1e-6, rtol=1e-4)
    assert float((minmax(ours) - minmax(theirs)).abs().max()) > 0.1  # the defect changes the map


# -- the sampled methods against torchcam ---------------------------------------------------------------
#: Per model, a small input size and a layer with few channels for the methods that run the model once
#: per channel and copy (the default layers have 1280 and 512 channels).
SMALL = {"default": (32, "_blocks.0"), "vgg19": (32, "block1_conv1")}


def _small(model, model_name, photos, count=1):
    size, layer = SMALL[model_name]
    x = torch.nn.functional.interpolate(model.preprocess(photos[:count]), size=(size, size), mode="bilinear")
    return x, layer


def _torchcam_maps(model, x, layer, extractor_class, classes, seed=None, call_options=None, **options):
    """torchcam's normalized maps, upsampled as convscope upsamples (torchcam keeps them at the
    layer's size); ``seed`` seeds torch's global generator, which torchcam draws its noise from;
    ``call_options`` go to the extractor's call, ``options`` to its constructor."""
    if seed is not None:
        torch.manual_seed(seed)
    module = model.module
    with extractor_class(module, target_layer=model.submodule(layer), input_shape=tuple(x.shape[1:]),
                         **options) as extractor:
        scores = module(x)
        maps = extractor(class_idx=classes, scores=scores, **(call_options or {}))[0].detach()
    module.zero_grad(set_to_none=True)
    return upsample(maps, tuple(x.shape[2:]))


@pytest.mark.parametrize("model_name", ["default", "vgg19"])
def test_iscam_equals_torchcam_given_its_factors_and_follows_the_integral(model_name, default_model, vgg19_random,
                                                                          photos, monkeypatch):
    """torchcam's ``ISCAM`` accumulates its factor (``coeff += (s + 1) / N``): copy s is the masked
    input times (s + 1)(s + 2) / 2N, the last (N + 1) / 2 times the image. Given those factors
    convscope's IS-CAM is torchcam's within 1e-4; its own, (s + 1) / N, run from black to the image."""
    from convscope.techniques import cams

    model = default_model if model_name == "default" else vgg19_random
    x, layer = _small(model, model_name, photos, 2)
    ours = compute_cam(model, x, None, layer, "iscam", scorecam_batch=64, samples=3)
    theirs = _torchcam_maps(model, x, layer, torchcam_methods.ISCAM, ours.classes, num_samples=3, batch_size=64)
    monkeypatch.setattr(cams, "iscam_factor", lambda copy, samples: (copy + 1) * (copy + 2) / (2 * samples))
    accumulated = compute_cam(model, x, ours.classes, layer, "iscam", scorecam_batch=64, samples=3)
    torch.testing.assert_close(accumulated.maps, theirs, atol=1e-4, rtol=0)
    assert float((ours.maps - theirs).abs().max()) > 1e-3


@pytest.mark.parametrize("model_name", ["default"])  # sampled: the same sampling on VGG19 adds 10-25 s, nothing more
def test_sscam_has_torchcams_mean_over_32_seeds(model_name, default_model, vgg19_random, photos):
    """SS-CAM is random: over 32 seeds each, convscope's mean map and torchcam's agree within 5 % of
    the map's range everywhere (one noisy copy per seed, on a layer with few channels)."""
    model = default_model if model_name == "default" else vgg19_random
    x, layer = _small(model, model_name, photos)
    classes = compute_cam(model, x, None, layer, "gradcam").classes
    ours = torch.stack([compute_cam(model, x, classes, layer, "sscam", scorecam_batch=64, seed=seed,
                                    samples=1).maps for seed in range(32)])
    theirs = torch.stack([_torchcam_maps(model, x, layer, torchcam_methods.SSCAM, classes, seed, num_samples=1,
                                         batch_size=64) for seed in range(1000, 1032)])
    assert float((ours.mean(dim=0) - theirs.mean(dim=0)).abs().max()) <= 0.05
    assert not torch.equal(ours[0], ours[1])  # the seeds do differ


def test_smooth_gradcam_plus_plus_equals_torchcam_without_noise_and_fixes_its_last_copy(default_model, photos,
                                                                                        monkeypatch):
    """With (almost) no noise, convscope's Smooth Grad-CAM++ is torchcam's within 1e-4 (on the
    default layer, which feeds pooling and one Linear layer, torchcam's sum_ij A d3 equals the
    paper's sum_ij A times d3; torchcam's eps, 1e-8, is set to 0: here g^2 is about 1e-6, and the
    eps alone moves its map by 1.5e-3). With torchcam's noise (std 0.3) the gradients there do not depend on
    the input: convscope's map is Grad-CAM++'s whatever the seed, while torchcam's changes with the
    last noisy copy, whose activations it maps -- its mean over 32 seeds differs."""
    from convscope.techniques import cams

    x = default_model.preprocess(photos[:1])
    layer = "_act1"
    plus_plus = compute_cam(default_model, x, None, layer, "gradcam++")
    classes = plus_plus.classes
    monkeypatch.setattr(cams, "SMOOTHGRADCAMPP_STD", 1e-6)
    quiet = compute_cam(default_model, x, classes, layer, "smoothgradcam++")
    theirs = _torchcam_maps(default_model, x, layer, torchcam_methods.SmoothGradCAMpp, classes, 0, {"eps": 0.0},
                            std=1e-6)
    torch.testing.assert_close(quiet.maps, theirs, atol=1e-4, rtol=0)
    monkeypatch.undo()
    ours = [compute_cam(default_model, x, classes, layer, "smoothgradcam++", seed=seed).maps for seed in range(3)]
    for one in ours:
        torch.testing.assert_close(one, plus_plus.maps, atol=1e-5, rtol=0)
    theirs = torch.stack([_torchcam_maps(default_model, x, layer, torchcam_methods.SmoothGradCAMpp, classes, seed)
                          for seed in range(32)])
    assert float((theirs[0] - theirs[1]).abs().max()) > 0.05
    assert float((theirs.mean(dim=0) - ours[0]).abs().max()) > 0.05


# -- eigen_smooth and several layers ---------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["default", "vgg19"])
@pytest.mark.parametrize("method, peer", [("gradcam", "GradCAM"), ("layercam", "LayerCAM"),
                                          ("hirescam", "HiResCAM"), ("gradcam-elementwise", "GradCAMElementWise")])
def test_eigen_smooth_equals_pytorch_grad_cams(method, peer, model_name, default_model, vgg19_random, photos):
    """The first principal component of the channel terms; the peer leaves its sign to the SVD
    routine, convscope makes it correlate with the plain map: ours or its opposite is theirs."""
    model = default_model if model_name == "default" else vgg19_random
    x = torch.nn.functional.interpolate(model.preprocess(photos), size=(128, 128), mode="bilinear")
    result = compute_cam(model, x, None, None, method, eigen_smooth=True)
    assert float((result.maps - compute_cam(model, x, None, None, method).maps).abs().max()) > 0.01
    with getattr(pytorch_grad_cam, peer)(model=model.module, target_layers=[model.submodule(result.layer)]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c) for c in
                                                                       result.classes], eigen_smooth=True))
    model.module.zero_grad(set_to_none=True)
    found = layer_pass(model, x, result.layer, "fp32", result.classes, True)
    terms = METHODS[method].compute(CamInputs(found.acts, found.grads, x, found.logits, found.classes, None, 1))
    flipped = upsample(torch.relu(-map_of_terms(terms, eigen_smooth=True)), tuple(x.shape[2:]))
    for ours_map, other_map, their_map in zip(result.maps, flipped, theirs):
        assert min(float((ours_map - their_map).abs().max()), float((other_map - their_map).abs().max())) <= 1e-4


FUSED_LAYERS = {"default": ["_blocks.10", "_act1"], "vgg19": ["block4_conv4", "block5_conv4"]}


@pytest.mark.parametrize("model_name", ["default", "vgg19"])
@pytest.mark.parametrize("method, grad_cam_peer, torchcam_peer", [("gradcam", "GradCAM", "GradCAM"),
                                                                  ("layercam", "LayerCAM", "LayerCAM")])
def test_fused_layers_equal_the_peers(method, grad_cam_peer, torchcam_peer, model_name, default_model, vgg19_random,
                                      photos):
    """``mean``: pytorch-grad-cam with both target layers; ``max``: torchcam's maps of both layers
    fused by ``LayerCAM.fuse_cams`` (tanh(2 m), the maximum at the larger layer's size). The peers
    get the input in the memory layout convscope runs in (channels-last): in the other layout the
    kernels round differently, and below the last layer a few ReLU6 kinks then pass the gradient
    differently (0.4 % of the gradient's range at ``_blocks.10``)."""
    model = default_model if model_name == "default" else vgg19_random
    x = model.preprocess(photos).contiguous(memory_format=torch.channels_last)
    layers = FUSED_LAYERS[model_name]
    mean = compute_cam(model, x, None, layers, method)
    assert mean.layer == " + ".join(layers)
    with getattr(pytorch_grad_cam, grad_cam_peer)(model=model.module,
                                                  target_layers=[model.submodule(name) for name in layers]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c)
                                                                       for c in mean.classes]))
    model.module.zero_grad(set_to_none=True)
    torch.testing.assert_close(mean.maps, theirs, atol=1e-4, rtol=0)

    most = compute_cam(model, x, mean.classes, layers, method, fuse="max")
    module = model.module
    with getattr(torchcam_methods, torchcam_peer)(module, target_layer=[model.submodule(n) for n in layers],
                                                  input_shape=tuple(x.shape[1:])) as extractor:
        scores = module(x)
        per_layer = [m.detach() for m in extractor(class_idx=mean.classes, scores=scores)]
    module.zero_grad(set_to_none=True)
    fused = torchcam_methods.LayerCAM.fuse_cams(per_layer)
    torch.testing.assert_close(most.maps, upsample(fused, tuple(x.shape[2:])), atol=1e-4, rtol=0)
    assert float((most.maps - mean.maps).abs().max()) > 0.01


def test_torchcams_smooth_gradcam_plus_plus_sums_a_times_d3_where_the_paper_sums_a(vgg19_random, photos,
                                                                                   monkeypatch):
    """On VGG19's last conv (max pooling and three Linear layers follow, so g varies over the map),
    without noise: torchcam's weights are sum_ij alpha ReLU(g) with alpha = g^2 / (2 g^2 + sum_ab
    A_ab g_ab^3); the paper's (and convscope's) denominator is 2 g^2 + (sum_ab A_ab) g^3. Each
    library equals its own formula within 1e-4, and the two maps differ (here by 6e-3 of the range)."""
    from convscope.techniques import cams

    model = vgg19_random
    x = model.preprocess(photos[1:]).contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(cams, "SMOOTHGRADCAMPP_STD", 1e-6)
    ours = compute_cam(model, x, None, None, "smoothgradcam++")
    found = layer_pass(model, x, ours.layer, "fp32", ours.classes, True)
    a, g = found.acts, found.grads

    def map_of(denominator):
        alpha = torch.where(denominator != 0, g.pow(2) / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3))
        return upsample(torch.relu((weights[:, :, None, None] * a).sum(dim=1)), tuple(x.shape[2:]))

    paper = map_of(2 * g.pow(2) + a.sum(dim=(2, 3), keepdim=True) * g.pow(3))
    torchcams = map_of(2 * g.pow(2) + (a * g.pow(3)).sum(dim=(2, 3), keepdim=True))
    theirs = _torchcam_maps(model, x, ours.layer, torchcam_methods.SmoothGradCAMpp, ours.classes, 0, {"eps": 0.0},
                            std=1e-6)
    torch.testing.assert_close(ours.maps, paper, atol=1e-4, rtol=0)
    torch.testing.assert_close(theirs, torchcams, atol=1e-4, rtol=0)
    assert float((ours.maps - theirs).abs().max()) > 1e-3  # 6e-3 with random weights
