"""Concepts (Deep Feature Factorization): against pytorch-grad-cam's own code on the default model and
VGG19, the factorization's definition by hand on a tiny layer, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import convscope
from conftest import assert_usage_errors
from convscope.cli.main import main
from convscope.samples import sample_array
from convscope.techniques.concepts import concepts

pytest.importorskip("sklearn")


@pytest.mark.parametrize("model_name", ["default", "vgg19"])
def test_concepts_equal_pytorch_grad_cams_deep_feature_factorization(model_name, default_model, vgg19_random):
    from pytorch_grad_cam import DeepFeatureFactorization

    model = default_model if model_name == "default" else vgg19_random
    x = model.preprocess([sample_array("chelsea"), sample_array("coffee")])
    ours = concepts(model, x, n=4)
    head = model.module._fc if model_name == "default" else None
    peer = DeepFeatureFactorization(model.module, model.submodule(ours.layer), computation_on_concepts=head)
    found = peer(x.contiguous(memory_format=torch.channels_last), n_components=4)
    vectors, maps = found[0], np.stack(found[1])
    scale = float(np.abs(vectors).max())
    assert np.abs(vectors.T - ours.vectors.numpy()).max() <= 1e-4 * scale
    assert np.abs(maps - ours.maps.numpy()).max() <= 1e-4
    if model_name == "default":  # _act1 feeds pooling and one Linear layer: the concepts get classes
        assert np.abs(found[2] - ours.scores.numpy()).max() <= 1e-4 * float(np.abs(found[2]).max())
        assert ours.top is not None and any(c == 967 for row in ours.top for c, _ in row)  # espresso
        assert any(c == 285 for row in ours.top for c, _ in row)  # Egyptian cat
    else:  # block5_pool feeds three Linear layers: no labels
        assert ours.scores is None and ours.top is None


def test_the_factorization_by_hand():
    """Rows shifted by their minimum, W H ~ A with W, H >= 0, the vectors W + shift, maps H."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)).eval()
    model = convscope.load_model(net, input_size=8, labels=["a", "b"])
    x = torch.randn(2, 3, 8, 8)
    found = concepts(model, x, n=2, layer="0")
    with torch.no_grad():
        acts = net[0](x)
    matrix = acts.permute(1, 0, 2, 3).reshape(6, -1).numpy()
    shift = matrix.min(axis=1, keepdims=True)
    w = found.vectors.numpy().T - shift
    h = found.low_res.permute(1, 0, 2, 3).reshape(2, -1).numpy()
    assert (w >= -1e-6).all() and (h >= 0).all()
    reconstruction = np.linalg.norm(matrix - shift - w @ h) / np.linalg.norm(matrix - shift)
    assert reconstruction < 0.6  # two components of six channels: a fair part of the activations
    assert found.maps.shape == (2, 2, 8, 8) and float(found.maps.max()) <= 1.0
    assert found.scores is not None  # conv -> pooling -> one Linear layer
    torch.testing.assert_close(found.scores, torch.from_numpy(w.T + shift.T).float() @ net[3].weight.detach().T
                               + net[3].bias.detach(), atol=1e-4, rtol=1e-4)


def test_the_command_line(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["concepts", "sample:chelsea", "sample:coffee", "--n", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "concept 0:" in printed and "3 concepts of layer _act1" in printed
    assert sorted(p.name for p in (out / "concepts").iterdir()) == ["chelsea_concepts.png", "coffee_concepts.png",
                                                                   "concepts.json"]
    table = json.loads((out / "concepts" / "concepts.json").read_text())
    assert table["layer"] == "_act1" and len(table["concepts"]) == 3
    assert {"concept", "name", "norm", "top"} == set(table["concepts"][0])
    assert_usage_errors(capsys, ["concepts", "sample:coffee", "--out", str(out)], [
        (["--n", "0"], "--n must be at least 1, got 0"),
        (["--n", "5000"], "--n 5000: more concepts than layer _act1's 1280 channels"),
        (["--layer", "nope"], "unknown layer 'nope'"),
        (["--alpha", "2"], "--alpha must be between 0 and 1"),
    ])


def test_the_report_has_a_concepts_section_when_asked(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["run", "sample:chelsea", "sample:coffee", "--no-filters", "--trust", "none", "--layers", "_conv_stem",
                 "--concepts", "3", "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    html = (out / "index.html").read_text()
    assert 'id="concepts"' in html and 'href="#concepts"' in html and "Deep Feature Factorization" in html
    assert 'src="concepts/chelsea_concepts.png"' in html and (out / "concepts" / "coffee_concepts.png").exists()
    assert main(["run", "sample:coffee", "--no-filters", "--trust", "none", "--out", str(tmp_path / "plain")]) == 0
    assert 'id="concepts"' not in (tmp_path / "plain" / "index.html").read_text()  # only when asked
    assert_usage_errors(capsys, ["run", "sample:coffee", "--out", str(tmp_path / "bad")], [
        (["--concepts", "0"], "--concepts must be at least 1, got 0"),
        (["--concepts", "2000"], "--concepts 2000: more concepts than layer _act1's 1280 channels"),
    ])
