"""Class activation maps: every method against hand-computed values on a tiny model, the model left
untouched, frozen models, batches, overlays, and the real default model on the cat photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import convscope
from conftest import assert_usage_errors
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.presentation.drawing import colorize, overlay
from convscope.samples import sample_array
from convscope.techniques.cams import METHODS, compute_cam, minmax, upsample
from convscope.techniques.capture import cam_layer

# A: the two feature maps (pre-ReLU, so some values are negative), W and b: the linear head.
A = np.array([[[1.0, -2.0], [3.0, 0.5]],
              [[2.0, 1.0], [-1.0, 4.0]]])
W = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 1.0]])
B = np.array([0.1, -0.2, 0.3])


class HandNet(nn.Module):
    """x (B x 3 x 2 x 2) -> feat: 1x1 conv picking channels 0 and 1 (= A) -> in-place ReLU -> mean -> W m + b."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.feat.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.head.weight.copy_(torch.tensor(W))
            self.head.bias.copy_(torch.tensor(B))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.relu(self.feat(x))), 1))


def hand_input() -> torch.Tensor:
    x = np.zeros((1, 3, 2, 2))
    x[0, :2] = A
    x[0, 2] = 7.0  # ignored by the model
    return torch.tensor(x, dtype=torch.float32)


def logits_by_hand(features: np.ndarray) -> np.ndarray:
    return W @ np.maximum(features, 0).mean(axis=(1, 2)) + B


