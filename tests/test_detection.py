"""The detection target: hand-computed on a tiny detector returning torchvision's list of dicts, against
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` (and its ``fasterrcnn_reshape_transform`` for the feature
pyramid) on torchvision's Faster R-CNN, and from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

import convscope
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.layers import PyramidLevels
from convscope.samples import sample_array
from convscope.targets import Detected, TargetOptions
from convscope.techniques.cams import compute_cam
from convscope.techniques.capture import cam_layer, layer_pass

BOXES = [[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]]


class TinyDetector(nn.Module):
    """conv 3 -> 2 channels (the CAM layer), then two fixed boxes labelled 1 and 2, box j scored
    sigmoid(mean of channel j): torchvision's output, a list of dicts per image."""

    def __init__(self, labels=(1, 2)) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.labels = labels

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        scores = self.conv(x).mean(dim=(2, 3)).sigmoid()
        return [{"boxes": torch.tensor(BOXES), "labels": torch.tensor(self.labels), "scores": row} for row in scores]


def _model(threshold=0.0, labels=(1, 2)):
    return convscope.load_model(TinyDetector(labels).eval(), input_size=8, labels=["bg", "cat", "dog"],
                                target_options=TargetOptions(score_threshold=threshold))


def test_each_box_is_explained_by_its_score_plus_iou():
    model = _model()
    assert model.target.name == "detection"
    x = torch.randn(2, 3, 8, 8)
    ranked = model.predict(x, top=5)
    with torch.no_grad():
        scores = model.module(x)
    found = model.target.options.detections
    assert [(d.image, d.label) for d in found] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert model.labels == ("cat box 0", "dog box 1", "cat box 2", "dog box 3")
    assert [sorted(p.index for p in row) for row in ranked] == [[0, 1], [2, 3]] and all(p.chosen for p in ranked[0])
    box_1 = next(p for p in ranked[0] if p.index == 1)
    assert box_1.as_json() == {"index": 1, "label": "dog box 1", "score": pytest.approx(float(scores[0]["scores"][1])),
                               "class": 2, "box": BOXES[1]}
    table = model.logits(x)  # IoU 1 with itself + its score; image 1's boxes also match image 0's row
    torch.testing.assert_close(table[0], torch.tensor([1 + scores[0]["scores"][0], 1 + scores[0]["scores"][1]] * 2))
    # Grad-CAM of box 1 (channel 1's score): dT/dA = sigmoid'(m_1) / (h w) on channel 1, zero on channel 0
    result = compute_cam(model, x[:1], [1], "conv", "gradcam")
    with torch.no_grad():
        acts = model.module.conv(x[:1])[0]
    m = acts[1].mean()
    alpha = torch.sigmoid(m) * (1 - torch.sigmoid(m)) / 64
    torch.testing.assert_close(result.low_res[0], torch.relu(alpha * acts[1]), atol=1e-7, rtol=1e-5)
    regions = model.regions(x[:1], [1])
    assert regions.shape == (1, 8, 8) and regions[0, 2:8, 2:8].all() and regions.sum() == 36


def test_a_box_whose_label_changed_or_that_moved_scores_zero():
    model = _model()
    model.predict(torch.randn(1, 3, 8, 8))
    other = [{"boxes": torch.tensor(BOXES), "labels": torch.tensor([2, 2]), "scores": torch.tensor([0.9, 0.8])}]
    assert model.target.scores(other)[0].tolist() == pytest.approx([0.0, 1.8])
    moved = [{"boxes": torch.tensor([[4.0, 4.0, 8.0, 8.0], [2.0, 2.0, 8.0, 8.0]]), "labels": torch.tensor([1, 2]),
              "scores": torch.tensor([0.9, 0.8])}]
    assert model.target.scores(moved)[0].tolist() == pytest.approx([0.0, 1.8])  # IoU 1/4 with box 0


def test_nothing_above_the_score_threshold_is_one_line():
    model = _model(threshold=0.99)
    with pytest.raises(InputError, match=r"^score_threshold: the detector finds no box above 0.99 in any image"):
        model.predict(torch.randn(1, 3, 8, 8))


def _faster_rcnn():
    torch.manual_seed(0)
    net = tvm.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                              box_score_thresh=0.0).eval()
    model = convscope.load_model(net, input_size=320, mean=(0, 0, 0), std=(1, 1, 1),
                                 target_options=TargetOptions(score_threshold=0.01))
    x = model.preprocess([sample_array("coffee")])
    box = model.predict(x, top=1)[0][0].index
    return net, model, x, box


