"""Targets (convscope/targets.py): what a map explains, hand-computed on tiny models built to return
each output kind, the target chosen from the output, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import convscope
from convscope.catalog import TARGET_NAMES
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.presentation.plans import class_pairs
from convscope.samples import sample_array
from convscope.targets import TARGETS, TargetOptions, detected_target_name, make_target, region_mask
from convscope.techniques.cams import compute_cam


class Classifier(nn.Module):
    """conv 3 -> 4 channels, ReLU, global average pooling, Linear 4 -> 3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class Segmenter(nn.Module):
    """A backbone (conv 3 -> 4, ReLU) and a 1x1 conv head to 3 classes, returning ``{"out": B x 3 x H x W}``
    as torchvision's segmentation models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.head(self.backbone(x))}


class Embedder(Classifier):
    """The classifier without its Linear layer: B x 4 embeddings."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def test_the_catalog_lists_the_registered_targets():
    assert tuple(TARGETS) == TARGET_NAMES


def test_the_target_is_chosen_from_what_the_model_returns():
    assert detected_target_name(torch.zeros(2, 5)) == "class"
    assert detected_target_name(torch.zeros(2, 5), multilabel=True) == "multilabel"
    assert detected_target_name(torch.zeros(2, 5), reference=True) == "embedding"
    assert detected_target_name({"out": torch.zeros(2, 3, 4, 4), "aux": None}) == "segmentation"
    assert detected_target_name(torch.zeros(2, 3, 4, 4)) == "segmentation"
    assert detected_target_name([{"boxes": torch.zeros(0, 4)}]) is None
    assert convscope.load_model(Segmenter(), input_size=8).target.name == "segmentation"
    assert convscope.load_model(Classifier(), input_size=8).target.name == "class"


def test_a_target_that_does_not_fit_the_output_is_refused_naming_what_the_model_returned():
    with pytest.raises(InputError, match=r"target segmentation: needs a model returning B x classes x H x W scores .*"
                                         r"but the model returns a tensor 1 x 3"):
        convscope.load_model(Classifier(), input_size=8, target="segmentation")
    with pytest.raises(InputError, match="target class: needs a model returning B x N scores, but the model returns "
                                         "a dict with keys 'out'"):
        convscope.load_model(Segmenter(), input_size=8, target="class")
    with pytest.raises(InputError, match="unknown; did you mean softmax"):
        convscope.load_model(Classifier(), input_size=8, target="softmx")


def test_class_softmax_and_rest_scores():
    logits = torch.tensor([[1.0, 2.0, -1.0]])
    log_softmax = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    torch.testing.assert_close(make_target("class", logits).scores(logits), logits)
    torch.testing.assert_close(make_target("softmax", logits).scores(logits), log_softmax.exp())
    # ReST: y_c - cross_entropy(y, c) = y_c + log softmax(y)_c
    rest = make_target("rest", logits).scores(logits)
    for c in range(3):
        expected = logits[0, c] - F.cross_entropy(logits, torch.tensor([c]))
        assert float(rest[0, c]) == pytest.approx(float(expected), abs=1e-6)


def test_a_softmax_map_differentiates_the_probability():
    """Grad-CAM of the softmax target: weights mean_hw dp_c/dA = p_c (W_c - sum_j p_j W_j) / (h w) x (h w)
    per channel -- the gradient through global average pooling is the same at every position."""
    net = Classifier().eval()
    model = convscope.load_model(net, input_size=6, target="softmax")
    x = torch.randn(1, 3, 6, 6)
    result = compute_cam(model, x, 1, "features.1", "gradcam")
    with torch.no_grad():
        acts = net.features(x)
        p = net(x).softmax(dim=1)[0]
    weight = net.fc.weight
    alphas = p[1] * (weight[1] - (p[:, None] * weight).sum(dim=0)) / 36
    expected = torch.relu((alphas[:, None, None] * acts[0]).sum(dim=0))
    torch.testing.assert_close(result.low_res[0], expected, atol=1e-6, rtol=1e-5)


def test_multilabel_chooses_every_class_above_the_threshold_without_softmax():
    net = Classifier().eval()
    with torch.no_grad():
        net.fc.bias.copy_(torch.tensor([3.0, -3.0, 0.5]))
        net.fc.weight.mul_(0.01)
    model = convscope.load_model(net, input_size=6, multilabel=True, labels=["a", "b", "c"])
    assert model.target.name == "multilabel"
    x = torch.rand(2, 3, 6, 6)
    ranked = model.predict(x, top=1)
    with torch.no_grad():
        sigmoid = net(x).sigmoid()
    assert [p.index for p in ranked[0]] == [0, 2]  # both above 0.5 though top is 1
    assert ranked[0][0].probability == pytest.approx(float(sigmoid[0, 0]), abs=1e-6)
    assert all(p.chosen for p in ranked[0])
    assert class_pairs((), None, ranked) == [(0, 0), (0, 2), (1, 0), (1, 2)]
    # the metrics follow the sigmoid
    torch.testing.assert_close(model.measure(x), sigmoid)
    strict = convscope.load_model(net, input_size=6, multilabel=True, target_options=TargetOptions(threshold=0.99))
    with pytest.raises(InputError, match=r"threshold: no class of image 1 is above it \(highest: class 0"):
        class_pairs((), None, strict.predict(x, top=1))


