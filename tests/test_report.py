"""The HTML report: built from a small model and from VGG19 (random weights), opened from disk in a
real browser (Playwright driving Debian's chromium), checked for errors, images, names, clicks,
stable links, escaping and accessibility (axe)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convscope
from conftest import tiny_net
from convscope.cli.main import main
from convscope.presentation.run import run_all

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CONVSCOPE_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
EVIL_LABEL = '<img src=x onerror="window.injected=1">cat & "dog"'
EVIL_NAME = "my<b>photo</b>\".png"


def photo(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "report"
    labels = [EVIL_LABEL, "b", "c", "d", "e"]
    model = convscope.load_model(tiny_net(), input_size=32, labels=labels)
    run_all(model, [photo(1), photo(2)], [EVIL_NAME, "second.jpg"], out, filters_steps=3, say=lambda line: None)
    return out / "index.html"


@pytest.fixture(scope="module")
def vgg_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vgg") / "report"
    model = convscope.load_model("vgg19", "random")
    run_all(model, [photo(3, (120, 90))], ["photo.jpg"], out, filters_steps=2, filters_count=8,
            trust=False, say=lambda line: None)  # the trust section is tested on the tiny report
    return out / "index.html"


def test_report_files_and_no_external_references(tiny_report):
    out = tiny_report.parent
    html = tiny_report.read_text()
    for folder in ("activations", "filters", "cam", "images", "attribute"):
        assert any((out / folder).iterdir()), folder
    # the pixel attribution (saliency by default) of each image's top class, beside its maps
    data = json.loads(html.split('<script type="application/json" id="report-data">')[1].split("</script>")[0])
    for image in data["images"]:
        attribution = image["attribution"]
        assert attribution["method"] == "Saliency" and attribution["class"] == image["cams"][0]["class"]
        assert (out / attribution["overlay"]).exists() and (out / attribution["heatmap"]).exists()
        assert f'id="attribution/{image["stem"]}"' in html
    assert (out / "activations" / "conv1.png").exists() and (out / "filters" / "conv1.png").exists()
    assert (out / "activations" / "second" / "conv1.png").exists()  # the other images in a folder each
    assert "http://" not in html and "https://" not in html and "fetch(" not in html
    assert "<b>photo</b>" not in html and 'onerror="window' not in html
    assert "my&lt;b&gt;photo&lt;/b&gt;" in html
    for src in __import__("re").findall(r'src="([^"]+)"', html):
        assert not src.startswith(("/", "file:")) and (out / src).exists(), src


def test_why_this_class_under_each_top_map_and_the_filter_cache_reused(tiny_report, tmp_path, monkeypatch):
    import json
    import re

    out = tiny_report.parent
    html = tiny_report.read_text()
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    data = json.loads(found.group(1))
    for image in data["images"]:
        why = image["why"]
        assert why["class"] == image["cams"][0]["class"] and why["layer"] == "relu2" and why["filter_layer"] == "conv2"
        saved = json.loads((out / why["json"]).read_text())
        assert [c["index"] for c in why["channels"]] == saved["top"] + saved["against"]
        assert all((out / c["picture"]).exists() and c["tile"] for c in why["channels"])
        assert (out / why["figure"]).exists() and f'id="why/{image["stem"]}"' in html
    # a second run into the same folder draws every filter picture from the cache
    from convscope.presentation import filter_cache

    model = convscope.load_model(tiny_net(), input_size=32, labels=[EVIL_LABEL, "b", "c", "d", "e"])
    monkeypatch.setattr(filter_cache, "draw_filters", lambda *a, **k: pytest.fail("a filter picture recomputed"))
    lines = []
    import shutil

    shutil.copytree(out / "filters", tmp_path / "again" / "filters")  # the first run's cache, in a new folder
    run_all(model, [photo(1), photo(2)], [EVIL_NAME, "second.jpg"], tmp_path / "again", filters_steps=3,
            say=lines.append, trust=False)
    assert any("from the cache" in line for line in lines)
    assert (tmp_path / "again" / "filters" / "conv1.png").read_bytes() == (out / "filters" / "conv1.png").read_bytes()


def test_run_and_demo_commands_exist(capsys):
    assert main(["run", "--help"]) == 0 and "--filters-steps" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0 and "--out" in capsys.readouterr().out
    assert main(["run", "missing.png"]) == 2
    assert "missing.png: no such file" in capsys.readouterr().err


# -- in a real browser -------------------------------------------------------------------------------
def _browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _open(playwright, url: str, width: int = 1366):
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run"])
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_load_state("load")
    return browser, page, errors


def _check_page(page, errors, layer_names, filter_names):
    assert errors == []
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => i.getAttribute('src'))")
    assert broken == []
    assert page.evaluate("document.images.length") > len(layer_names)
    text = page.inner_text("body")
    for name in layer_names + filter_names:
        assert name in text, name
    assert page.evaluate("Array.from(document.images).every(i => i.alt && i.alt.trim().length > 0)")
    assert page.evaluate("window.injected === undefined")


def _axe(page):
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    bad = [(v["id"], v["impact"], v["help"]) for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == []


def test_tiny_report_in_a_browser(tiny_report):
    with _browser() as playwright:
        browser, page, errors = _open(playwright, tiny_report.as_uri())
        try:
            _check_page(page, errors, ["conv1", "pool", "conv2"], ["conv1", "conv2"])
            assert EVIL_LABEL in page.inner_text("#cam")  # shown as text, not markup
            # click the third tile of conv2 (tiles 8x8 enlarged to 32 px, 1 px separators)
            page.click("a[data-layer='conv2']")
            tiles = "section.layer[data-layer='conv2']:not([hidden]) canvas.tiles"
            page.wait_for_function(f"document.querySelector({tiles!r})?.dataset.size")  # drawn after the hashchange
            size = int(page.get_attribute(tiles, "data-size"))
            page.locator(tiles).click(position={"x": 2 * (size + 2) + size // 2, "y": size // 2})
            assert page.is_visible("#viewer")
            assert page.inner_text("#viewer-title") == f"conv2, channel 2 ({EVIL_NAME})"
            first_stats = page.inner_text("#viewer-stats")
            assert "min" in first_stats and "max" in first_stats
            assert page.evaluate("location.hash") == "#activations/conv2/2"
            page.keyboard.press("ArrowRight")
            assert page.inner_text("#viewer-title").startswith("conv2, channel 3")
            page.keyboard.press("Escape")
            assert not page.is_visible("#viewer")
            # the second image's intermediate outputs
            page.select_option("#act-image", "1")
            page.fill("section.layer:not([hidden]) input[name=index]", "2")
            page.press("section.layer:not([hidden]) input[name=index]", "Enter")
            assert page.inner_text("#viewer-title") == "conv2, channel 2 (second.jpg)"
            assert page.inner_text("#viewer-stats") != first_stats
            page.keyboard.press("Escape")
            assert page.get_attribute("#act-photo", "src") == "images/second.jpg"  # the photo beside its grid
            page.select_option("#act-image", "0")
            first = page.evaluate("JSON.parse(document.getElementById('report-data').textContent).images[0].file")
            assert page.get_attribute("#act-photo", "src") == first != "images/second.jpg"
            # keyboard only: the channel form
            page.fill("section.layer:not([hidden]) input[name=index]", "5")
            page.press("section.layer:not([hidden]) input[name=index]", "Enter")
            assert page.inner_text("#viewer-title").startswith("conv2, channel 5")
            page.keyboard.press("Escape")
            # filters: click the first picture
            page.locator("img.grid[data-kind=filters][data-layer=conv1]").click(position={"x": 8, "y": 8})
            assert page.inner_text("#viewer-title") == "conv1, filter 0"
            assert "score" in page.inner_text("#viewer-stats")
            page.keyboard.press("Escape")
            # the opacity slider changes the heatmaps
            page.fill("#opacity", "80")
            page.dispatch_event("#opacity", "input")
            assert page.evaluate("getComputedStyle(document.querySelector('img.heat')).opacity") == "0.8"
            # "Why this class": a channel of the second image opens its tile among that image's outputs
            why = page.locator("section.why").nth(1)
            row = why.locator("tbody tr").first
            channel = int(row.locator("th").inner_text().split(": ")[1])
            assert row.locator("img").get_attribute("src").endswith(f"/conv2/{channel}.png")  # relu2 shows conv2's
            row.locator("a", has_text="its activation").click()
            page.wait_for_function(f"location.hash === '#activations/relu2/{channel}'")
            # the hash changes before the page's hashchange handler opens the viewer: wait for the viewer
            page.wait_for_function("document.getElementById('viewer').open && "
                                   "document.getElementById('viewer-title').textContent.startsWith('relu2')")
            assert page.inner_text("#viewer-title") == f"relu2, channel {channel} (second.jpg)"
            page.keyboard.press("Escape")
            _axe(page)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-tiny.png"), full_page=True)
        finally:
            browser.close()


def test_vgg19_report_stable_links_moved_folder(vgg_report, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(vgg_report.parent, moved)
    shutil.rmtree(vgg_report.parent)  # only the moved copy exists now
    index = moved / "index.html"
    keras = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)]
    keras += [f"block{b}_pool" for b in range(1, 6)]
    with _browser() as playwright:
        browser, page, errors = _open(playwright, index.as_uri() + "#activations/block3_conv1/17", width=1920)
        try:
            _check_page(page, errors, keras, [f"block{b}_conv1" for b in range(1, 6)])
            assert page.is_visible("#viewer")
            assert page.inner_text("#viewer-title") == "block3_conv1, channel 17"
            assert page.is_visible("section.layer[data-layer=block3_conv1]")
            page.keyboard.press("Escape")
            page.goto("about:blank")  # each stable link opened as a fresh page load
            page.goto(index.as_uri() + "#filters/block4_conv1/3")
            page.wait_for_load_state("load")
            assert page.inner_text("#viewer-title") == "block4_conv1, filter 3"
            page.keyboard.press("Escape")
            # links that name no layer or channel keep the current view and say so
            page.goto("about:blank")
            page.goto(index.as_uri() + "#activations/block2_conv2")
            page.wait_for_load_state("load")
            for link, says in (("#activations/nonexistent/3", "names no layer \u201cnonexistent/3\u201d"),
                               ("#activations/block3_conv1/999",
                                "names no channel \u201c999\u201d of layer block3_conv1"),
                               ("#filters/block1_conv1/60", "a filter that layer block1_conv1 does not show")):
                page.evaluate("(hash) => { location.hash = hash; }", link)
                page.wait_for_selector("#link-note:not([hidden])")
                assert says in page.inner_text("#link-note"), link
                assert page.is_visible("section.layer[data-layer=block2_conv2]")  # the current layer stays
                assert not page.is_visible("#viewer")
            page.evaluate("() => { location.hash = '#activations/block3_conv1'; }")
            page.wait_for_selector("#link-note", state="hidden")
            for link in ("#activations/block5_pool", "#cam/photo", "#run"):
                page.goto("about:blank")
                page.goto(index.as_uri() + link)
                page.wait_for_load_state("load")
                in_view = page.evaluate(
                    "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
                    " return r.top >= 0 && r.top < window.innerHeight; }", link[1:])
                assert in_view, link
            assert errors == []
            _axe(page)
            # the tiles use the panel's width: at least 48 px for a 512-channel layer, at 1400 px and on a phone
            measured = {}
            for width in (1400, 390):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto("about:blank")
                page.goto(index.as_uri() + "#activations/block5_conv1")
                canvas = "canvas.tiles[data-layer='block5_conv1']"
                page.wait_for_function(f"document.querySelector({canvas!r}).dataset.size")
                measured[width] = page.evaluate(
                    "(selector) => { const c = document.querySelector(selector), r = c.getBoundingClientRect();"
                    " const columns = Number(c.dataset.columns);"
                    " return {tile: (r.width - 2 * (columns - 1)) / columns, columns, width: r.width, right: r.right,"
                    " panel: c.parentElement.clientWidth, pixelated: getComputedStyle(c).imageRendering,"
                    " page: document.documentElement.scrollWidth}; }", canvas)
            for width, m in measured.items():
                assert m["tile"] >= 48 and m["right"] <= width and m["page"] <= width, (width, m)
                assert m["width"] >= 0.9 * m["panel"] and m["pixelated"] == "pixelated", (width, m)
            assert measured[1400]["columns"] > 16 > measured[390]["columns"]  # the number per row follows the width
            page.locator(canvas).click(position={"x": 3, "y": measured[390]["tile"] + 2 + 3})  # the second row
            assert page.inner_text("#viewer-title") == f"block5_conv1, channel {measured[390]['columns']}"
            page.keyboard.press("Escape")
            _axe(page)
            page.set_viewport_size({"width": 1280, "height": 800})
            page.goto(index.as_uri())
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-vgg19.png"))
        finally:
            browser.close()


def test_flat_and_unreached_filters_marked_in_a_browser(tmp_path, monkeypatch):
    import convscope.precision
    from conftest import MarkedNet
    from convscope.techniques.filters import FLAT_REDRAWN

    # in fp32 the mean of filter 1 is exactly its bias (in bf16, rounding gives Adam a gradient to follow)
    monkeypatch.setattr(convscope.precision, "candidates", lambda device: ["fp32"])
    model = convscope.load_model(MarkedNet(), input_size=32, labels=["a", "b"])
    index = run_all(model, [photo(7)], ["p.jpg"], tmp_path / "out", filters_steps=3, filters_size=32, trust=False,
                    say=lambda line: None)
    saved = json.loads((tmp_path / "out" / "filters" / "conv.json").read_text())
    assert [(f["objective"], f["reached"]) for f in saved["filters"]] == [("mean", True), ("neuron", True),
                                                                          ("mean", False)]
    with _browser() as playwright:
        browser, page, errors = _open(playwright, index.as_uri())
        try:
            section = page.locator("section.filter-layer[id='filters/conv']")
            assert section.locator(".badge").all_inner_texts() == ["flat", "dead"]
            assert section.locator(".badge[data-filter='2']").get_attribute("class") == "badge failed"
            marks = section.locator(".marks").inner_text()
            assert "1 picture flat or not reached with the mean objective, shown with the centre-unit objective " \
                   "(filter 1)" in marks and "1 dead: all weights zero (filter 2)" in marks
            assert "not reached by either" not in marks
            kernels = section.locator("img.kernels")  # the first layer's kernels beside its pictures
            assert kernels.get_attribute("src") == "filters/conv_kernels.png"
            assert kernels.evaluate("i => i.naturalWidth")
            badge = section.locator(".badge[data-filter='1']").bounding_box()
            grid = section.locator("img.grid").bounding_box()
            scale = grid["width"] / (3 * (32 + 4) + 4)  # the badge sits on its picture, the second of the row
            assert abs(badge["x"] - grid["x"] - (4 + 36) * scale - 2) < 2
            assert abs(badge["y"] - grid["y"] - 4 * scale - 2) < 2
            section.locator("img.grid").click(position={"x": (4 + 36 + 8) * scale, "y": 12 * scale})
            assert page.inner_text("#viewer-title") == "conv, filter 1"
            assert page.inner_text("#viewer-stats").startswith("score (centre-unit pre-activation)")
            assert FLAT_REDRAWN in page.inner_text("#viewer-stats")
            page.keyboard.press("Escape")
            classes = page.locator("section.filter-layer[id='filters/logits']")  # the image's top class
            top = model.predict(model.preprocess([photo(7)]), top=2)[0][0]
            assert classes.locator("h3").inner_text() == "Class pictures"
            assert f"{top.label} ({top.index})" in classes.locator(".note").inner_text()
            classes.locator("img.grid").click(position={"x": 12 * scale, "y": 12 * scale})
            assert page.inner_text("#viewer-title") == f"class picture: {top.label} ({top.index})"
            assert page.inner_text("#viewer-stats").startswith("logit ")
            page.keyboard.press("Escape")
            why = page.locator(".why .class-picture img")
            assert why.get_attribute("src").endswith(f"/logits/{top.index}.png") and why.evaluate("i => i.naturalWidth")
            assert errors == []
            _axe(page)
        finally:
            browser.close()


def test_run_options_from_python_and_the_command_line(tmp_path, capsys):
    model = convscope.load_model(tiny_net(), input_size=32, labels=list("abcde"))
    out = tmp_path / "py"
    html = run_all(model, [photo(4)], ["p.jpg"], out, layers="conv*", filters=False, method="layercam", top=1,
                   say=lambda line: None).read_text()
    assert sorted(p.name for p in (out / "activations").glob("*.png")) == ["conv1.png", "conv2.png"]
    assert not any((out / "filters").iterdir()) and "Not drawn in this run." in html
    assert len(list((out / "cam").glob("*_cam.jpg"))) == 1 and "Layer-CAM on layer" in html

    out = tmp_path / "cli"
    code = main(["run", "sample:coffee", "--model", "torchvision:squeezenet1_1", "--weights", "random", "--quiet",
                 "--layers", "features.0", "--size", "32", "--filters-steps", "1", "--cam-method", "gradcam++",
                 "--top", "2", "--objective", "neuron", "--attribution", "occlusion", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert [p.name for p in (out / "activations").glob("*.png")] == ["features.0.png"]
    saved = [json.loads(p.read_text()) for p in (out / "filters").glob("*.json")]
    assert saved and all(s["objective"] == "neuron" and {f["objective"] for f in s["filters"]} == {"neuron"}
                         for s in saved)
    assert "the filter's pre-activation at the centre position" in (out / "index.html").read_text()
    assert len(list((out / "cam").glob("*_cam.jpg"))) == 2
    assert all(Image.open(p).size[0] == 8 * (32 + 4) + 4 for p in (out / "filters").glob("*.png")
               if p.stem != "logits")  # the class pictures: one per image's top class
    assert "Grad-CAM++" in (out / "index.html").read_text()
    assert len(list((out / "attribute").glob("coffee_*_occlusion_overlay.jpg"))) == 1  # the top class only
    assert "Pixel attribution: Occlusion" in (out / "index.html").read_text()


def test_html_report_for_a_custom_module_from_python(tmp_path):
    path = tmp_path / "cat.png"
    photo(5).save(path)
    model = convscope.load_model(tiny_net(), input_size=32)
    index = convscope.html_report(model, [str(path), np.asarray(photo(6))], tmp_path / "out", filters_steps=1,
                                  top=1)
    html = index.read_text()
    assert index == tmp_path / "out" / "index.html" and str(path) in html and "image2" in html
    assert (tmp_path / "out" / "images" / "cat.jpg").exists() and (tmp_path / "out" / "images" / "image2.jpg").exists()
    with pytest.raises(convscope.InputError, match="^names has 1 entries for 2 images"):
        convscope.html_report(model, [str(path), str(path)], tmp_path / "x", names=["a"])


def test_dataset_report_in_a_browser(tmp_path):
    """The dataset report's summary, a gallery page and an image page: no errors, every thumbnail
    loads (lazily, once scrolled to), the links lead where they say, and axe finds nothing serious."""

    from conftest import tiny_net
    from convscope import dataset
    from convscope.dataset.report import write_dataset_report, write_example_filters

    labels = ["cat", "dog", "cup", "car", "tree"]
    model = convscope.load_model(tiny_net(), input_size=16, labels=labels)
    rng = np.random.default_rng(1)
    for index in range(12):
        folder = tmp_path / "photos" / labels[index % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30 + index, 40, 3), dtype=np.uint8)).save(folder / f"p{index}.png")
    dataset.run(model, tmp_path / "photos", tmp_path / "out", examples="conv1,conv2,relu2", examples_top=3)
    write_example_filters(model, tmp_path / "out")
    index = write_dataset_report(tmp_path / "out", labels)
    single = run_all(model, [Image.open(tmp_path / "photos" / "cat" / "p0.png")], ["p0.png"], tmp_path / "single",
                     trust=False, dataset=tmp_path / "out", say=lambda line: None)
    with _browser() as playwright:
        browser, page, errors = _open(playwright, index.as_uri())
        try:
            assert "12 images" in page.inner_text("body") and errors == []
            _axe(page)
            page.click("#classes-title ~ table a:text-is(\"cat (0)\")")
            page.wait_for_load_state("load")
            assert "True class cat (0)" in page.inner_text("h1")
            for image in page.locator("img").all():
                image.scroll_into_view_if_needed()
            page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert page.evaluate("Array.from(document.images).every(i => i.loading === 'lazy' && i.alt)")
            _axe(page)
            page.locator("ul.grid a").first.click()
            page.wait_for_load_state("load")
            assert "Predictions" in page.inner_text("body")
            assert page.evaluate("document.images[0].complete && document.images[0].naturalWidth > 0")
            _axe(page)
            page.click("text=Back to the summary")
            assert page.url == index.as_uri() and errors == []
            # a stable link to a channel's examples, and one to nothing
            page.goto(index.as_uri() + "#examples/conv2/5")
            page.wait_for_url("**/examples-conv2-0001.html#examples/conv2/5")
            assert page.is_visible("[id='examples/conv2/5']") and page.locator("img.filter").count() == 6
            _axe(page)
            page.goto(index.as_uri() + "#examples/conv2/99")
            page.wait_for_selector("#link-note:not([hidden])")
            assert "names no layer or channel" in page.inner_text("#link-note")
            # the single-image report's filter viewer links to the examples
            page.goto(single.as_uri())
            page.locator("img.grid[data-kind=filters][data-layer=conv2]").click(position={"x": 8, "y": 8})
            assert page.inner_text("#viewer-title") == "conv2, filter 0" and page.is_visible("#viewer-examples")
            page.click("#viewer-examples")
            page.wait_for_url("**/examples-conv2-0001.html#examples/conv2/0")
            # "Why this class" links each channel of the CAM layer (relu2: its pictures are conv2's) to its examples
            page.goto(single.as_uri())
            link = page.locator("section.why a", has_text="dataset examples").first
            channel = link.get_attribute("href").rsplit("/", 1)[1]
            link.click()
            page.wait_for_url(f"**/examples-relu2-0001.html#examples/relu2/{channel}")
            assert page.is_visible(f"[id='examples/relu2/{channel}']")
            assert errors == []
        finally:
            browser.close()