def hand_map(method: str, cls: int) -> np.ndarray:
    """The low-resolution map written out from the papers' formulas, with explicit loops."""
    K, h, w = A.shape
    g = np.zeros_like(A)
    for k in range(K):
        for i in range(h):
            for j in range(w):
                g[k, i, j] = W[cls, k] * (1.0 if A[k, i, j] > 0 else 0.0) / (h * w)
    weights = np.zeros(K)
    if method in ("gradcam", "shapleycam"):  # HandNet is piecewise linear after feat: ShapleyCAM's H A is 0
        weights = g.mean(axis=(1, 2))
    elif method == "gradcam++":
        for k in range(K):
            total = A[k].sum()
            for i in range(h):
                for j in range(w):
                    denominator = 2 * g[k, i, j] ** 2 + total * g[k, i, j] ** 3
                    alpha = g[k, i, j] ** 2 / denominator if denominator != 0 else 0.0
                    weights[k] += alpha * max(g[k, i, j], 0.0)
    elif method == "xgradcam":
        for k in range(K):
            weights[k] = sum(A[k, i, j] / A[k].sum() * g[k, i, j] for i in range(h) for j in range(w))
    elif method == "scorecam":
        for k in range(K):  # the authors' weight: the softmax probability of the class for the masked input
            mask = (A[k] - A[k].min()) / (A[k].max() - A[k].min())
            logits = logits_by_hand(A * mask)
            weights[k] = np.exp(logits[cls]) / np.exp(logits).sum()
    if method in ("gradcam", "gradcam++", "xgradcam", "scorecam", "shapleycam"):
        return np.maximum(sum(weights[k] * A[k] for k in range(K)), 0)
    if method == "layercam":
        return np.maximum(sum(np.maximum(g[k], 0) * A[k] for k in range(K)), 0)
    if method == "hirescam":
        return np.maximum(sum(g[k] * A[k] for k in range(K)), 0)
    if method == "eigencam":
        matrix = A.reshape(K, h * w).T
        centred = matrix - matrix.mean(axis=0)
        _, _, vt = np.linalg.svd(centred)
        projection = centred @ vt[0]
        total = matrix.sum(axis=1)
        if np.dot(projection, total - total.mean()) < 0:
            projection = -projection
        return np.maximum(projection, 0).reshape(h, w)
    if method == "gradcam-elementwise":
        return np.maximum(sum(np.maximum(g[k] * A[k], 0) for k in range(K)), 0)
    if method in ("eigengradcam", "segeigencam", "kpcacam"):
        values = {"eigengradcam": g * A, "segeigencam": np.abs(g) * A, "kpcacam": A}[method]
        matrix = values.reshape(K, h * w).T
        centred = matrix - matrix.mean(axis=0)
        if method == "kpcacam":  # scikit-learn's KernelPCA(kernel="sigmoid"): tanh(<x, y> / K + 1), centred
            n = h * w
            gram = np.array([[np.tanh(centred[a] @ centred[b] / K + 1) for b in range(n)] for a in range(n)])
            ones = np.full((n, n), 1 / n)
            gram = gram - ones @ gram - gram @ ones + ones @ gram @ ones
            eigenvalues, eigenvectors = np.linalg.eigh(gram)
            projection = eigenvectors[:, -1] * np.sqrt(max(eigenvalues[-1], 0))
        else:
            _, _, vt = np.linalg.svd(centred)
            projection = centred @ vt[0]
        if method == "segeigencam":  # the paper's rule: the larger magnitude is positive
            projection = -projection if abs(projection.min()) > abs(projection.max()) else projection
        else:  # Eigen-CAM's rule: correlate positively with the summed channels
            total = matrix.sum(axis=1)
            projection = -projection if np.dot(projection, total - total.mean()) < 0 else projection
        return np.maximum(projection, 0).reshape(h, w)
    if method == "fem":
        for k in range(K):
            threshold = A[k].mean() + 2 * A[k].std()  # population std
            weights[k] = np.mean([A[k, i, j] > threshold for i in range(h) for j in range(w)])
        return np.maximum(sum(weights[k] * A[k] for k in range(K)), 0)
    if method == "ablationcam":  # the drop of the class score when channel k is zeroed, over |Y_c|
        score = logits_by_hand(A)[cls]
        for k in range(K):
            ablated = A.copy()
            ablated[k] = 0
            weights[k] = (score - logits_by_hand(ablated)[cls]) / abs(score)
        return np.maximum(sum(weights[k] * A[k] for k in range(K)), 0)
    if method == "fullgrad":  # HandNet has no bias: the input term |x dY/dx| alone, each channel scaled
        x = hand_input()[0].numpy()
        total = np.zeros((h, w))
        for c in range(3):  # feat passes input channels 0 and 1 on as A: dY/dx_c = g_c; channel 2 is unused
            term = np.abs(x[c] * (g[c] if c < K else 0.0))
            term = term - term.min()
            total += term / (term.max() + 1e-7)
        return total
    if method == "finercam":  # Grad-CAM of T = sum_j p_j (Y_c - Y_j) / (sum_j p_j + 1e-9), j the other classes
        y = logits_by_hand(A)
        p = np.exp(y) / np.exp(y).sum()
        others = [j for j in np.argsort(np.abs(y - y[cls]), kind="stable") if j != cls][:3]
        numerator = sum(p[j] * (y[cls] - y[j]) for j in others)
        denominator = sum(p[j] for j in others) + 1e-9
        dt_dy = np.zeros(len(y))
        for m in range(len(y)):  # the quotient rule, with dp_j/dY_m = p_j (d_jm - p_m)
            dp = [p[j] * (float(j == m) - p[m]) for j in others]
            d_numerator = sum(dp[n] * (y[cls] - y[j]) + p[j] * (float(cls == m) - float(j == m))
                              for n, j in enumerate(others))
            dt_dy[m] = (d_numerator * denominator - numerator * sum(dp)) / denominator ** 2
        finer_g = np.zeros_like(A)
        for k in range(K):
            finer_g[k] = sum(dt_dy[m] * W[m, k] for m in range(len(y))) * (A[k] > 0) / (h * w)
        return np.maximum(sum(finer_g[k].mean() * A[k] for k in range(K)), 0)
    if method == "smoothgradcam++":
        return smooth_plus_plus_by_hand(A, cls)
    if method in ("sscam", "iscam"):  # softmax over channels of the mean score increase of the masked input
        copies = 35 if method == "sscam" else 10
        generator = torch.Generator().manual_seed(0)
        x = hand_input()[0].numpy()
        score = logits_by_hand(A)[cls]
        increases = np.zeros(K)
        for copy in range(copies):
            noise = (torch.randn((K, 1, h, w), generator=generator) * 2.0).numpy()  # one draw per copy: K masks
            for k in range(K):
                mask = (A[k] - A[k].min()) / (A[k].max() - A[k].min() + 1e-8)
                mask = mask + noise[k, 0] if method == "sscam" else mask * (copy + 1) / copies
                increases[k] += (logits_by_hand((x * mask)[:K])[cls] - score) / copies
        weights = np.exp(increases) / np.exp(increases).sum()
        return np.maximum(sum(weights[k] * A[k] for k in range(K)), 0)
    if method == "cam":  # at the ReLU's output, which global pooling and the head follow
        return np.maximum(sum(W[cls, k] * np.maximum(A[k], 0) for k in range(K)), 0)
    raise AssertionError(method)