def _hand_segmentation_cam(net, x, cls, region):
    """Grad-CAM of sum_{region} out_c for out = head(A): dT/dA_k = W[c, k] R, so alpha_k = W[c, k] |R| / (h w)."""
    with torch.no_grad():
        acts = net.backbone(x)[0]
    alphas = net.head.weight[cls, :, 0, 0] * region.sum() / region.numel()
    return torch.relu((alphas[:, None, None] * acts).sum(dim=0)).detach()


def test_segmentation_sums_a_class_over_its_pixels():
    net = Segmenter().eval()
    model = convscope.load_model(net, input_size=8, labels=["__background__", "road", "car"])
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = net(x)["out"]
    assigned = out.argmax(dim=1)[0]
    present = sorted(set(assigned.flatten().tolist()), key=lambda c: -int((assigned == c).sum()))
    ranked = model.predict(x, top=1)
    assert [p.index for p in ranked[0]] == present  # every class with pixels, most pixels first
    assert ranked[0][0].probability == pytest.approx(float((assigned == present[0]).float().mean()))
    choice = next(c for c in present if c != 0)
    assert [p.index for p in ranked[0] if p.chosen] == [choice]  # the largest class but the background
    scores = model.logits(x)
    for c in range(3):
        assert float(scores[0, c]) == pytest.approx(float(out[0, c][assigned == c].sum()), abs=1e-5)
    assert model.target.first_choice({"out": out}, model.labels) == [choice]
    result = compute_cam(model, x, choice, None, "gradcam")
    assert result.layer == "backbone.1"  # the backbone's last stage
    expected = _hand_segmentation_cam(net, x, choice, (assigned == choice).float())
    torch.testing.assert_close(result.low_res[0], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.regions(x, [choice])[0], (assigned == choice).float())


def test_segmentation_over_a_fixed_region():
    net = Segmenter().eval()
    region = region_mask("2,1,6,4", (8, 8))  # x0, y0, x1, y1 in the input's pixels, ends excluded
    assert region.sum() == 4 * 3 and region[1:4, 2:6].all()
    model = convscope.load_model(net, input_size=8, target_options=TargetOptions(region=region))
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = net(x)["out"]
    torch.testing.assert_close(model.scores(x), (out * region).sum(dim=(2, 3)))
    result = compute_cam(model, x, 2, None, "gradcam")
    torch.testing.assert_close(result.low_res[0], _hand_segmentation_cam(net, x, 2, region), atol=1e-6, rtol=1e-5)
    assert len(model.predict(x, top=1)[0]) == 3  # every class has the fixed region


