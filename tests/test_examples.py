"""Dataset examples: the streaming top-K per channel (exact, whatever the grouping), receptive fields
measured from the network, a colour detector whose answer is known, the default model against a
brute-force computation on both engines, resuming, the files, the report's pages and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convscope
from conftest import tiny_net
from convscope import dataset
from convscope.cli.main import main
from convscope.dataset import pipeline
from convscope.dataset.report import write_dataset_report, write_example_filters
from convscope.errors import InputError, LayerError
from convscope.techniques.examples import TopK, channel_maxima, receptive_field

LABELS = ["cat", "dog", "cup", "car", "tree"]


def test_channel_maxima_take_the_first_position_of_the_maximum():
    output = torch.zeros(1, 2, 3, 4)
    output[0, 0, 1, 2] = 5.0
    output[0, 0, 2, 3] = 5.0  # a tie: the first in row-major order wins
    output[0, 1] = -1.0
    maxima, positions = channel_maxima(output)
    assert maxima.tolist() == [[5.0, -1.0]] and positions.tolist() == [[[1, 2], [0, 0]]]


def test_top_k_is_the_same_whatever_the_grouping():
    rng = np.random.default_rng(0)
    maxima = rng.integers(0, 6, (30, 4)).astype(np.float32)  # many ties
    positions = rng.integers(0, 7, (30, 4, 2)).astype(np.int32)
    images = np.arange(30)
    expected = [sorted(range(30), key=lambda i: (-maxima[i, c], i))[:5] for c in range(4)]
    for groups in ([30], [7, 7, 7, 9], [1] * 30, [13, 17]):
        parts, start = [], 0
        for size in groups:
            parts.append(TopK.empty(4, 5).add(maxima[start:start + size], positions[start:start + size],
                                                images[start:start + size]))
            start += size
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        assert merged.images.tolist() == expected
        for c in range(4):
            assert merged.values[c].tolist() == [maxima[i, c] for i in expected[c]]
            assert merged.positions[c].tolist() == [positions[i, c].tolist() for i in expected[c]]


def test_receptive_fields_of_the_tiny_net_by_hand():
    model = convscope.load_model(tiny_net(), input_size=16)
    # conv1 3x3 pad 1: 3 pixels; pool 2x2: 4, stride 2; conv2 3x3 pad 1 after it: 8, stride 2
    for layer, size, stride, corner, middle in (("conv1", 3, 1, (0, 0, 2, 2), (3, 3, 6, 6)),
                                                ("pool", 4, 2, (0, 0, 3, 3), (7, 7, 11, 11)),
                                                ("conv2", 8, 2, (0, 0, 5, 5), (5, 5, 13, 13))):
        field = receptive_field(model, layer)
        assert field.size == (size, size) and field.stride == (stride, stride)
        assert field.box(0, 0) == corner and field.box(4, 4) == middle
    assert receptive_field(model, "pool").cell(4, 4) == (8, 8, 10, 10)


class ColourNet(nn.Module):
    """A 1x1 conv whose channel 0 detects red, 1 green, 2 blue (in pixel units), then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.detect = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.detect.weight.copy_((2 * torch.eye(3) - 1)[:, :, None, None])
            self.detect.bias.zero_()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.gap(self.detect(x)).flatten(1))


