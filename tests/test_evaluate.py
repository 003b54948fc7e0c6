"""Which map to trust: every method measured and ranked, honest about identical and empty maps, from
Python and the command line, with bad input refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope
from conftest import assert_usage_errors
from convscope import metrics
from convscope.catalog import ATTRIBUTION_METHOD_NAMES
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.techniques.attributions import attribute
from convscope.techniques.cams import compute_cam


def test_every_method_measured_and_ranked(tiny_model):
    x = torch.randn(2, 3, 16, 16)
    result = convscope.evaluate(tiny_model, x, [1, 3], steps=4)
    assert [(e.image, e.class_index) for e in result] == [(0, 1), (1, 3)]
    for evaluation in result:
        methods = evaluation.methods
        assert sorted(m.method for m in methods) == sorted([*convscope.CAM_METHODS, *ATTRIBUTION_METHOD_NAMES])
        scores = [m.score for m in methods]
        assert scores == sorted(scores, reverse=True)  # best first
        gradcam = next(m for m in methods if m.method == "gradcam")
        one = x[evaluation.image:evaluation.image + 1]
        assert gradcam.deletion == pytest.approx(float(metrics.deletion(tiny_model, one, gradcam.map[None],
                                                                        [evaluation.class_index], steps=4)[0]))
        assert gradcam.insertion == pytest.approx(float(metrics.insertion(tiny_model, one, gradcam.map[None],
                                                                          [evaluation.class_index], steps=4)[0]))
        assert gradcam.average_drop == pytest.approx(float(metrics.average_drop(
            tiny_model, one, gradcam.map[None], [evaluation.class_index])[0]), abs=1e-4)
        assert gradcam.sanity.stages == ["classifier", "stage 2 (8x8)", "stage 1 (16x16)"]
        for measured in methods:  # each map as compute_cam makes it, the sampled ones with their default copies
            if measured.method in ATTRIBUTION_METHOD_NAMES:  # the positive part of the summed attribution, min-max
                found = attribute(tiny_model, one, [evaluation.class_index], measured.method)
                expected = torch.relu(found.attributions.sum(dim=1))[0]
                span = expected.max() - expected.min()
                expected = (expected - expected.min()) / span if span > 0 else (expected > 0).float()  # constant
                torch.testing.assert_close(measured.map, expected, atol=1e-6, rtol=1e-5)
                continue
            torch.testing.assert_close(measured.map, compute_cam(tiny_model, one, [evaluation.class_index], None,
                                                                 measured.method).maps[0].cpu())
        # relu2 feeds global average pooling and a linear layer: the gradient is the same everywhere, and
        # Grad-CAM is the original CAM; the network after it is piecewise linear, so ShapleyCAM is Grad-CAM
        assert sorted(gradcam.same_as) == ["cam", "hirescam", "shapleycam", "xgradcam"]  # ShapleyCAM: H A = 0 here
        assert any("reduce to the original CAM" in note for note in evaluation.notes)
        assert any(note.startswith("Eigen-CAM does not depend on the class") for note in evaluation.notes)
        rows = evaluation.as_json()
        assert {"image", "class", "label", "method", "deletion", "insertion", "score", "average_drop", "increase",
                "sanity", "empty"} <= set(rows[0])
        assert set(rows[0]["sanity"]) == {"passed", "seeds", "threshold", "stages"}
        assert set(rows[0]["sanity"]["stages"][0]) == {"stage", "spearman", "spread", "ssim"}
    html = result._repr_html_()
    assert html.count("<table>") == 2 and "data:image/png;base64," in html and "Grad-CAM = " in html


class NegativeClass(nn.Module):
    """conv -> ReLU -> global pool -> linear whose class 1 weights are all negative: its Grad-CAM is empty."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight[1] = -1.0

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_an_empty_map_is_flagged():
    model = convscope.load_model(NegativeClass(), input_size=8)
    evaluation = convscope.evaluate(model, torch.randn(1, 3, 8, 8), 1, methods="gradcam", metrics="deletion")[0]
    assert evaluation.methods[0].empty and evaluation.as_json()[0]["empty"] is True
    assert "Grad-CAM: the map is empty -- no position raised the class score." in evaluation.notes