def test_faster_rcnn_scores_and_gradients_equal_fasterrcnn_box_score_target():
    """On torchvision's Faster R-CNN: each box's score equals pytorch-grad-cam's FasterRCNNBoxScoreTarget, and
    so does its gradient at the backbone's last stage (convscope's default layer), which every gradient map is
    made of. (Its maps cannot be compared here: with random weights that stage's activations are about 1e-8,
    and the peer's normalization, / (max + 1e-7), flattens them.)"""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    net, model, x, box = _faster_rcnn()
    found: Detected = model.target.options.detections[box]
    peer_target = FasterRCNNBoxScoreTarget([found.label], np.array([found.box]))
    passed = layer_pass(model, x, cam_layer(model), "fp32", [box], True)
    assert cam_layer(model) == "backbone.body.16"
    assert all(p.grad is None for p in net.parameters())  # convscope filled no .grad
    held = {}
    handle = net.backbone.body["16"].register_forward_hook(lambda _m, _i, output: held.setdefault("output", output))
    try:
        theirs = peer_target(net(x)[0])
        (gradient,) = torch.autograd.grad(theirs.sum(), held["output"])
    finally:
        handle.remove()
    theirs = float(theirs.detach())
    assert float(passed.logits[0, box]) == pytest.approx(theirs, abs=1e-6) and theirs > 1  # IoU 1 + its score
    assert float(gradient.abs().max()) > 0
    torch.testing.assert_close(passed.grads, gradient, atol=1e-12, rtol=1e-5)


def test_the_feature_pyramid_equals_fasterrcnn_reshape_transform():
    """The FPN's levels (a dict) as one map: |level| resized to the 'pool' level and stacked; Eigen-CAM on it
    equals pytorch-grad-cam's tutorial (EigenCAM on model.backbone with fasterrcnn_reshape_transform)."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    net, model, x, box = _faster_rcnn()
    layer = model.layer("backbone")
    assert isinstance(layer.view, PyramidLevels) and layer.shape == (3 * 256, 5, 5)
    ours = compute_cam(model, x, [box], "backbone", "eigencam")
    with pytorch_grad_cam.EigenCAM(model=net, target_layers=[net.backbone],
                                   reshape_transform=fasterrcnn_reshape_transform) as extractor:
        found: Detected = model.target.options.detections[box]
        theirs = extractor(input_tensor=x.clone(),
                           targets=[FasterRCNNBoxScoreTarget([found.label], np.array([found.box]))])
    torch.testing.assert_close(ours.maps[0], torch.from_numpy(theirs[0]), atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="^layer: a feature pyramid's levels are seen as one map for the methods "
                                         "without gradients"):
        compute_cam(model, x, [box], "backbone", "gradcam")


def test_detection_from_the_command_line(capsys, tmp_path):
    model = ["--model", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", "random"]
    assert main(["cam", "sample:coffee", *model, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--score-threshold: the detector finds no box above 0.5 in any image" in err and err.count("\n") == 1
    assert main(["cam", "sample:coffee", *model, "--score-threshold", "0.01", "--top", "2",
                 "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "target: detection -- the score of the detection matching a box" in out
    assert "Grad-CAM on layer backbone.body.16: 2 maps" in out
    assert len(list((tmp_path / "b" / "cam").glob("coffee_*_cam.jpg"))) == 2


def test_a_dataset_run_on_a_detector_has_a_row_per_box(tmp_path):
    from PIL import Image

    from convscope.dataset import load, summary
    from convscope.dataset.report import write_dataset_report

    source = tmp_path / "photos"
    source.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(source / f"{name}.png")
    model = _model()
    folder = convscope.dataset.run(model, source, tmp_path / "out", metrics=["deletion"], steps=4)
    rows = load(folder).to_pylist()
    assert summary(load(folder))["images"] == 2 and len(rows) == 4
    reference = _model()
    x = reference.preprocess([str(source / "a.png"), str(source / "b.png")])
    ranked = reference.predict(x)
    for image, predictions in enumerate(ranked):
        mine = [row for row in rows if row["image"] == image]
        assert [row["box"] for row in mine] == [list(map(float, p.box)) for p in predictions]  # best first
        assert [row["thumb"] for row in mine] == [f"{image:06d}-{k:02d}.jpg" for k in range(2)]
        for row, p in zip(mine, predictions):
            assert row["top_classes"] == [p.class_index] and row["cam_class"] == p.class_index
            assert row["top_probabilities"][0] == pytest.approx(p.value, abs=1e-6)
            expected = compute_cam(reference, x[image:image + 1], [p.index], None, "gradcam").low_res[0]
            torch.testing.assert_close(torch.tensor(row["cam"]).view(*row["cam_shape"]), expected)
            assert row["deletion"] is not None
    assert sorted(p.name for p in (folder / "thumbs").iterdir()) == [f"{i:06d}-{k:02d}.jpg" for i in (0, 1)
                                                                     for k in (0, 1)]
    index = write_dataset_report(tmp_path / "out", model.class_labels)
    first = ", ".join(f"{v:.0f}" for v in rows[0]["box"])
    assert f"a.png (box {first})" in (folder / "pages" / "image-000000.html").read_text(encoding="utf-8")
    assert "000000-01.jpg" in (folder / "pages" / "image-000001.html").read_text(encoding="utf-8")
    assert index.exists()


def test_a_dataset_image_without_a_box_is_a_row_without_a_map(tmp_path):
    from PIL import Image

    from convscope.dataset import load

    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "a.png")
    folder = convscope.dataset.run(_model(threshold=0.999), tmp_path / "a.png", tmp_path / "out")
    (row,) = load(folder).to_pylist()
    assert row["error"] is None and row["cam"] is None and row["box"] is None and row["top_classes"] == []
    with pytest.raises(InputError, match="^examples: TinyDetector is a detector"):
        convscope.dataset.run(_model(), tmp_path / "a.png", tmp_path / "out2", examples="default")
