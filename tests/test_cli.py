"""The command line: JSON contracts, help, and one-line errors with the right exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_net
from convscope.catalog import RANKED_METHOD_NAMES
from convscope.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_layers_json_for_vgg19(capsys):
    code, out, _ = run(capsys, "layers", "--model", "vgg19", "--weights", "random", "--json")
    assert code == 0
    layers = json.loads(out)
    assert layers[0] == {"name": "block1_conv1", "type": "Conv2d", "shape": [64, 224, 224]}
    by_name = {layer["name"]: layer for layer in layers}
    assert by_name["block3_pool"] == {"name": "block3_pool", "type": "MaxPool2d", "shape": [256, 28, 28]}
    assert by_name["predictions"]["shape"] == [1000]
    assert len([n for n in by_name if n.startswith("block")]) == 21


def test_layers_table(capsys):
    code, out, _ = run(capsys, "layers")
    assert code == 0
    assert "_conv_stem" in out and "32x112x112" in out and "efficientnet_lite0" in out


def test_predict_json_on_the_default_model(capsys, tmp_path):
    from PIL import Image

    from convscope.samples import sample_array

    cat = tmp_path / "cat.jpg"
    Image.fromarray(sample_array("chelsea")).save(cat, quality=95)
    code, out, _ = run(capsys, "predict", str(cat), "sample:coffee", "--top", "3", "--json")
    assert code == 0
    result = json.loads(out)
    assert [r["image"] for r in result] == [str(cat), "sample:coffee"]
    cat_preds, coffee_preds = (r["predictions"] for r in result)
    assert len(cat_preds) == 3 and set(cat_preds[0]) == {"index", "label", "probability"}
    assert cat_preds[0]["index"] in (281, 282, 285)
    assert coffee_preds[0] == {"index": 967, "label": "espresso", "probability": pytest.approx(0.899, abs=0.01)}
    probabilities = [p["probability"] for p in cat_preds]
    assert probabilities == sorted(probabilities, reverse=True)


def test_predict_text(capsys):
    code, out, _ = run(capsys, "predict", "sample:grace_hopper", "--top", "1")
    assert code == 0 and "military uniform" in out and "class 652" in out


@pytest.mark.parametrize("argv, exit_code, fragments", [
    (["predict", "missing.jpg"], 2, ["missing.jpg", "no such file"]),
    (["predict", "sample:dog"], 2, ["sample:dog", "unknown sample"]),
    (["predict", "sample:coffee", "--top", "0"], 2, ["--top", "at least 1"]),
    (["predict", "sample:coffee", "--top", "1001"], 2, ["--top 1001", "1000 classes"]),
    (["layers", "--model", "resnet"], 2, ["unknown model 'resnet'"]),
    (["layers", "--model", "vgg19", "--weights", "nothing.pth"], 2, ["nothing.pth", "no such weights file"]),
    (["layers", "--device", "cuda:7"], 2, ["--device"]),
    (["layers", "--device", "mps"], 2, ["--device mps: MPS (Apple GPUs) is not available"]),
    (["layers", "--bogus"], 2, ["unrecognized arguments: --bogus"]),
])
def test_errors_are_one_line(capsys, argv, exit_code, fragments):
    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight GPUs")
    if "mps" in argv and torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    code, out, err = run(capsys, *argv)
    assert code == exit_code
    assert_one_line_error(err, *fragments)


def test_bad_image_file_fails_before_loading_the_model(capsys, tmp_path, monkeypatch):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    import convscope.models

    monkeypatch.setattr(convscope.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    code, _, err = run(capsys, "predict", str(bad))
    assert code == 2
    assert_one_line_error(err, str(bad), "not a recognized image")


def test_unsafe_weights_refused_from_the_cli(capsys, tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": print}, protocol=2))
    code, _, err = run(capsys, "layers", "--model", "vgg16", "--weights", str(path))
    assert code == 2
    assert_one_line_error(err, str(path), "refused")


def test_debug_shows_the_traceback(capsys):
    code, _, err = run(capsys, "predict", "missing.jpg", "--debug")
    assert code == 2 and "Traceback" in err and err.strip().endswith("missing.jpg: no such file")


def test_internal_errors_are_one_line_too(capsys, monkeypatch):
    import convscope.model

    def broken(self, x):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(convscope.model.Model, "raw_output", broken)
    code, _, err = run(capsys, "predict", "sample:coffee")
    assert code == 1
    assert_one_line_error(err, "internal error", "kaboom second line", "--debug")


@pytest.mark.parametrize("command", [[], ["layers"], ["predict"]])
def test_help(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and "usage: convscope" in out


def test_help_and_usage_errors_answer_without_importing_torch():
    from convscope.cli.main import COMMANDS

    script = ("import sys, io, contextlib\n"
              "from convscope.cli.main import main, COMMANDS\n"
              "codes = []\n"
              "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
              "    codes.append(main(['--help']))\n"
              "    codes.append(main(['--version']))\n"
              "    codes += [main([command, '--help']) for command in COMMANDS]\n"
              "    codes.append(main(['predict']))\n"
              "    codes.append(main(['cam', 'x.jpg', '--top', '0']))\n"
              "print(codes, sorted(name for name in sys.modules if name.split('.')[0] in ('torch', 'torchvision', "
              "'numpy', 'PIL', 'matplotlib')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == f"{[0, 0] + [0] * len(COMMANDS) + [2, 2]} []", done.stderr


SAMPLES_HINT = "choose from sample:chelsea, sample:coffee, sample:grace_hopper"
CAM_METHODS_HINT = "choose from " + ", ".join(RANKED_METHOD_NAMES)
#: Checks that need no model: the command line and the one line it answers, in the library's words,
#: before torch is imported (x.jpg and DIR do not exist: the value is checked before the files).
EARLY_ERRORS = [
    (["cam", "--alpha", "7", "x.jpg"], "--alpha must be between 0 and 1, got 7.0"),
    (["cam", "x.jpg", "--alpha", "-0.5"], "--alpha must be between 0 and 1, got -0.5"),
    (["cam", "sample:nope"], f"sample:nope: unknown sample; {SAMPLES_HINT}"),
    (["predict", "x.jpg", "sample:dog"], f"sample:dog: unknown sample; {SAMPLES_HINT}"),
    (["activations", "sample:cat"], f"sample:cat: unknown sample; {SAMPLES_HINT}"),
    (["run", *["x.jpg"] * 17],
     "17 images make a report too large to open (16 at most); for a folder of images use `convscope dataset FOLDER`"),
    (["run", "x.jpg", "--size", "8"], "--size must be between 16 and 1024 pixels, got 8"),
    (["dataset", "DIR", "--workers", "-1"], "--workers must be at least 0, got -1"),
    (["dataset", "DIR", "--examples", "--examples-top", "0"], "--examples-top must be at least 1, got 0"),
    (["dataset", "DIR", "--metrics", "drop,nope"],
     "--metrics: unknown 'nope'; choose none or from drop, deletion, insertion"),
    (["evaluate", "x.jpg", "--metrics", "nope"],
     "--metrics: unknown 'nope'; choose none or from deletion, insertion, drop, sanity, pointing"),
    (["evaluate", "x.jpg", "--metrics", "deletion,pointing"],
     "--metrics: pointing needs boxes (or a target that knows each map's region: segmentation, detection)"),
    (["evaluate", "x.jpg", "--methods", "gradcam,nope"], f"--methods: unknown 'nope'; {CAM_METHODS_HINT}"),
    (["evaluate", "x.jpg", "--methods", "all,gradcam"], f"--methods: unknown 'all'; {CAM_METHODS_HINT}"),
    (["evaluate", "x.jpg", "--methods", ","], "--methods: empty method list"),
    (["filters", "--size", "2000"], "--size must be between 16 and 1024 pixels, got 2000"),
    (["filters", "--filters=-3"], "--filters -3: negative count"),
    (["filters", "--filters", "0"], "--filters 0: the count must be at least 1"),
    (["filters", "--filters", " "], "--filters: empty filter spec"),
    (["filters", "--filters", "0-3, x"],
     "--filters '0-3, x': 'x' is not an index or a range like 0-15 (indices are 0 or more)"),
    (["filters", "--filters", "5-2"], "--filters '5-2': empty range '5-2'"),
]
#: A colormap is checked by matplotlib (imported for a --cmap other than the default), still without torch.
CMAP_ERROR = (["activations", "x.jpg", "--cmap", "nope"], "--cmap: unknown colormap 'nope' (any matplotlib "
              "colormap, e.g. viridis, gray, magma, inferno, plasma, jet, turbo)")


@pytest.mark.parametrize("argv, message", [*EARLY_ERRORS, CMAP_ERROR], ids=lambda value: " ".join(value)[:40])
def test_checks_that_need_no_model_answer_in_the_librarys_words(capsys, monkeypatch, argv, message):
    import convscope.models

    monkeypatch.setattr(convscope.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (2, "", f"convscope: error: {message}\n")


def test_checks_that_need_no_model_answer_without_importing_torch():
    script = ("import contextlib, io, json, sys\n"
              "from convscope.cli.main import main\n"
              "heavy = ('torch', 'torchvision', 'numpy', 'PIL', 'matplotlib')\n"
              "def answer(argv):\n"
              "    with contextlib.redirect_stderr(io.StringIO()) as err:\n"
              "        code = main(argv)\n"
              "    return [code, err.getvalue(), sorted({n.split('.')[0] for n in sys.modules} & set(heavy))]\n"
              f"print(json.dumps([answer(argv) for argv in {[argv for argv, _ in [*EARLY_ERRORS, CMAP_ERROR]]!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for (argv, message), (code, err, imported) in zip(EARLY_ERRORS, answers):
        assert (code, err, imported) == (2, f"convscope: error: {message}\n", []), argv
    code, err, imported = answers[-1]  # the colormap: matplotlib (and numpy) but not torch
    assert (code, err, "torch" in imported) == (2, f"convscope: error: {CMAP_ERROR[1]}\n", False)


@pytest.mark.parametrize("argv", [
    ["layers"], ["demo"], ["predict", "x.jpg", "sample:coffee"], ["explain", "x.jpg"], ["activations", "x.jpg"],
    ["activations", "x.jpg", "--cmap", "gray_r"], ["filters"], ["filters", "--filters", "0-15, 32", "--size", "16"],
    ["filters", "--filters", "1024", "--size", "1024"], ["run", *["x.jpg"] * 16],
    ["run", "x.jpg", "--no-filters", "--size", "8"],
    ["cam", "x.jpg"], ["cam", "x.jpg", "--alpha", "0"], ["cam", "x.jpg", "--alpha", "1"], ["evaluate", "x.jpg"],
    ["evaluate", "x.jpg", "--methods", "gradcam, layercam", "--metrics", "none"],
    ["evaluate", "x.jpg", "--metrics", "pointing", "--boxes", "b.json"], ["dataset", "DIR"],
    ["dataset", "DIR", "--workers", "0", "--metrics", "drop,deletion,insertion", "--examples-top", "0"],
    ["dataset", "DIR", "--examples", "--examples-top", "1"],
], ids=lambda value: " ".join(value)[:40])
def test_the_early_checks_let_what_the_library_accepts_through(argv):
    from convscope.cli.checks import check_args
    from convscope.cli.main import build_parser

    check_args(build_parser().parse_args(argv))


def test_the_early_checks_agree_with_the_library(tmp_path):
    from PIL import Image

    import convscope
    from convscope import dataset
    from convscope.cli import checks
    from convscope.errors import InputError
    from convscope.presentation.drawing import colormap_lut
    from convscope.techniques import evaluate, filters

    def message(check, *args):
        try:
            check(*args)
        except InputError as exc:
            return str(exc)
        return None

    for spec in ["all", "gradcam", " gradcam , layercam", "nope", "gradcam,nope", "", ",", "all,gradcam"]:
        assert message(checks.check_methods, spec) == message(evaluate.check_methods, spec), spec
    for spec in ["none", "", "deletion,drop", "nope", "pointing", "deletion, pointing", "none,drop", " none"]:
        for boxes in (True, False):
            assert message(checks.check_metrics, spec, boxes) == message(evaluate.check_metrics, spec, boxes), spec
    for spec in ["16", "0", "00", "-3", "", " ", " 7 ", "0-15,32", "0 - 3", "a", "5-2", "0-3, x", "1,,2", "-1-3"]:
        assert message(checks.filter_spec, spec) == message(filters.parse_filter_spec, spec, 1000), spec
    for size in (15, 16, 1024, 1025):
        assert message(checks.check_filter_size, size) == message(filters.check_filter_settings, "lucid", None, size)
    for name in ("viridis", "gray", "magma_r", "nope"):
        assert message(checks.check_colormap, name) == message(colormap_lut, name), name
    model = convscope.load_model(tiny_net(), input_size=16, labels=["cat", "dog", "cup", "car", "tree"])
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16)).save(photos / "a.png")
    for spec in ["nope", "drop,,nope", " none", "none,drop", "pointing"]:
        ran = message(lambda metrics: dataset.run(model, photos, tmp_path / "out", metrics=metrics), spec)
        assert ran is not None and message(checks.check_dataset_metrics, spec) == ran, spec


def test_every_image_argument_says_a_file_or_a_sample(capsys):
    from convscope.cli.main import COMMANDS

    for command in COMMANDS:
        code, out, _ = run(capsys, command, "--help")
        if "IMAGE" not in out.split("\n")[0]:
            continue
        line = " ".join(out.split("positional arguments:")[1].split("options:")[0].split())
        assert line.startswith("IMAGE") and "file" in line and "sample:NAME" in line, (command, line)


def test_the_catalog_agrees_with_the_registries():
    from convscope import catalog
    from convscope.dataset import pipeline
    from convscope.techniques import filters
    from convscope.techniques.cams import METHODS
    from convscope.techniques.filter_recipes import RECIPES

    assert tuple(METHODS) == catalog.CAM_METHOD_NAMES
    assert {name: recipe.default_steps for name, recipe in RECIPES.items()} == catalog.RECIPE_STEPS
    assert tuple(name for name, recipe in RECIPES.items() if recipe.from_photo) == catalog.PHOTO_RECIPES
    assert pipeline.DATASET_METRICS == catalog.DATASET_METRICS
    assert (filters.MIN_SIZE, filters.MAX_SIZE) == catalog.FILTER_SIZES


@pytest.mark.parametrize("debug", [True, False])
def test_third_party_warnings_only_with_debug(capsys, debug):
    code, _, err = run(capsys, "layers", "--model", "torchvision:inception_v3", "--weights", "random",
                       *(["--debug"] if debug else []))
    assert code == 0
    if debug:  # torchvision's FutureWarning about inception_v3's initialization, as one line
        assert err.strip().startswith("convscope: warning: The default weight initialization of inception_v3")
        assert len(err.strip().splitlines()) == 1
    else:
        assert err == ""


def test_console_script_is_installed(tmp_path):
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_net().state_dict(), weights)
    exe = os.path.join(os.path.dirname(sys.executable), "convscope")
    result = subprocess.run([exe, "predict", str(tmp_path / "none.png")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"convscope: error: {tmp_path / 'none.png'}: no such file"
    version = subprocess.run([sys.executable, "-m", "convscope", "--version"], capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("convscope ")


def test_library_errors_are_worded_with_flags():
    from convscope.cli.main import flag_for
    from convscope.errors import InputError

    error = InputError("per_row must be at least 1, got 0; or try classes=3", parameter="per_row", mentions=["classes"])
    assert str(error) == "per_row must be at least 1, got 0; or try classes=3"  # Python's words
    assert error.worded_for(flag_for) == "--per-row must be at least 1, got 0; or try --class 3"
    assert InputError("no parameter here").worded_for(flag_for) == "no parameter here"
    with pytest.raises(ValueError):
        InputError("a message not starting with it", parameter="alpha")


def test_the_command_line_keeps_freed_memory_for_reuse(monkeypatch, capsys):
    """glibc unmaps large freed blocks, so each forward pass faults its activations in again; the
    command line keeps them (benchmarks/allocator.py: 2x faster passes). The library never sets it."""
    import platform

    import convscope.cli.main as cli_main
    from convscope.allocator import keep_freed_memory

    calls = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append(True))
    assert main(["cam", "sample:coffee", "--alpha", "7"]) == 2  # refused before any work, after the setting
    assert calls == [True]
    capsys.readouterr()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True
