"""Dataset runs: a folder streamed through the model into Parquet shards, labels from sub-folders or a
file, unreadable images as rows, resuming to the same results, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope
from conftest import tiny_net
from convscope import dataset
from convscope.cli.main import main
from convscope.dataset import pipeline
from convscope.errors import InputError

LABELS = ["cat", "dog", "cup", "car", "tree"]


@pytest.fixture
def model():
    return convscope.load_model(tiny_net(), input_size=16, labels=LABELS)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for index, label in enumerate(["cat", "Dog", "3", "cat", "cup"]):  # labels, case-insensitive, or indices
        (root / label).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (20 + index, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / label / f"img{index}.png")
    (root / "cat" / "broken.jpg").write_text("not a picture")
    return root


def test_a_folder_into_parquet_rows(model, folder, tmp_path):
    out = dataset.run(model, folder, tmp_path / "out", batch_size=2)
    table = dataset.load(tmp_path / "out")
    rows = table.to_pylist()
    assert [row["path"] for row in rows] == sorted(str(p) for p in folder.rglob("*.*"))
    broken = next(row for row in rows if row["path"].endswith("broken.jpg"))
    assert "not a recognized image" in broken["error"] and broken["top_classes"] is None  # a row, not a stop
    good = [row for row in rows if row["error"] is None]
    assert len(good) == 5
    truth = {"cat": 0, "Dog": 1, "3": 3, "cup": 2}
    for row in good:
        path = row["path"]
        assert row["true_class"] == truth[path.split("/")[-2]]
        assert len(row["top_classes"]) == 5 and row["correct"] == (row["top_classes"][0] == row["true_class"])
        assert row["cam_shape"] == [8, 8] and len(row["cam"]) == 64  # relu2: 8 x 8, stored low-resolution
        single = convscope.compute_cam(model, model.preprocess(path))
        np.testing.assert_allclose(row["cam"], single.low_res[0].flatten().numpy(), atol=1e-5)
        assert row["cam_class"] == single.classes[0]
        assert (row["true_cam"] is None) == row["correct"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["cam_layer"] == "relu2" and len(manifest["images"]) == 6
    assert dataset.summary(table)["errors"] == [(broken["path"], broken["error"])]


def test_resuming_gives_the_same_results(model, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 2)
    out = tmp_path / "out"
    dataset.run(model, folder, out, metrics="drop")
    first = dataset.load(out)
    shards = sorted((out / "dataset").glob("shard-*.parquet"))
    assert len(shards) == 3
    shards[1].unlink()  # as if the run had been killed while writing it
    done = []
    dataset.run(model, folder, out, metrics="drop", progress=done.append)
    assert dataset.load(out).equals(first) and sum(done) == 6
    with pytest.raises(InputError, match=r"^out: a different run is in .*metrics \(\['drop'\] -> \[\]\)"):
        dataset.run(model, folder, out)
    Image.new("RGB", (8, 8)).save(folder / "cup" / "new.png")
    with pytest.raises(InputError, match=r"1 image\(s\) added, e.g. .*new.png"):
        dataset.run(model, folder, out, metrics="drop")
    dataset.run(model, folder, out, restart=True)
    assert dataset.load(out).num_rows == 7


def test_labels_from_a_file_and_workers(model, folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{folder / 'cat' / 'img0.png'},dog\nphotos/3/img2.png,4\n")
    rows = dataset.load(dataset.run(model, folder, tmp_path / "a", labels=labels, workers=1)).to_pylist()
    truth = {row["path"].split("/")[-1]: row["true_class"] for row in rows}
    assert truth["img0.png"] == 1 and truth["img2.png"] == 4 and truth["img1.png"] is None
    plain = dataset.load(dataset.run(model, folder, tmp_path / "b", labels=labels)).to_pylist()
    assert [r["cam"] for r in rows] == [r["cam"] for r in plain]  # decoding in a worker changes nothing
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps({str(folder / "cat" / "img0.png"): "zebra", "x.png": "whale"}))
    with pytest.raises(InputError, match=r"^labels: 2 class names match no class of the model: 'whale', 'zebra'"):
        dataset.run(model, folder, tmp_path / "c", labels=as_json)


def test_sources_that_hold_nothing(model, tmp_path):
    with pytest.raises(InputError, match="^source .*: no such folder, file or glob"):
        dataset.run(model, tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="^source .*: holds no images"):
        dataset.run(model, tmp_path / "empty", tmp_path / "out")


def test_the_command_line(folder, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("photos/cat/img0.png\nphotos/cup/img4.png\n")
    code = main(["dataset", str(listing), "--model", "torchvision:squeezenet1_1", "--weights", "random",
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("2 images in ")
    assert main(["dataset", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"convscope: error: SOURCE {tmp_path / 'none'}: no such folder")


def test_run_with_many_images_points_to_dataset(capsys):
    assert main(["run", *(["sample:coffee"] * 17)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convscope: error: 17 images make a report too large to open") and "convscope dataset" in err


def test_the_ray_engine_gives_the_same_results(model, folder, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 2)
    local = dataset.load(dataset.run(model, folder, tmp_path / "local", metrics="drop")).to_pylist()
    on_ray = dataset.load(dataset.run(model, folder, tmp_path / "ray", metrics="drop", engine="ray")).to_pylist()
    assert [r["path"] for r in on_ray] == [r["path"] for r in local]
    for a, b in zip(local, on_ray):
        assert (a["error"], a["top_classes"], a["cam_class"], a["true_class"]) == \
               (b["error"], b["top_classes"], b["cam_class"], b["true_class"])
        if a["cam"] is not None:
            np.testing.assert_allclose(a["cam"], b["cam"], atol=1e-5)
            assert a["drop"] == pytest.approx(b["drop"], abs=1e-4)
    # resumable exactly as with the local engine
    shards = sorted((tmp_path / "ray" / "dataset").glob("shard-*.parquet"))
    shards[0].unlink()
    dataset.run(model, folder, tmp_path / "ray", metrics="drop", engine="ray")
    assert dataset.load(tmp_path / "ray").to_pylist() == on_ray


def test_ray_problems_are_one_line(model, folder, tmp_path, monkeypatch, capsys):
    import sys

    pytest.importorskip("ray")
    with pytest.raises(InputError, match="^ray_address 127.0.0.1:1: cannot reach a Ray cluster there"):
        dataset.run(model, folder, tmp_path / "a", engine="ray", ray_address="127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["dataset", str(folder), "--engine", "ray", "--out", str(tmp_path / "b"), "--model",
                 "torchvision:squeezenet1_1", "--weights", "random"]) == 2
    assert capsys.readouterr().err.strip() == ("convscope: error: --engine ray needs Ray, which is not installed: "
                                               "pip install 'convscope[ray]'")


class DiesOnce(torch.nn.Module):
    """A model whose first forward pass in a Ray actor kills that actor (as a lost node would)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.net = tiny_net()
        self.marker = marker

    def forward(self, x):
        import os

        if x.shape[0] > 1 and not os.path.exists(self.marker):  # batches only: discovery runs on one image
            open(self.marker, "w").close()
            os._exit(1)
        return self.net(x)


