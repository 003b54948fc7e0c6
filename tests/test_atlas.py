"""The atlas: every unit's picture, dataset examples and statistics, in picture and image shards that
resume, on both engines; the label-based names; its site; and clear errors."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope
from conftest import tiny_net
from convscope.cli.main import main
from convscope.dataset import atlas as atlas_module
from convscope.dataset import pipeline
from convscope.dataset.atlas_site import unit_name
from convscope.errors import InputError, LayerError
from convscope.hooks import evaluating
from convscope.techniques.filters import draw_filters

LABELS = ["cat", "dog", "cup", "car", "tree"]
SMALL = {"top": 3, "steps": 4, "size": 16, "units_per_shard": 3}


@pytest.fixture
def model():
    return convscope.load_model(tiny_net(), input_size=16, labels=LABELS)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for index in range(10):
        folder = root / LABELS[index % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20 + index, 24, 3), dtype=np.uint8)).save(folder / f"p{index}.png")
    return root


def _files(out: Path) -> dict[str, bytes]:
    """Every file an atlas wrote that its results are (pictures, crops, records' units, examples),
    by path relative to ``out``: what two runs must agree on."""
    found = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if path.is_file() and (relative.startswith(("filters/", "examples/")) and path.suffix == ".png"):
            found[relative] = path.read_bytes()
    for path in sorted((out / "atlas" / "shards").glob("*.json")):
        found[f"atlas/shards/{path.name}"] = json.dumps(json.loads(path.read_text())["units"]).encode()
    for path in sorted((out / "examples").glob("*.json")):
        found[f"examples/{path.name}"] = path.read_bytes()
    return found


def test_every_unit_gets_its_picture_examples_and_statistics(model, photos, tmp_path):
    out = tmp_path / "out"
    index = convscope.atlas(model, photos, out, **SMALL)
    assert index == out / "atlas" / "index.html" and index.exists()
    layers = atlas_module.atlas_layers(model)
    assert layers == ["conv1", "conv2", "logits"]  # the convs, then the class scores (no block in TinyNet)
    data = json.loads((out / "atlas" / "data" / "index.js").read_text().removeprefix("window.ATLAS = ").rstrip(";\n"))
    assert [(layer["name"], layer["units"]) for layer in data["layers"]] == [("conv1", 4), ("conv2", 6), ("logits", 5)]
    # the pictures are draw_filters's for the same units, bit for bit (PNG, 8 bits)
    folders = json.loads((out / "examples" / "filters.json").read_text())
    precision = json.loads((out / "atlas" / "manifest.json").read_text())["precisions"]["conv2"]
    expected = draw_filters(model, "conv2", [3, 4, 5], steps=4, size=16, precision=precision)
    for unit, picture in zip([3, 4, 5], expected.images):
        written = np.asarray(Image.open(out / folders["conv2"] / f"{unit}.png").convert("RGB"))
        assert np.array_equal(written, (picture.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))
    # statistics by hand: each channel's mean over images and positions, and how many images it fires on
    paths = sorted(photos.rglob("*.png"))
    maps = convscope.activations(model, model.preprocess([str(p) for p in paths]), "conv2")["conv2"]
    facts = json.loads((out / "examples" / "conv2.json").read_text())
    for channel in facts["channels"]:
        c = channel["channel"]
        assert channel["mean"] == pytest.approx(float(maps[:, c].mean()), abs=1e-5)
        assert channel["fired"] == int((maps[:, c].flatten(1).max(dim=1).values > 0).sum())
    # the class scores: a class's examples are the images with its highest logits, the whole picture each
    with evaluating(model.module), torch.no_grad():
        logits = model.module(model.preprocess([str(p) for p in paths]))
    classes = json.loads((out / "examples" / "logits.json").read_text())
    for channel in classes["channels"]:
        best = torch.argsort(-logits[:, channel["channel"]], stable=True)[:3].tolist()
        assert [e["image"] for e in channel["examples"]] == best
        assert all(e["input_box"] == [0, 0, 16, 16] for e in channel["examples"])
        assert channel["dead"] is False and channel["rare"] is False  # a negative logit is no dead class
    timing = json.loads((out / "atlas" / "timing.json").read_text())
    assert set(timing["phases"]) == {"images", "pictures", "pages"} and set(timing["picture_layers"]) == set(layers)


def test_a_unit_is_named_after_the_class_of_most_of_its_examples():
    assert unit_name([1, 1, 0, 1], LABELS) == ("dog", 3)
    assert unit_name([1, 0, 2, 3], LABELS) is None  # no class holds half of them
    assert unit_name([None, None], LABELS) is None  # no labels
    assert unit_name([4], LABELS) == ("tree", 1)


def test_a_resumed_atlas_redraws_only_the_missing_shards(model, photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convscope.atlas(model, photos, out, **SMALL)
    before = _files(out)
    lost = out / "atlas" / "shards" / "conv2-00003.json"
    lost.unlink()  # as if the run had stopped while drawing this shard
    drawn = []
    original = atlas_module.draw_filters

    def counting(model, layer, units, **options):
        drawn.append((layer, list(units)))
        return original(model, layer, units, **options)

    monkeypatch.setattr(atlas_module, "draw_filters", counting)
    convscope.atlas(model, photos, out, **SMALL)
    assert drawn == [("conv2", [3, 4, 5])]
    assert _files(out) == before
    with pytest.raises(InputError, match="^out: a different atlas is in .*\\(steps \\(4 -> 5\\)\\); use restart"):
        convscope.atlas(model, photos, out, **{**SMALL, "steps": 5})


def test_out_of_memory_halves_the_batch_and_goes_on(model, photos, tmp_path, monkeypatch):
    """A fake allocator error on batches of more than 2 images or pictures: the run halves its batches
    (saying so once per size) and ends with the results of a run that never ran out of memory."""
    convscope.atlas(model, photos, tmp_path / "plain", **SMALL, batch_size=4)
    from convscope.dataset import shards

    rows, pictures = shards._batch_rows, atlas_module.draw_filters

    def rows_of(model, x, *args):
        if len(x) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return rows(model, x, *args)

    def pictures_of(model, layer, units, **options):
        if len(units) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return pictures(model, layer, units, **options)

    monkeypatch.setattr(shards, "_batch_rows", rows_of)
    monkeypatch.setattr(atlas_module, "draw_filters", pictures_of)
    with pytest.warns(convscope.errors.ConvscopeWarning) as said:
        convscope.atlas(model, photos, tmp_path / "halved", **SMALL, batch_size=4)
    lines = sorted({str(w.message) for w in said})
    assert "out of memory on a batch of 4 images; going on with batches of 2" in lines
    assert "out of memory on a batch of 3 pictures; going on with batches of 1" in lines
    for size in ("4 images", "3 pictures"):  # once per size: later batches start smaller
        assert len([w for w in said if size in str(w.message)]) == 1
    halved, plain = _files(tmp_path / "halved"), _files(tmp_path / "plain")
    records = [name for name in plain if name.startswith("atlas/shards/")]
    assert {k: v for k, v in halved.items() if k not in records} == {k: v for k, v in plain.items() if k not in records}
    for name in records:  # the scores of pictures drawn one at a time: the same to float rounding
        ours, theirs = json.loads(halved[name]), json.loads(plain[name])
        assert {u: f["score"] for u, f in ours.items()} == pytest.approx({u: f["score"] for u, f in theirs.items()})


def test_bad_input_is_one_line(model, photos, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="^dataset .*empty: holds no images"):
        convscope.atlas(model, tmp_path / "empty", tmp_path / "a", **SMALL)
    with pytest.raises(LayerError, match="layer pattern 'nothing\\*' matches no layer"):
        convscope.atlas(model, photos, tmp_path / "b", layers="nothing*", **SMALL)
    pytest.importorskip("ray")
    with pytest.raises(InputError, match="^ray_address 127.0.0.1:1: cannot reach a Ray cluster there"):
        convscope.atlas(model, photos, tmp_path / "c", engine="ray", ray_address="127.0.0.1:1", **SMALL)
    assert not (tmp_path / "c").exists()  # refused before any work
    code = main(["atlas", "--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "d"), "--model",
                 "torchvision:squeezenet1_1", "--weights", "random"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("convscope: error: --dataset ") and "holds no" in err


def test_a_full_disk_while_writing_a_shard_keeps_the_finished_ones(model, photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    from convscope.presentation import files

    real = os.fdopen
    shards_written = []

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real(fd, mode, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if "shards" in name and Path(name).name.startswith(".conv2-"):
            shards_written.append(name)
            if len(shards_written) == 2:  # the second conv2 shard's record finds the disk full
                handle.close()
                raise OSError(errno.ENOSPC, "No space left on device")
        return handle

    monkeypatch.setattr(files.os, "fdopen", fdopen)
    with pytest.raises(InputError, match="^out: no space left on the device while writing .*conv2-00003.json"):
        convscope.atlas(model, photos, out, **SMALL)
    records = sorted(p.name for p in (out / "atlas" / "shards").iterdir())
    assert records == ["conv1-00000.json", "conv1-00003.json", "conv2-00000.json"]  # finished, intact, no temp file
    assert all(json.loads((out / "atlas" / "shards" / name).read_text())["units"] for name in records)
    monkeypatch.setattr(files.os, "fdopen", real)
    convscope.atlas(model, photos, out, **SMALL)  # space again: it resumes and completes
    assert len(list((out / "atlas" / "shards").glob("*.json"))) == 6


def test_the_command_line(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 4)
    code = main(["atlas", "--dataset", str(photos), "--out", str(tmp_path / "out"), "--model",
                 "torchvision:squeezenet1_1", "--weights", "random", "--layers", "features.0", "--top", "2",
                 "--steps", "2", "--size", "16", "--units-per-shard", "32"])
    said = capsys.readouterr()
    printed = said.out
    assert code == 0, printed
    assert re.fullmatch(r"convscope: pictures: 32 of 64 in \d+ s; about \d+ s left for this phase\n", said.err)
    assert "Atlas of torchvision:squeezenet1_1: 1 layer; where the time went: images:" in printed
    assert f"Atlas: {(tmp_path / 'out' / 'atlas' / 'index.html').resolve()}" in printed
    assert sorted(p.name for p in (tmp_path / "out" / "atlas" / "shards").glob("*.json")) == [
        "features.0-00000.json", "features.0-00032.json"]  # 64 channels, 32 a shard


def test_auto_precision_is_chosen_once_per_layer_and_kept_on_resume(model, photos, tmp_path, monkeypatch):
    """``auto`` is measured by the driver, once per layer: every shard of a layer records the same
    precision, whatever its own size would have measured; a resumed atlas keeps the manifest's choice."""
    out = tmp_path / "out"
    measured = []
    original = atlas_module.filters_precision

    def measuring(model, layer, units, *args):
        measured.append((layer, list(units)))
        return original(model, layer, units, *args)

    monkeypatch.setattr(atlas_module, "filters_precision", measuring)
    convscope.atlas(model, photos, out, **SMALL, precision="auto")
    assert measured == [("conv1", [0, 1, 2]), ("conv2", [0, 1, 2]), ("logits", [0, 1, 2])]
    manifest = json.loads((out / "atlas" / "manifest.json").read_text())
    assert set(manifest["precisions"]) == {"conv1", "conv2", "logits"}
    for path in (out / "atlas" / "shards").glob("*.json"):
        record = json.loads(path.read_text())
        assert {unit["precision"] for unit in record["units"].values()} == {manifest["precisions"][record["layer"]]}
    # a resumed run draws its missing shard in the manifest's precision, measuring nothing again
    manifest["precisions"]["conv2"] = "bf16"
    (out / "atlas" / "manifest.json").write_text(json.dumps(manifest))
    (out / "atlas" / "shards" / "conv2-00003.json").unlink()
    measured.clear()
    convscope.atlas(model, photos, out, **SMALL, precision="auto")
    assert measured == []
    record = json.loads((out / "atlas" / "shards" / "conv2-00003.json").read_text())
    assert {unit["precision"] for unit in record["units"].values()} == {"bf16"}


def test_an_explicit_precision_is_every_layers(model, photos, tmp_path):
    convscope.atlas(model, photos, tmp_path / "out", **SMALL, precision="fp32")
    manifest = json.loads((tmp_path / "out" / "atlas" / "manifest.json").read_text())
    assert manifest["precisions"] == {"conv1": "fp32", "conv2": "fp32", "logits": "fp32"}


def test_the_ray_engine_gives_the_same_atlas(model, photos, tmp_path, monkeypatch):
    """Bit for bit at the same settings; the precision given, since ``auto`` is a measurement of
    each run (once per layer, by the driver) and two runs may measure differently."""
    pytest.importorskip("ray")
    monkeypatch.setattr(pipeline, "SHARD_SIZE", 4)
    convscope.atlas(model, photos, tmp_path / "local", **SMALL, precision="fp32")
    convscope.atlas(model, photos, tmp_path / "ray", **SMALL, precision="fp32", engine="ray")
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


def test_a_cluster_that_loses_a_node_part_way_ends_with_the_local_results(model, photos, tmp_path, monkeypatch):
    """Three Ray nodes on this machine (Ray's own Cluster), one removed once the first shard of a phase
    is done: the lost shards run again, no finished shard is written twice, and the atlas (and a
    dataset run) end with the local engine's files."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    monkeypatch.setattr(pipeline, "SHARD_SIZE", 2)
    convscope.atlas(model, photos, tmp_path / "local", **SMALL, precision="fp32")
    local_rows = convscope.dataset.load(tmp_path / "local").to_pylist()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        for what, out in (("atlas", tmp_path / "cluster"), ("dataset", tmp_path / "cluster-dataset")):
            first_seen: dict[str, int] = {}  # every finished shard file and its time when first seen
            node = workers.pop()

            def finished(phase: str, _count: int = 0, out=out, node=node, first_seen=first_seen) -> None:
                for path in [*out.glob("atlas/shards/*.json"), *out.glob("dataset/shard-*.parquet")]:
                    first_seen.setdefault(path.as_posix(), path.stat().st_mtime_ns)
                if phase == ("pictures" if what == "atlas" else "images") and node in cluster.list_all_nodes():
                    cluster.remove_node(node)  # a node lost while the others work

            with pytest.warns(convscope.errors.ConvscopeWarning, match="was lost with its Ray worker"):
                if what == "atlas":
                    convscope.atlas(model, photos, out, **SMALL, precision="fp32", engine="ray",
                                    ray_address=cluster.address, progress=finished)
                else:
                    convscope.dataset.run(model, photos, out, engine="ray", ray_address=cluster.address,
                                          progress=lambda count, finished=finished: finished("images", count))
            finished("end")
            assert all(Path(path).stat().st_mtime_ns == seen for path, seen in first_seen.items())
            if what == "atlas":
                assert _files(out) == _files(tmp_path / "local")
            rows = convscope.dataset.load(out).to_pylist()
            assert [(r["path"], r["top_classes"], r["cam_class"]) for r in rows] == \
                   [(r["path"], r["top_classes"], r["cam_class"]) for r in local_rows]
    finally:
        ray.shutdown()
        cluster.shutdown()


def _full_size_atlas(model: convscope.Model, out: Path, images: int = 40) -> list[str]:
    """The files a finished atlas of ``model`` leaves for its site, every unit of every default layer
    with made-up statistics and examples (the pictures of the layers the browser opens only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    layers = atlas_module.atlas_layers(model)
    (out / "dataset").mkdir(parents=True)
    truth = rng.integers(0, 1000, images)
    pq.write_table(pa.table({"image": list(range(images)), "path": [f"/photos/p{i}.jpg" for i in range(images)],
                             "true_class": truth.tolist()}), out / "dataset" / "shard-00000.parquet")
    (out / "examples").mkdir()
    folders = {}
    tile = Image.new("RGB", (8, 8), (90, 120, 160))
    largest = max(layers[:-1], key=lambda name: model.layer(name).shape[0])
    for layer in layers:
        units = 1000 if layer == "logits" else model.layer(layer).shape[0]
        folder = out / "filters" / "key" / layer
        folders[layer] = folder.relative_to(out).as_posix()
        channels = []
        for unit in range(units):
            chosen = rng.choice(images, 3, replace=False)
            channels.append({"channel": unit, "fired": int(rng.integers(0, images)), "fired_share": 0.5,
                             "mean": float(rng.normal()), "dead": unit % 97 == 0, "rare": unit % 89 == 0,
                             "examples": [{"image": int(i), "path": f"/photos/p{i}.jpg", "value": 1.0}
                                          for i in chosen]})
        (out / "examples" / f"{layer}.json").write_text(json.dumps(
            {"layer": layer, "folder": f"examples/{layer}", "channels": channels}))
        if layer in (largest, "logits"):
            folder.mkdir(parents=True)
            (out / "examples" / layer).mkdir()
            for unit in range(units):
                tile.save(folder / f"{unit}.png")
                tile.save(out / "examples" / layer / f"{unit}.png")
    (out / "examples" / "filters.json").write_text(json.dumps(folders))
    (out / "dataset" / "thumbs").mkdir()
    (out / "dataset" / "pages").mkdir()
    for i in range(images):
        tile.save(out / "dataset" / "thumbs" / f"{i:06d}.jpg")
        (out / "dataset" / "pages" / f"image-{i:06d}.html").write_text(f"<title>image {i}</title>")
    return [largest, *layers]


def test_the_site_at_the_default_models_full_size_in_a_browser(default_model, tmp_path):
    """Every unit of the default model's 65 layers and 1,000 classes: the index, the largest layer's
    grid (thumbnails lazy), a unit's page with its examples linked to the dataset pages, search by
    number and by name; no script error, and axe finds nothing serious."""
    from convscope.dataset.atlas_site import write_atlas_site
    from test_report import _axe, _browser, _open

    largest, *layers = _full_size_atlas(default_model, tmp_path)
    index = write_atlas_site(tmp_path, default_model, layers)
    units = 1000 + sum(default_model.layer(name).shape[0] for name in layers[:-1])
    with _browser() as playwright:
        browser, page, errors = _open(playwright, index.as_uri() + "#/")
        try:
            assert f"{len(layers)} layers, {units} units" in page.inner_text("main")
            _axe(page)
            page.click(f"a:text-is('{largest}')")
            page.wait_for_selector("ul.units li")
            tiles = page.locator("ul.units img")
            count = default_model.layer(largest).shape[0]
            assert tiles.count() == count
            assert page.evaluate("Array.from(document.images).every(i => i.loading === 'lazy' && i.alt)")
            loaded = page.evaluate("Array.from(document.querySelectorAll('ul.units img')).filter("
                                   "i => i.complete && i.naturalWidth > 0).length")
            assert 0 < loaded < count  # lazy: only those near the viewport
            _axe(page)
            page.select_option("#sort", "mean")
            page.wait_for_selector("ul.units li")
            page.locator("ul.units a").nth(5).click()
            page.wait_for_selector("h1:has-text('unit')")
            assert page.url.split("#")[1].startswith(f"/{largest}/")
            page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            _axe(page)
            page.locator("ul.examples a").first.click()
            page.wait_for_load_state("load")
            assert page.title().startswith("image ")
            page.goto(index.as_uri() + "#/logits/963")
            page.wait_for_selector("h1:has-text('unit 963')")
            assert "logits, unit 963: pizza" in page.inner_text("h1")
            page.fill("#query", "espresso")
            page.press("#query", "Enter")
            page.wait_for_selector("h1:has-text('espresso')")
            assert "logits, unit 967: espresso" in page.inner_text("main")
            page.fill("#query", "12")
            page.press("#query", "Enter")
            page.wait_for_selector("main li")
            assert page.locator("main li").count() == len(layers)  # unit 12 of every layer (all have 13 or more)
            assert errors == []
        finally:
            browser.close()