def smooth_plus_plus_by_hand(a: np.ndarray, cls: int) -> np.ndarray:
    """Smooth Grad-CAM++ on HandNet with feature maps ``a`` (its input's first two channels; the
    third is 7): Grad-CAM++ of the derivatives averaged over 4 copies with noise N(0, 0.3^2), seed 0."""
    K, h, w = a.shape
    x = np.concatenate([a, np.full((1, h, w), 7.0)])
    generator = torch.Generator().manual_seed(0)
    d = {1: np.zeros_like(a), 2: np.zeros_like(a), 3: np.zeros_like(a)}
    for _ in range(4):
        noisy = x + (torch.randn((1, 3, h, w), generator=generator) * 0.3).numpy()[0]
        for k in range(K):
            for i in range(h):
                for j in range(w):
                    g_m = W[cls, k] * (1.0 if noisy[k, i, j] > 0 else 0.0) / (h * w)
                    for p in d:
                        d[p][k, i, j] += g_m ** p / 4
    weights = np.zeros(K)
    for k in range(K):
        total = a[k].sum()  # the image's own activations
        for i in range(h):
            for j in range(w):
                denominator = 2 * d[2][k, i, j] + total * d[3][k, i, j]
                alpha = d[2][k, i, j] / denominator if denominator != 0 else 0.0
                weights[k] += alpha * max(d[1][k, i, j], 0.0)
    return np.maximum(sum(weights[k] * a[k] for k in range(K)), 0)