def test_a_colour_detector_picks_the_expected_images(tmp_path):
    model = convscope.load_model(ColourNet(), input_size=16, labels=["a", "b"], mean=(0, 0, 0), std=(1, 1, 1))
    photos = tmp_path / "photos"
    photos.mkdir()
    colours = {"red250": (250, 0, 0), "red200": (200, 0, 0), "red120": (120, 0, 0), "green240": (0, 240, 0),
               "green100": (0, 100, 0), "blue230": (0, 0, 230), "grey": (128, 128, 128)}
    for name, rgb in colours.items():
        Image.new("RGB", (16, 16), rgb).save(photos / f"{name}.png")
    patch = Image.new("RGB", (16, 16), (0, 0, 0))
    patch.paste((255, 0, 0), (12, 9, 15, 12))  # the reddest pixels of all, at rows 9-11, columns 12-14
    patch.save(photos / "patch.png")
    dataset.run(model, photos, tmp_path / "out", examples="detect", examples_top=3)
    facts = json.loads((tmp_path / "out" / "examples" / "detect.json").read_text())
    names = [[Path(e["path"]).stem for e in c["examples"]] for c in facts["channels"]]
    assert names[0] == ["patch", "red250", "red200"]
    assert names[1][:2] == ["green240", "green100"] and names[2][0] == "blue230"
    assert facts["channels"][0]["examples"][0]["position"] == [9, 12]
    assert facts["channels"][0]["examples"][0]["input_box"] == [12, 9, 13, 10]  # a 1x1 conv sees one pixel
    assert facts["channels"][0]["examples"][1]["value"] == pytest.approx(250 / 255, abs=1e-6)
    # red fires on 4 images (and grey: 128 - 256 < 0 does not), so no channel is dead
    assert facts["channels"][0]["fired"] == 4 and facts["dead"] == 0
    grid = Image.open(tmp_path / "out" / "examples" / "detect" / "0.png")
    assert grid.size == (2 * 64 + 2, 2 * 64 + 2)  # 3 crops in a 2x2 grid, best first
    shown = dataset.examples(tmp_path / "out", "detect", 0)
    assert [Path(r["path"]).stem for r in shown] == names[0] and "base64" in shown._repr_html_()


def _brute_force(model, paths, layers, top):
    """Every image's activations held in memory, maxima over positions, sorted by value then image."""
    outputs = convscope.activations(model, model.preprocess(paths), layers=layers)
    answer = {}
    for layer in layers:
        maxima = outputs[layer].flatten(2).amax(dim=2).numpy()  # images x channels
        answer[layer] = maxima, [sorted(range(len(paths)), key=lambda i: (-maxima[i, c], i))[:top]
                                 for c in range(maxima.shape[1])]
    return answer


def _check_against(facts, maxima, paths):
    for channel in facts["channels"]:
        c = channel["channel"]
        values = [e["value"] for e in channel["examples"]]
        expected = np.sort(maxima[:, c])[::-1][:len(values)]
        np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-4)
        for example in channel["examples"]:  # each example is the image whose maximum it states
            assert example["path"] == paths[example["image"]]
            assert maxima[example["image"], c] == pytest.approx(example["value"], rel=1e-4, abs=1e-4)


@pytest.mark.slow
def test_default_model_examples_equal_brute_force_on_both_engines(default_model, tmp_path, monkeypatch):
    from convscope.samples import sample_array

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    sources = [sample_array(name) for name in ("chelsea", "coffee", "grace_hopper")]
    for index in range(40):
        source = sources[index % 3]
        top, left = rng.integers(0, 60, 2)
        Image.fromarray(np.ascontiguousarray(source[top:top + 240, left:left + 300])).save(photos / f"p{index:02d}.jpg")
    paths = sorted(str(p) for p in photos.glob("*.jpg"))
    layers = ["_conv_stem", "_blocks.5._depthwise_conv"]
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 16)
    dataset.run(default_model, photos, tmp_path / "local", examples=",".join(layers), examples_top=5)
    brute = _brute_force(default_model, paths, layers, 5)
    local = {layer: json.loads((tmp_path / "local" / "examples" / f"{layer}.json").read_text()) for layer in layers}
    for layer in layers:
        _check_against(local[layer], brute[layer][0], paths)
    pytest.importorskip("ray")
    dataset.run(default_model, photos, tmp_path / "ray", examples=",".join(layers), examples_top=5, engine="ray")
    for layer in layers:
        on_ray = json.loads((tmp_path / "ray" / "examples" / f"{layer}.json").read_text())
        for a, b in zip(on_ray["channels"], local[layer]["channels"]):  # the same examples; values to 1e-5
            assert [(e["image"], e["position"], e["input_box"]) for e in a["examples"]] == \
                   [(e["image"], e["position"], e["input_box"]) for e in b["examples"]]
            np.testing.assert_allclose([e["value"] for e in a["examples"]], [e["value"] for e in b["examples"]],
                                       atol=1e-5)
            assert (a["fired"], a["dead"]) == (b["fired"], b["dead"])


