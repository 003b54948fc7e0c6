"""Hostile and odd input: a corpus of bad and odd files through the CLI end to end, a fuzzer on the
image loader, atomic writes, the user's model left as it was by every public call (failing ones
too), and no memory growth over many CAM calls."""

from __future__ import annotations

import io
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import convscope
from conftest import tiny_net
from convscope.cli.main import main
from convscope.errors import ConvscopeError, ImageError
from convscope.images import load_image
from convscope.presentation.files import write_bytes


# -- the corpus, generated here ------------------------------------------------------------------
def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _png_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded(Image.new("RGB", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def bad_corpus(folder: Path) -> dict[str, str]:
    """name -> what the error line must say; the files are written into ``folder``."""
    files = {
        "empty.jpg": (b"", "empty file"),
        "text.png": (b"this is a text file pretending to be a PNG\n", "not a recognized image"),
        "truncated.jpg": (_encoded(_noise(64, 64), "JPEG")[:700], "truncated"),
        "truncated.png": (_encoded(_noise(64, 64), "PNG")[:400], "truncated"),
        "bomb.png": (_png_claiming(50_000, 50_000), "decompression bomb"),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    (folder / "a-directory.jpg").mkdir()
    expected = {name: reason for name, (_, reason) in files.items()}
    expected["a-directory.jpg"] = "is a directory"
    expected["missing.jpg"] = "no such file"
    return expected


def odd_corpus(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (width, height) as the image should be seen (after EXIF rotation)."""
    Image.new("CMYK", (40, 30), (0, 200, 200, 0)).save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(48 * 32, dtype=np.uint16).reshape(32, 48) * 40)).save(folder / "gray16.png")
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.new("P", (25, 25), 3).save(folder / "palette.gif")
    Image.new("RGB", (1, 1), (9, 99, 199)).save(folder / "one.png")
    _noise(4000, 2600).save(folder / "big.jpg", quality=70)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise on display
    _noise(60, 40, seed=2).save(folder / "rotated.jpg", exif=exif)
    return {"cmyk.jpg": (40, 30), "gray16.png": (48, 32), "rgba.png": (30, 20), "palette.gif": (25, 25),
            "one.png": (1, 1), "big.jpg": (4000, 2600), "rotated.jpg": (40, 60)}


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", [["predict"], ["activations"], ["cam"], ["run"]])
def test_bad_files_through_the_cli(tmp_path, capsys, command):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    expected = bad_corpus(corpus)
    before = _listing(tmp_path)
    for name, reason in expected.items():
        path = corpus / name
        argv = [*command, str(path)]
        if command != ["predict"]:
            argv += ["--out", str(tmp_path / "out")]
        code = main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"convscope: error: {path}") and reason in lines[0], lines[0]
        assert _listing(tmp_path) == before, f"stray files after {name}"


def test_odd_files_work_end_to_end(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sizes = odd_corpus(corpus)
    for name, size in sizes.items():
        assert load_image(corpus / name).size == size, name
    paths = [str(corpus / name) for name in sizes]
    assert main(["predict", *paths, "--top", "1", "--json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    out = tmp_path / "out"
    code = main(["cam", str(corpus / "rotated.jpg"), str(corpus / "one.png"), str(corpus / "gray16.png"),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    overlays = {p.name.split("_")[0]: Image.open(p).size for p in (out / "cam").glob("*_cam.jpg")}
    assert overlays == {"rotated": (40, 60), "one": (1, 1), "gray16": (48, 32)}  # rotation honoured
    assert main(["activations", str(corpus / "cmyk.jpg"), "--layers", "_conv_stem", "--out", str(out)]) == 0


def test_output_folder_problems_before_any_work(tmp_path, capsys, monkeypatch):
    import convscope.models

    monkeypatch.setattr(convscope.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    for out in (a_file, a_file / "below"):
        for command in (["activations", "sample:coffee"], ["cam", "sample:coffee"], ["filters"],
                        ["run", "sample:coffee"]):
            code = main([*command, "--out", str(out)])
            err = capsys.readouterr().err
            assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1, err
    assert a_file.read_text() == "keep"


def test_foreign_files_in_the_output_folder_are_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "activations").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "activations" / "keep.png").write_bytes(b"not convscope's")
    assert main(["activations", "sample:coffee", "--layers", "_conv_stem", "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "activations" / "keep.png").read_bytes() == b"not convscope's"
    assert sorted(p.name for p in (out / "activations").iterdir()) == ["_conv_stem.png", "keep.png"]


def test_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old complete file")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary file left
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


# -- fuzzing the loader ----------------------------------------------------------------------------
SEEDS = [_encoded(_noise(12, 9, 1), "PNG"), _encoded(_noise(12, 9, 2), "JPEG"),
         _encoded(_noise(12, 9, 3).convert("P"), "GIF"), _encoded(_noise(5, 4, 4), "BMP"),
         _encoded(_noise(6, 6, 5), "TIFF"), _encoded(_noise(6, 6, 6), "WEBP")]


@st.composite
def mutated_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    kind = draw(st.sampled_from(["truncate", "flip", "header", "splice"]))
    if kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    elif kind == "header":  # absurd dimensions or fields in the first bytes
        position = draw(st.integers(0, min(40, len(data) - 4)))
        data[position:position + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                                            b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"]))
    else:
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(max_size=64))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=256), mutated_images()))
def test_fuzzed_images_raise_only_image_error(tmp_path, content):
    path = tmp_path / "fuzz.img"
    path.write_bytes(content)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(10)  # a hang fails this case instead of stalling the suite
    try:
        image = load_image(path)
    except ImageError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert image.mode == "RGB" and image.width >= 1 and image.height >= 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < 5.0


def _hang(signum, frame):
    raise TimeoutError("the image loader hung on a fuzzed file")


# -- the user's model ----------------------------------------------------------------------------------
def _calls():
    x = torch.randn(2, 3, 16, 16)
    return {
        "layers": lambda m: m.layers(),
        "predict": lambda m: m.predict(x, top=2),
        "preprocess": lambda m: m.preprocess(np.zeros((5, 5, 3), np.uint8)),
        "activations": lambda m: convscope.activations(m, x),
        "activations (bad layer)": lambda m: convscope.activations(m, x, "nope"),
        "activations (bad input)": lambda m: convscope.activations(m, torch.zeros(1, 4, 16, 16), "conv2"),
        **{f"cam {method}": (lambda m, method=method: convscope.cam(m, x, [0, 1], method=method))
           for method in convscope.CAM_METHODS},
        "cam (bad classes)": lambda m: convscope.cam(m, x, [0]),
        "cam (bad input)": lambda m: convscope.cam(m, torch.zeros(1, 4, 16, 16)),
        "filters lucid": lambda m: convscope.filters(m, "conv2", 2, steps=2, size=16),
        "filters classic": lambda m: convscope.filters(m, "conv1", 2, steps=2, size=16, method="classic"),
        "filters (bad spec)": lambda m: convscope.filters(m, "conv1", "-3"),
        "filters (bad layer)": lambda m: convscope.filters(m, "nosuch"),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_every_public_call_leaves_the_model_as_it_was(name, model_state):
    net = tiny_net().train()
    net.conv2.weight.requires_grad_(False)
    net.fc.weight.grad = torch.ones_like(net.fc.weight)  # a user's own gradient stays as it is
    before = model_state(net)
    model = convscope.load_model(net, input_size=16, labels=list("abcde"))
    raised = None
    try:
        _calls()[name](model)
    except (ConvscopeError, RuntimeError) as exc:
        raised = exc
    assert (raised is not None) == ("bad" in name), f"{name}: {raised!r}"  # the bad calls must fail
    before.assert_unchanged(net)
    assert net.training and net.bn.training


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_200_cam_calls_do_not_grow_memory(model_state):
    net = tiny_net()
    before = model_state(net)
    model = convscope.load_model(net, input_size=128)
    x = torch.randn(4, 3, 128, 128)
    for _ in range(20):
        convscope.cam(model, x)
    start = _rss_mb()
    for i in range(200):
        convscope.cam(model, x, method="gradcam" if i % 2 else "layercam")
    growth = _rss_mb() - start
    assert growth < 25, f"memory grew by {growth:.1f} MB over 200 calls"
    before.assert_unchanged(net)


def test_image_stems_cannot_leave_the_output_folder():
    from convscope.presentation.writers import image_stems

    assert image_stems(["../../etc/passwd.png", "a/b/c.jpg", "C.png", "sample:coffee", "..", "we ird?.png"]) == [
        "passwd", "c", "C-2", "coffee", "image", "we_ird_"]