def test_a_region_with_no_pixel_is_refused(tmp_path):
    with pytest.raises(InputError, match="region: the box 20,20,30,30 in the 8x8 input holds no pixel"):
        region_mask("20,20,30,30", (8, 8))
    with pytest.raises(InputError, match="x0 < x1"):
        region_mask("5,1,2,4", (8, 8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(InputError, match="holds no pixel"):
        region_mask(str(tmp_path / "empty.png"), (8, 8))
    inside = np.zeros((4, 4), np.uint8)
    inside[:2, :2] = 255
    Image.fromarray(inside).save(tmp_path / "corner.png")
    assert region_mask(str(tmp_path / "corner.png"), (8, 8))[:4, :4].all()
    # a class no pixel is assigned to has an empty region
    net = Segmenter().eval()
    model = convscope.load_model(net, input_size=8, labels=["__background__", "road", "car"])
    x = torch.randn(1, 3, 8, 8)
    ranked = model.predict(x, top=1)
    missing = [c for c in range(3) if c not in {p.index for p in ranked[0]}]
    assert missing == [2]  # this seeded network assigns no pixel to "car"
    with pytest.raises(InputError, match="classes: no pixel of cat.png is assigned to 'car'"):
        class_pairs((2,), None, ranked, ["cat.png"], model.labels)


def test_embedding_similarity_to_a_reference():
    net = Embedder().eval()
    reference = torch.tensor([1.0, 0.0, 2.0, 0.5])
    model = convscope.load_model(net, input_size=6,
                                 target_options=TargetOptions(reference=reference, reference_name="dog.jpg"))
    assert model.target.name == "embedding" and model.labels == ("similarity to dog.jpg",)
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad():
        embeddings = net(x)
    torch.testing.assert_close(model.scores(x)[:, 0], F.cosine_similarity(embeddings, reference[None], dim=1))
    ranked = model.predict(x, top=1)
    assert ranked[0][0].kind == "similarity" and ranked[0][0].chosen
    result = compute_cam(model, x[:1], None, None, "gradcam")
    assert result.classes == [0]
    with pytest.raises(InputError, match="B x 3 embeddings"):
        convscope.load_model(net, input_size=6, target_options=TargetOptions(reference=torch.ones(3)))


def test_output_explains_one_raw_output():
    net = Classifier().eval()
    model = convscope.load_model(net, input_size=6, target="output")
    assert model.labels == ("output 0", "output 1", "output 2")
    x = torch.rand(1, 3, 6, 6)
    ranked = model.predict(x, top=3)
    assert [p.index for p in ranked[0]] == [0, 1, 2] and [p.chosen for p in ranked[0]] == [True, False, False]
    with torch.no_grad():
        assert ranked[0][2].value == pytest.approx(float(net(x)[0, 2]), abs=1e-6)


def test_the_model_is_left_as_it_was():
    net = Segmenter().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = convscope.load_model(net, input_size=8)
    compute_cam(model, torch.randn(1, 3, 8, 8), 1, None, "gradcam")
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# -- the command line ----------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--target", "embedding"], "--reference: the embedding target compares with a reference image's embedding"),
    (["--reference", "nowhere.png"], "--reference nowhere.png: no such file or folder"),
    (["--target", "class", "--reference", "sample:coffee"], "only the embedding target compares with a reference"),
    (["--target", "class", "--region", "1,2,3,4"], "only the segmentation target sums over a region"),
    (["--region", "1,2"], "--region 1,2: neither a box x0,y0,x1,y1 nor a mask image file"),
    (["--region", "4,2,3,5"], "x0 < x1"),
    (["--threshold", "1.5"], "--threshold must be between 0 and 1"),
    (["--multilabel", "--target", "softmax"], "--multilabel: a multilabel model, but target softmax"),
])
def test_bad_target_flags_are_one_line_before_the_model(flags, message, capsys, tmp_path):
    assert main(["cam", "sample:coffee", "--weights", "random", "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_a_target_that_does_not_fit_the_model_is_one_line(capsys, tmp_path):
    assert main(["cam", "sample:coffee", "--weights", "random", "--target", "segmentation", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--target segmentation: needs a model returning B x classes x H x W scores" in err
    assert "the model returns a tensor 1 x 1000" in err and "Traceback" not in err


SEGMENTER = ["--model", "torchvision:lraspp_mobilenet_v3_large", "--weights", "random"]


def test_cam_on_a_segmentation_model_outlines_the_region(capsys, tmp_path):
    assert main(["cam", "sample:chelsea", *SEGMENTER, "--region", "104,104,416,416", "--class", "cat",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "target: segmentation -- the sum of a class's logits over a fixed region (the model returns a dict" in out
    overlay = np.asarray(Image.open(tmp_path / "cam" / "chelsea_8_cam.jpg").convert("L"), np.float32)
    height, width = overlay.shape  # the photo's size: the box is a fifth of the input in from each side
    top, left = round(height * 104 / 520), round(width * 104 / 520)
    assert overlay[top + 1, left + 10:width - left - 10].mean() > 200  # the outline, white
    assert overlay[height // 2, width // 2 - 20:width // 2 + 20].mean() < 200  # inside: the blended map


def test_segmentation_errors_are_one_line(capsys, tmp_path):
    assert main(["cam", "sample:chelsea", *SEGMENTER, "--class", "cat", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--class: no pixel of sample:chelsea is assigned to 'cat', so its region is empty (the model assigns cow" \
        in err and err.count("\n") == 1
    assert not (tmp_path / "cam").exists() or not list((tmp_path / "cam").iterdir())


def test_embedding_and_multilabel_from_the_command_line(capsys, tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for name in ("coffee", "grace_hopper"):
        Image.fromarray(sample_array(name)).save(folder / f"{name}.png")
    model = ["--model", "torchvision:resnet18", "--weights", "random"]
    assert main(["cam", "sample:chelsea", *model, "--reference", str(folder), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "target: embedding -- the cosine similarity of the embedding to refs (2 images)'s" in out
    assert "similarity to refs (2 images)" in out and (tmp_path / "a" / "cam" / "chelsea_0_cam.jpg").exists()
    assert main(["cam", "sample:chelsea", *model, "--multilabel", "--threshold", "0.99",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--threshold: no class of sample:chelsea is above it (highest:" in err and err.count("\n") == 1


def test_pointing_into_the_region_the_target_explains():
    """No boxes needed: a segmentation map points into its class's pixels (hit: its maximum inside;
    energy: its mass inside)."""
    net = Segmenter().eval()
    model = convscope.load_model(net, input_size=8)
    x = torch.randn(1, 3, 8, 8)
    found = convscope.evaluate(model, x, 1, methods="gradcam", metrics="pointing")[0].methods[0]
    heat = compute_cam(model, x, 1, None, "gradcam").maps[0]
    with torch.no_grad():
        inside = net(x)["out"].argmax(dim=1)[0] == 1
    energy = float(heat[inside].sum() / heat.sum())
    assert 0 < energy < 1 and found.pointing == (bool(inside[heat == heat.max()].any()), pytest.approx(energy))
    with pytest.raises(InputError, match="^metrics: pointing needs boxes"):
        convscope.evaluate(convscope.load_model(Classifier(), input_size=6), torch.rand(1, 3, 6, 6), 0,
                           methods="gradcam", metrics="pointing")