@pytest.fixture
def hand_model():
    return convscope.load_model(HandNet(), input_size=2, labels=["a", "b", "c"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cls", [0, 1, 2])
def test_every_method_matches_the_hand_computation(hand_model, method, cls, model_state):
    before = model_state(hand_model.module)
    if method == "cam":  # feat's output has negative values: logits are not W mean(feat) + b, so CAM is refused
        with pytest.raises(InputError, match="does not feed global average pooling and one Linear layer"):
            compute_cam(hand_model, hand_input(), [cls], layer="feat", method=method)
    layer = "relu" if method == "cam" else "feat"
    result = compute_cam(hand_model, hand_input(), [cls], layer=layer, method=method)
    expected = hand_map(method, cls)
    np.testing.assert_allclose(result.low_res[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # upsampling 2x2 -> 2x2 is the identity: the map is the min-max normalized low-res map
    span = expected.max() - expected.min()
    normalized = (expected - expected.min()) / span if span > 0 else np.zeros_like(expected)
    np.testing.assert_allclose(result.maps[0].numpy(), normalized, rtol=1e-5, atol=1e-6)
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    before.assert_unchanged(hand_model.module)


def test_hand_maps_are_not_trivial():
    """The fixture exercises the interesting cases: negative weights, zero maps, distinct methods."""
    assert (hand_map("gradcam", 0) > 0).sum() == 1  # w = (3/16, -3/16): the ReLU clears three of four
    assert hand_map("gradcam", 1).any() and hand_map("hirescam", 2).any()
    assert not np.allclose(hand_map("gradcam", 1), hand_map("layercam", 1))
    assert not np.allclose(hand_map("xgradcam", 1), hand_map("gradcam", 1))
    assert not np.allclose(hand_map("sscam", 2), hand_map("iscam", 2))


def test_smooth_gradcam_plus_plus_averages_the_derivatives_of_noisy_copies(hand_model):
    """Near zero, the noise switches a ReLU in some copies: the averaged derivatives then differ
    from the image's own, and the map from Grad-CAM++'s (HandNet's A has no value so close to 0)."""
    near_zero = A.copy()
    near_zero[0, 0, 1] = 0.05
    near_zero[1, 1, 0] = -0.05
    x = torch.tensor(np.concatenate([near_zero, np.full((1, 2, 2), 7.0)])[None], dtype=torch.float32)
    differences = []
    for cls in range(3):
        result = compute_cam(hand_model, x, [cls], layer="feat", method="smoothgradcam++")
        np.testing.assert_allclose(result.low_res[0].numpy(), smooth_plus_plus_by_hand(near_zero, cls), rtol=1e-5,
                                   atol=1e-6)
        plain = compute_cam(hand_model, x, [cls], layer="feat", method="gradcam++")
        differences.append(float((result.low_res - plain.low_res).abs().max()))
    assert max(differences) > 1e-2
    again = compute_cam(hand_model, x, [1], layer="feat", method="smoothgradcam++", seed=0)
    other_seed = compute_cam(hand_model, x, [1], layer="feat", method="smoothgradcam++", seed=1)
    assert torch.equal(again.low_res, compute_cam(hand_model, x, [1], layer="feat", method="smoothgradcam++").low_res)
    assert not torch.equal(again.low_res, other_seed.low_res)


def test_all_zero_map_stays_zero_and_upsampling_is_bilinear():
    assert torch.equal(minmax(torch.zeros(1, 3, 3)), torch.zeros(1, 3, 3))
    assert torch.equal(minmax(torch.full((1, 2, 2), 5.0)), torch.ones(1, 2, 2))
    up = upsample(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]), (4, 4))[0]
    steps = torch.tensor([0.0, 0.25, 0.75, 1.0])  # align_corners=False source positions, clamped
    torch.testing.assert_close(up, (2 * steps[:, None] + steps[None, :]) / 3)


def test_all_zero_map_end_to_end(hand_model):
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = -1.0  # A0 dead after the ReLU: no gradient; A1 positive with a negative weight for class 0
    x[0, 1] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    result = compute_cam(hand_model, x, [0], layer="feat")
    assert torch.equal(result.low_res, torch.zeros(1, 2, 2)) and torch.equal(result.maps, torch.zeros(1, 2, 2))


def test_target_layer_clone_is_safe_from_in_place_relu(hand_model):
    result = compute_cam(hand_model, hand_input(), [2], layer="feat", method="hirescam")
    # hirescam of class 2 uses A where A > 0 only: computed from the pre-ReLU A (negative entries kept)
    np.testing.assert_allclose(result.low_res[0].numpy(), hand_map("hirescam", 2), atol=1e-6)
    relu_layer = compute_cam(hand_model, hand_input(), [2], layer="relu", method="hirescam")
    assert relu_layer.low_res.shape == (1, 2, 2)


def test_frozen_model_in_train_mode_is_left_as_it_was(model_state):
    net = HandNet().train()
    for p in net.parameters():
        p.requires_grad_(False)
    before = model_state(net)
    model = convscope.load_model(net, input_size=2, labels=["a", "b", "c"])
    maps = convscope.cam(model, hand_input(), [1], layer="feat")
    assert maps.shape == (1, 2, 2) and maps.max() == 1
    before.assert_unchanged(net)
    assert net.training and all(p.grad is None for p in net.parameters())


def test_parameters_that_require_grad_get_no_grad(hand_model):
    convscope.cam(hand_model, hand_input(), [1], layer="feat")
    assert all(p.grad is None for p in hand_model.module.parameters())


def test_batch_with_a_class_per_image(hand_model):
    x = torch.cat([hand_input(), hand_input() * torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1)])
    batched = compute_cam(hand_model, x, [1, 2], layer="feat", method="gradcam")
    for row, cls in enumerate([1, 2]):
        single = compute_cam(hand_model, x[row:row + 1], [cls], layer="feat", method="gradcam")
        torch.testing.assert_close(batched.low_res[row], single.low_res[0])
    assert batched.classes == [1, 2]
    assert compute_cam(hand_model, x, ["b", "c"], layer="feat").classes == [1, 2]
    default = compute_cam(hand_model, x, None, layer="feat")
    assert default.classes == default.logits.argmax(dim=1).tolist()


def test_class_list_mismatch_is_an_error_never_a_truncation(hand_model):
    x = torch.cat([hand_input(), hand_input()])
    with pytest.raises(InputError, match="2 images"):
        convscope.cam(hand_model, x, [0, 1, 2], layer="feat")
    with pytest.raises(InputError, match="one class per image"):
        convscope.cam(hand_model, x, [0], layer="feat")
    with pytest.raises(InputError, match="out of range"):
        convscope.cam(hand_model, x, [0, 3], layer="feat")
    with pytest.raises(InputError, match="unknown CAM method"):
        convscope.cam(hand_model, x, [0, 1], layer="feat", method="gradcam+++")


def test_default_layer_is_last_spatial_before_pooling(hand_model, vgg19_random, default_model):
    assert cam_layer(hand_model) == "relu"
    assert cam_layer(vgg19_random) == "block5_pool"
    assert cam_layer(default_model) == "_act1"


def test_overlay_colour_order_high_is_red():
    photo = Image.new("RGB", (3, 1), (100, 100, 100))
    heat = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    pixels = np.asarray(overlay(photo, heat, alpha=1.0)).astype(int)
    red, blue = pixels[0, 2], pixels[0, 0]
    assert red[0] > 100 and red[2] == 0    # jet(1) is dark red in RGB order
    assert blue[2] > 100 and blue[0] == 0  # jet(0) is dark blue
    half = np.asarray(overlay(photo, heat, alpha=0.4)).astype(float)
    np.testing.assert_allclose(half[0, 2], 0.6 * 100 + 0.4 * colorize(heat)[0, 2], atol=0.51)
    with pytest.raises(InputError, match="^alpha must be between 0 and 1, got 1.5$"):  # the CLI says --alpha
        overlay(photo, heat, alpha=1.5)


# -- the real default model ----------------------------------------------------------------------
def test_cat_map_peaks_on_the_cat(default_model):
    photo = sample_array("chelsea")  # 300 x 451; the cat's head fills the middle
    x = default_model.preprocess(photo)
    maps = convscope.cam(default_model, x)
    assert maps.shape == (1, 224, 224)
    row, col = divmod(int(maps[0].argmax()), 224)
    y, x_pos = row * photo.shape[0] / 224, col * photo.shape[1] / 224
    assert 20 <= y <= 280 and 60 <= x_pos <= 400, (y, x_pos)
    inside = maps[0, 20:190, 30:200].mean()
    outside = torch.cat([maps[0, :, :20].flatten(), maps[0, :, 210:].flatten()]).mean()
    assert inside > 2 * outside


def test_bf16_matches_fp32_roughly(default_model):
    x = default_model.preprocess(sample_array("coffee"))
    fp32 = convscope.cam(default_model, x, precision="fp32")
    bf16 = convscope.cam(default_model, x, precision="bf16")
    assert torch.corrcoef(torch.stack([fp32.flatten(), bf16.flatten()]))[0, 1] > 0.9


def test_cli_cam_files_predictions_and_raw(tmp_path, capsys):
    photo = tmp_path / "my cat.jpg"
    Image.fromarray(sample_array("chelsea")).save(photo, quality=95)
    out = tmp_path / "out"
    code = main(["cam", str(photo), "sample:coffee", "--top", "2", "--out", str(out), "--save-raw"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Egyptian cat" in captured.out and "espresso" in captured.out
    names = sorted(p.name for p in (out / "cam").iterdir())
    assert "my_cat_285_cam.jpg" in names and "my_cat_285_heatmap.png" in names and "my_cat_285.npy" in names
    assert "coffee_967_cam.jpg" in names and len(names) == 12
    overlay_image = Image.open(out / "cam" / "my_cat_285_cam.jpg")
    assert overlay_image.size == (451, 300)  # the photo's own resolution
    raw = np.load(out / "cam" / "my_cat_285.npy")
    assert raw.shape == (224, 224) and raw.dtype == np.float32 and raw.max() == 1.0 and raw.min() >= 0
    peak_y, peak_x = np.unravel_index(raw.argmax(), raw.shape)
    r, g, b = np.asarray(overlay_image)[int(peak_y * 300 / 224), int(peak_x * 451 / 224)].astype(int)
    assert r > b, "the most important region is red"
    x = np.load(out / "input.npy")
    assert x.shape == (2, 3, 224, 224)


def test_cli_cam_class_by_label_and_errors(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["cam", "sample:coffee", "--class", "cup", "--class", "504", "--method", "layercam",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "cam").iterdir()) == [
        "coffee_504_cam.jpg", "coffee_504_heatmap.png", "coffee_968_cam.jpg", "coffee_968_heatmap.png"]
    assert_usage_errors(capsys, ["cam", "sample:coffee", "--out", str(out)], [
        (["--class", "1000"], "class index 1000 is out of range"),
        (["--class", "espreso"], "did you mean 'espresso'"),
        (["--layer", "_fc"], "--layer _fc: outputs [1000], not a C x H x W feature map"),
        (["--layer", "nope"], "unknown layer 'nope'"),
        (["--alpha", "1.5"], "--alpha must be between 0 and 1"),
        (["--method", "gradcam+++"], "invalid choice"),
        (["--top", "2", "--class", "1"], "not allowed with"),
    ])


def test_one_class_for_all_images_and_several_classes_for_one(hand_model):
    x = hand_input()
    assert compute_cam(hand_model, x, 1, layer="feat").classes == [1]  # an int for a batch of one
    pair = torch.cat([hand_input(), hand_input()])
    assert compute_cam(hand_model, pair, 2, layer="feat").classes == [2, 2]  # the same class for every image
    several = compute_cam(hand_model, x, [0, 2, 1], layer="feat")  # one image, a map per class
    assert several.classes == [0, 2, 1] and several.maps.shape[0] == 3
    for row, cls in enumerate([0, 2, 1]):
        np.testing.assert_allclose(several.low_res[row].numpy(), hand_map("gradcam", cls), atol=1e-6)
    with pytest.raises(InputError, match="^classes is empty"):
        compute_cam(hand_model, x, [], layer="feat")


def authors_score_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, cls: int) -> torch.Tensor:
    """haofanwang/Score-CAM's loop, written out: one masked input at a time, softmax probability as
    the weight, the weighted sum of the upsampled channels, ReLU, then min-max."""
    held = {}
    handle = layer.register_forward_hook(lambda m, i, o: held.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    activations = held["a"]
    h, w = x.shape[2:]
    total = torch.zeros(1, 1, h, w)
    with torch.no_grad():
        for k in range(activations.shape[1]):
            saliency = F.interpolate(activations[:, k:k + 1], size=(h, w), mode="bilinear", align_corners=False)
            if saliency.max() == saliency.min():
                continue
            normalized = (saliency - saliency.min()) / (saliency.max() - saliency.min())
            score = F.softmax(model(x * normalized), dim=1)[0][cls]
            total += score * saliency
    total = F.relu(total)
    return ((total - total.min()) / (total.max() - total.min()))[0, 0]


def test_score_cam_is_the_authors_definition():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    x = torch.randn(1, 3, 20, 20)
    model = convscope.load_model(net, input_size=20)
    for cls in range(4):
        ours = compute_cam(model, x, [cls], layer="2", method="scorecam")
        expected = authors_score_cam(net, x, net[2], cls)
        assert (expected > 0).any() and (expected < 1).any()
        torch.testing.assert_close(ours.maps[0], expected, atol=1e-4, rtol=0)
        for batch in (1, 3, 64):  # the batch changes the speed, never the map
            torch.testing.assert_close(compute_cam(model, x, [cls], layer="2", method="scorecam",
                                                   scorecam_batch=batch).maps, ours.maps, atol=1e-6, rtol=0)
    ticks = []
    compute_cam(model, x, [0], layer="2", method="scorecam", scorecam_batch=4, progress=ticks.append)
    assert sum(ticks) == 6 and max(ticks) <= 4  # every non-constant channel, 4 per pass


def test_aug_smooth_from_the_command_line(tmp_path):
    assert main(["cam", "sample:coffee", "--aug-smooth", "--save-raw", "--out", str(tmp_path)]) == 0
    smoothed = np.load(tmp_path / "cam" / "coffee_967.npy")
    assert main(["cam", "sample:coffee", "--save-raw", "--out", str(tmp_path / "plain")]) == 0
    plain = np.load(tmp_path / "plain" / "cam" / "coffee_967.npy")
    assert smoothed.max() == pytest.approx(1.0) and np.abs(smoothed - plain).max() > 0.01


def test_fullgrad_says_where_its_map_comes_from(tmp_path, capsys):
    """FullGrad uses the input and every bias, not the layer: the output and the heatmap's title say so."""
    assert main(["cam", "sample:coffee", "--method", "fullgrad", "--out", str(tmp_path)]) == 0
    assert "FullGrad on the input and every bias: 1 maps in" in capsys.readouterr().out
    assert METHODS["fullgrad"].where("_act1") == "the input and every bias"
    assert METHODS["gradcam"].where("_act1") == "layer _act1"


def test_sampled_methods_fused_layers_and_eigen_smooth_from_the_command_line(tmp_path, capsys):
    """The options of the sampled methods, several layers and eigen_smooth: each reaches the map (the
    same map as the library's), the passes are announced before the work, and a wrong combination
    is one line and exit 2."""
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["cam", "sample:coffee", "--layer", "_blocks.10", "--layer", "_act1", "--fuse", "max",
                 "--method", "layercam", "--save-raw", "--out", str(out)]) == 0
    assert "Layer-CAM on layer _blocks.10 + _act1: 1 maps" in capsys.readouterr().out
    model = convscope.load_model()
    x = model.preprocess([sample_array("coffee")])
    fused = compute_cam(model, x, 967, ["_blocks.10", "_act1"], "layercam", fuse="max")
    np.testing.assert_allclose(np.load(out / "cam" / "coffee_967.npy"), fused.maps[0].numpy(), atol=1e-6)

    assert main(["cam", "sample:coffee", "--method", "smoothgradcam++", "--samples", "2", "--seed", "3",
                 "--eigen-smooth", "--save-raw", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Smooth Grad-CAM++: up to 2 forward passes (per map: 2 noisy copies, each with a backward pass; 1 map)" \
        in err
    smooth = compute_cam(model, x, 967, None, "smoothgradcam++", samples=2, seed=3, eigen_smooth=True)
    np.testing.assert_allclose(np.load(out / "cam" / "coffee_967.npy"), smooth.maps[0].numpy(), atol=1e-6)

    assert_usage_errors(capsys, ["cam", "sample:coffee", "--out", str(out)], [
        (["--fuse", "max"], "--fuse max: one layer has nothing to fuse with"),
        (["--layer", "_act1", "--fuse", "mean"], "--fuse mean: one layer has nothing to fuse with"),
        (["--layer", "_act1", "--layer", "_act1"], "--layer _act1: given twice"),
        (["--samples", "3"], "--samples: gradcam draws no samples"),
        (["--method", "eigencam", "--eigen-smooth"], "--eigen-smooth: Eigen-CAM's map is not a sum over channels"),
        (["--method", "fullgrad", "--layer", "_act1", "--layer", "_blocks.10"], "nothing to fuse"),
        (["--fuse", "min", "--layer", "_act1", "--layer", "_blocks.10"], "invalid choice"),
    ])


def test_score_cam_family_announces_its_passes_before_the_work(hand_model, capsys):
    """Per map: channels x copies masked inputs (Score-CAM: one per channel)."""
    from convscope.techniques.cams import cam_settings

    assert cam_settings(hand_model, "feat", "sscam").passes_per_image(hand_model) == \
        (70, "35 copies x 2 channels of masked inputs")
    assert cam_settings(hand_model, "feat", "iscam", samples=3).passes_per_image(hand_model) == \
        (6, "3 copies x 2 channels of masked inputs")
    assert cam_settings(hand_model, "feat", "scorecam").passes_per_image(hand_model) == \
        (2, "2 channels of masked inputs")
    assert cam_settings(hand_model, "feat", "gradcam").passes_per_image(hand_model) is None


def test_masked_inputs_per_pass_follow_the_allocator(monkeypatch):
    """4 per pass on a CPU with glibc's allocator as it comes, 16 where freed memory is kept."""
    from convscope.techniques import cams

    cpu = torch.device("cpu")
    monkeypatch.setattr(cams, "keeps_freed_memory", lambda: False)
    assert cams.default_scorecam_batch(cpu) == 4
    monkeypatch.setattr(cams, "keeps_freed_memory", lambda: True)
    assert cams.default_scorecam_batch(cpu) == 16
    assert cams.default_scorecam_batch(torch.device("cuda")) == 32