def _random_photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"i{index:02d}.png")
    return folder


def test_a_resumed_run_gives_exactly_the_same_examples(tmp_path, monkeypatch):
    model = convscope.load_model(tiny_net(), input_size=16, labels=LABELS)
    photos = _random_photos(tmp_path / "photos", 11, (18, 20), seed=3)
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 4)
    out = tmp_path / "out"
    dataset.run(model, photos, out, examples="conv1,pool", examples_top=4, batch_size=3)
    whole = {name: (out / "examples" / f"{name}.json").read_text() for name in ("conv1", "pool")}
    grid = (out / "examples" / "pool" / "2.png").read_bytes()
    (out / "dataset" / "shard-00001.parquet").unlink()  # as if killed in the middle
    (out / "dataset" / "shard-00001.examples.npz").unlink()
    shutil.rmtree(out / "examples")
    dataset.run(model, photos, out, examples="conv1,pool", examples_top=4, batch_size=3)
    assert {name: (out / "examples" / f"{name}.json").read_text() for name in ("conv1", "pool")} == whole
    assert (out / "examples" / "pool" / "2.png").read_bytes() == grid
    with pytest.raises(InputError, match="examples_top"):  # other settings: a different run
        dataset.run(model, photos, out, examples="conv1,pool", examples_top=3)


def test_the_report_shows_each_channel_with_its_filter_picture(tmp_path):
    model = convscope.load_model(tiny_net(), input_size=16, labels=LABELS)
    photos = _random_photos(tmp_path / "photos", 6, (16, 16), seed=4)
    out = tmp_path / "out"
    dataset.run(model, photos, out, examples="default", examples_top=2)
    folders = write_example_filters(model, out)
    assert set(folders) == {"conv1", "conv2"}
    pictures = sorted((out / folders["conv2"]).glob("*.png"))
    assert len(pictures) == 6
    before = [p.stat().st_mtime_ns for p in pictures]
    write_example_filters(model, out)  # cached: nothing is computed again
    assert [p.stat().st_mtime_ns for p in pictures] == before
    index = write_dataset_report(out, LABELS)
    html = index.read_text()
    assert "Dataset examples" in html and "dataset/pages/examples-conv2-0001.html" in html
    title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
    assert "<script" not in title and html.count('id="example-links"') == 1  # the links once, in the body
    page = (out / "dataset" / "pages" / "examples-conv2-0001.html").read_text()
    for channel in range(6):
        assert f'id="examples/conv2/{channel}"' in page
        assert f"../../{folders['conv2']}/{channel}.png" in page and f"../../examples/conv2/{channel}.png" in page
    facts = json.loads((out / "examples" / "conv2.json").read_text())
    assert page.count("<rect") == 6 * 20 and f"{facts['dead']} dead channel" in page


def test_examples_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.new("RGB", (16, 16), (index * 50, 0, 0)).save(photos / f"i{index}.png")
    model = convscope.load_model(tiny_net(), input_size=16, labels=LABELS)
    with pytest.raises(LayerError, match="^examples: layer 'fc' is not spatial"):
        dataset.run(model, photos, tmp_path / "a", examples="fc")
    cases = [(["--examples", "fc"], "--examples: layer 'fc' is not spatial"),
             (["--examples", "nope"], "nope"),
             (["--examples", "--examples-top", "0"], "--examples-top must be at least 1, got 0"),
             (["--examples", "conv1", "--examples-top", "4"],
              "--examples-top must be at most the number of images (3), got 4")]
    for flags, message in cases:
        out = tmp_path / "out"
        code = main(["dataset", str(photos), "--out", str(out), "--model", "torchvision:resnet18", "--weights",
                     "random", "--quiet", *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
        assert not (out / "dataset").exists()


def test_run_with_a_dataset_without_examples_is_one_line(tmp_path, capsys):
    code = main(["run", "sample:coffee", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 "--no-filters", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"convscope: error: --dataset {tmp_path / 'nope'}: holds no dataset examples")
    assert not (tmp_path / "o" / "index.html").exists()