def test_the_command_line(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photo)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"photo.png": {"7": [0, 0, 40, 30]}}))
    out = tmp_path / "out"
    command = ["evaluate", str(photo), "--model", "torchvision:squeezenet1_1", "--weights", "random",
               "--methods", "gradcam,eigencam", "--class", "7", "--steps", "5", "--boxes", str(boxes),
               "--out", str(out)]
    assert main(command) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "photo.png" in printed and "Grad-CAM" in printed and "Eigen-CAM" in printed and "pointing" in printed
    folder = out / "evaluate"
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "photo_7_curves.png", "photo_7_methods.png"]
    rows = json.loads((folder / "metrics.json").read_text())
    assert [row["method"] for row in rows] in (["gradcam", "eigencam"], ["eigencam", "gradcam"])
    assert all(set(row["pointing"]) == {"hit", "energy"} and row["class"] == 7 for row in rows)
    assert main([*command, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows

    not_json = tmp_path / "bad.json"
    not_json.write_text("{nope")
    assert_usage_errors(capsys, ["evaluate", str(photo), "--model", "torchvision:squeezenet1_1", "--weights",
                                 "random", "--out", str(out)], [
        (["--methods", "gradcam,nope"], "--methods: unknown 'nope'; choose from gradcam"),
        (["--metrics", "deletion,speed"], "--metrics: unknown 'speed'"),
        (["--metrics", "pointing"], "--metrics: pointing needs boxes"),
        (["--steps", "0"], "at least 1"),
        (["--boxes", str(not_json)], f"--boxes {not_json}: not a JSON file"),
        (["--boxes", str(tmp_path / "none.json")], "no such file"),
    ])
    for content, fragment in (({"other.png": {"7": [0, 0, 1, 1]}}, "'other.png' not among the images"),
                              ({"photo.png": {"8": [0, 0, 1, 1]}}, "class '8' is not evaluated for this image"),
                              ({"photo.png": {"7": [0, 0, 100, 10]}}, "is not inside the 80x60 photo")):
        boxes.write_text(json.dumps(content))
        assert_usage_errors(capsys, command, [([], fragment)])


def test_the_report_recommends_the_best_class_dependent_map_that_passed_the_sanity_check():
    from convscope.presentation.run import recommendation, sanity_verdict
    from convscope.techniques.evaluate import MethodEvaluation
    from convscope.techniques.metrics import SanityResult

    def method(name, title, score, spearman, spread=0.05):
        m = MethodEvaluation(name, title, torch.ones(2, 2), deletion=0.0, insertion=score)
        m.sanity = SanityResult(["classifier"], [spearman], [0.5], spearman < 0.5, [spread], 5)
        return [m]

    # Eigen-CAM ignores the class: even ranked first and "passing", it is never recommended
    groups = [method("eigencam", "Eigen-CAM", 0.6, 0.2), method("gradcam", "Grad-CAM", 0.5, 0.1)]
    assert recommendation(groups).startswith("convscope recommends Grad-CAM: the best-ranked map (score 0.500) that "
                                             "depends on the class and passed the sanity check")
    failing = [method("eigencam", "Eigen-CAM", 0.6, 1.0), method("gradcam", "Grad-CAM", 0.5, 0.67),
               method("layercam", "Layer-CAM", 0.4, 0.9)]
    assert recommendation(failing) == (
        "No class-dependent map passed the sanity check here, so none can be recommended for why this class was "
        "chosen; the best-ranked class-dependent map is Grad-CAM (score 0.500), but it shows what the layer responds "
        "to more than the reason.")
    assert recommendation(groups[:1]).startswith("No class-dependent map is available here")
    assert sanity_verdict("Grad-CAM++", method("gradcam++", "Grad-CAM++", 0.5, 0.98, 0.01)[0].sanity) == (
        "Grad-CAM++ barely changes when the classifier is randomized (Spearman 0.98 \u00b1 0.01 over 5 "
        "randomizations; below 0.5 passes): it shows what the layer responds to, not why this class was chosen.")
    assert "the map follows the reason" in sanity_verdict("Grad-CAM", groups[1][0].sanity)
    assert "does not depend on the class by construction" in sanity_verdict("Eigen-CAM", None, class_independent=True)


def test_the_sanity_check_averages_its_randomizations(tiny_model):
    """The correlation is the mean over the seeds, the spread their standard deviation; one seed is
    the old single randomization."""
    from convscope.techniques import metrics
    from convscope.techniques.cams import compute_cam

    x = torch.randn(1, 3, 16, 16)

    def draw(m, inputs, classes):
        return compute_cam(m, inputs, classes, "relu2", "gradcam").maps

    each = [metrics.sanity(tiny_model, x, [1], draw, "relu2", seeds=[seed], cascade=False)[0] for seed in range(3)]
    together = metrics.sanity(tiny_model, x, [1], draw, "relu2", seeds=3, cascade=False)[0]
    values = [r.spearman[0] for r in each]
    assert together.seeds == 3 and together.spearman[0] == pytest.approx(float(np.mean(values)))
    assert together.spread[0] == pytest.approx(float(np.std(values)))
    assert together.passed == (together.spearman[0] < metrics.SANITY_THRESHOLD)
    assert together.as_json()["stages"][0]["spread"] == round(together.spread[0], 4)
    with pytest.raises(InputError, match="sanity_seeds must be at least 1"):
        metrics.sanity(tiny_model, x, [1], draw, "relu2", seeds=0)


def test_the_report_has_a_which_map_to_trust_section(tmp_path):
    from convscope.presentation.run import run_all

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    model = convscope.load_model(net, input_size=16)
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    html = run_all(model, [photo], ["p.png"], tmp_path, filters=False, say=lambda line: None).read_text()
    assert "Which map to trust" in html and '<p class="recommend"><strong>' in html
    assert "The maps of Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM, HiResCAM" in html  # the default set, named
    assert (tmp_path / "evaluate" / "metrics.json").exists()
    assert len(list((tmp_path / "evaluate").glob("p_*_methods.png"))) == 1
    timings = {}
    no_trust = run_all(model, [photo], ["p.png"], tmp_path / "b", filters=False, trust=False,
                       say=lambda line: None, on_timings=timings.update).read_text()
    # where the time went: every section that ran, in order, in the callback and the page's footer
    assert list(timings) == ["planning", "predictions", "intermediate outputs", "why this class", "filters",
                             "class activation maps", "the page"]
    assert all(seconds >= 0 for seconds in timings.values())
    assert "(planning " in no_trust and "class activation maps " in no_trust
    assert "Which map to trust" not in no_trust and not (tmp_path / "b" / "evaluate").exists()


def test_pointing_for_the_images_that_have_boxes(tiny_model):
    x = torch.randn(2, 3, 16, 16)
    found = convscope.evaluate(tiny_model, x, [1, 1], methods="gradcam", metrics="pointing",
                               boxes={(0, 1): [[0, 0, 16, 16]]})
    assert found[0].methods[0].pointing is not None and found[1].methods[0].pointing is None
    with pytest.raises(convscope.InputError, match="^metrics: pointing needs boxes"):
        convscope.evaluate(tiny_model, x, [1, 1], metrics="pointing")