def test_a_shard_whose_actor_dies_is_retried(folder, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 3)
    model = convscope.load_model(DiesOnce(str(tmp_path / "died")), input_size=16, labels=LABELS)
    model.all_layers(), model.num_outputs
    rows = dataset.load(dataset.run(model, folder, tmp_path / "out", engine="ray")).to_pylist()
    assert (tmp_path / "died").exists() and len(rows) == 6 and sum(r["error"] is None for r in rows) == 5


def test_a_run_killed_with_sigkill_resumes_to_the_same_results(model, folder, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
import convscope
from convscope import dataset
from convscope.dataset import pipeline
from convscope.dataset import pipeline, shards
from conftest import tiny_net
pipeline.SHARD_SIZE = 1
slow = shards._batch_rows
def batch_rows(*args):
    time.sleep(0.3)  # time for the test to kill it between shards
    return slow(*args)
shards._batch_rows = batch_rows
model = convscope.load_model(tiny_net(), input_size=16, labels={LABELS!r})
dataset.run(model, {str(folder)!r}, {str(out)!r}, metrics="drop")
"""
    process = subprocess.Popen([sys.executable, "-c", script])
    shards = out / "dataset"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(list(shards.glob("shard-*.parquet")))
    assert 2 <= written < 6  # killed part-way: some shards done, none half-written
    dataset.load(out)  # what is there reads (a shard in progress is a hidden temporary file, never a shard)
    import convscope.dataset.pipeline as ds

    original = ds.SHARD_SIZE
    ds.SHARD_SIZE = 1
    try:
        dataset.run(model, folder, out, metrics="drop")
        dataset.run(model, folder, tmp_path / "clean", metrics="drop")
    finally:
        ds.SHARD_SIZE = original
    assert dataset.load(out).equals(dataset.load(tmp_path / "clean"))


def test_the_dataset_report(model, folder, tmp_path, monkeypatch):
    import re

    from convscope.dataset import report as dataset_report

    monkeypatch.setattr(dataset_report, "PAGE_SIZE", 2)
    out = tmp_path / "out"
    dataset.run(model, folder, out)
    index = dataset_report.write_dataset_report(out, LABELS)
    html = index.read_text()
    rows = dataset.load(out).to_pylist()
    judged = [r for r in rows if r["correct"] is not None]
    accuracy = sum(r["correct"] for r in judged) / len(judged)
    assert f"Top-1 accuracy {accuracy * 100:.1f}" in html and "6 images, 1 unreadable" in html
    assert "Accuracy per class" in html and "Most frequent confusions" in html
    thumbs = sorted((out / "dataset" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 5 and all(max(Image.open(t).size) <= 128 for t in thumbs)
    before = [t.stat().st_mtime_ns for t in thumbs]
    dataset_report.write_dataset_report(out, LABELS)  # thumbnails are made once
    assert [t.stat().st_mtime_ns for t in thumbs] == before
    pages = out / "dataset" / "pages"
    for link in re.findall(r'href="(dataset/pages/(?!image-)[^"]+)"', html):  # the galleries
        first = (out / link).read_text()
        assert first.count("<li>") <= 2 and 'loading="lazy"' in first  # at most PAGE_SIZE per page
    predicted = {r["top_classes"][0] for r in rows if r["error"] is None}
    assert len(list(pages.glob("class-*-0001.html"))) == len(predicted)
    truths = {r["true_class"] for r in rows if r["error"] is None}
    assert {f"dataset/pages/true-{c}-0001.html" for c in truths} <= set(re.findall(r'href="([^"]+)"', html))
    cat = [r for r in rows if r["true_class"] == 0 and r["error"] is None]  # two cats: a mistake comes first
    order = sorted(cat, key=lambda r: (r["correct"], -r["top_probabilities"][0]))
    listed = re.findall(r'alt="([^":]+):', (pages / "true-0-0001.html").read_text())
    assert listed == [Path(r["path"]).name for r in order]
    for row, thumb in zip([r for r in rows if r["error"] is None], thumbs):  # the photo's aspect ratio
        width, height = Image.open(thumb).size
        assert abs(width / height - row["width"] / row["height"]) < 0.1
    image_pages = sorted(pages.glob("image-*.html"))
    assert len(image_pages) == 5 and "Predictions" in image_pages[0].read_text()
    for page in pages.glob("*.html"):  # every relative link and picture resolves
        for target in re.findall(r'(?:href|src)="([^"#:]+)"', page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)
    for target in re.findall(r'(?:href|src)="([^"#:]+)"', html):
        assert (out / target).exists(), target
    # the front page: the most confident mistakes with their maps, a confidence histogram per class, the
    # confusion matrix as a picture
    mistakes = sorted((r for r in judged if not r["correct"]), key=lambda r: -r["top_probabilities"][0])
    strip = re.findall(r'<ul class="strip"[^>]*>(.*?)</ul>', html)[0]
    assert re.findall(r'alt="([^":]+):', strip) == [Path(r["path"]).name for r in mistakes]
    assert all(f'src="dataset/thumbs/{r["image"]:06d}.jpg"' in strip for r in mistakes)
    for cls in {r["true_class"] for r in judged}:
        mine = [r for r in judged if r["true_class"] == cls]
        histogram = dataset_report.confidence_histogram(mine)
        assert sum(histogram["right"]) == sum(r["correct"] for r in mine)
        assert sum(histogram["wrong"]) == sum(not r["correct"] for r in mine)
        for r in mine:  # each image in the bin of its top-1 probability
            assert (histogram["right"] if r["correct"] else histogram["wrong"])[int(r["top_probabilities"][0] * 10)]
    assert dataset_report.confidence_histogram([{"top_probabilities": [1.0], "correct": True},
                                                {"top_probabilities": [0.05], "correct": False}])["right"][9] == 1
    matrix = Image.open(out / "dataset" / "confusion.png")
    assert matrix.size[0] > 200 and f"{sum(r['correct'] for r in judged)} of {len(judged)} images on the diagonal" \
        in html


def test_a_segmentation_model_ranked_by_its_target(folder, tmp_path):
    """A segmenter's rows rank classes by their share of the pixels (not a softmax of summed logits), its map
    explains the largest class other than the background, and the deletion curve follows the region's logits."""
    from test_targets import Segmenter

    segmenter = convscope.load_model(Segmenter().eval(), input_size=16, labels=["__background__", "road", "car"])
    dataset.run(segmenter, folder, tmp_path / "out", batch_size=2, metrics="deletion")
    for row in dataset.load(tmp_path / "out").to_pylist():
        if row["error"] is not None:
            continue
        x = segmenter.preprocess(row["path"])
        ranked = segmenter.predict(x, top=3)[0]
        assert row["top_classes"] == [p.index for p in ranked]
        assert row["top_probabilities"] == pytest.approx([p.value for p in ranked], abs=1e-6)
        assert sum(row["top_probabilities"]) == pytest.approx(1.0, abs=1e-5)  # shares of the pixels
        assert row["cam_class"] == next(p.index for p in ranked if p.chosen)
        assert row["deletion"] is not None
