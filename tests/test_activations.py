"""Intermediate outputs: hand-computed normalization, grids, files, VGG19 names, model untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import convscope
from conftest import assert_usage_errors
from convscope.cli.main import main
from convscope.errors import InputError
from convscope.layers import default_activation_layers
from convscope.presentation.drawing import colormap_lut, normalize_to_uint8, render_grid, tile_box
from convscope.presentation.files import safe_name
from convscope.presentation.writers import unique_file_names
from test_layers import VGG19_KERAS


# -- normalization, by hand ----------------------------------------------------------------------
def test_channel_normalization_matches_hand_computation():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[10.0, 10.0], [10.0, 50.0]]])
    pixels = normalize_to_uint8(maps, "channel")
    std0 = math.sqrt(1.25)  # values 0..3: mean 1.5, population std sqrt(1.25)
    expected0 = [round(min(255, max(0, 64 * (v - 1.5) / std0 + 128))) for v in (0, 1, 2, 3)]
    assert expected0 == [42, 99, 157, 214]
    assert pixels[0].ravel().tolist() == expected0
    # channel 1: mean 20, std sqrt(3*100 + 900)/2 = sqrt(300) -> 10 -> z = -sqrt(1/3), 50 -> z = sqrt(3)
    z_low, z_high = -10 / math.sqrt(300), 30 / math.sqrt(300)
    assert pixels[1].ravel().tolist() == [round(64 * z_low + 128)] * 3 + [min(255, round(64 * z_high + 128))]
    assert pixels[1, 1, 1] == 239


def test_layer_normalization_uses_one_scale():
    maps = torch.tensor([[[0.0, 0.0]], [[4.0, 4.0]]])  # two constant channels, different levels
    channel = normalize_to_uint8(maps, "channel")
    layer = normalize_to_uint8(maps, "layer")
    assert (channel == 0).all()  # each channel constant -> flat
    # layer: mean 2, std 2 -> z = -1 and +1 -> 64 and 192
    assert layer[0].ravel().tolist() == [64, 64] and layer[1].ravel().tolist() == [192, 192]


def test_constant_channel_is_flat_never_nan():
    maps = torch.zeros(2, 3, 3)
    maps[1] = 7.5
    with np.errstate(all="raise"):
        pixels = normalize_to_uint8(maps)
    assert (pixels == 0).all()
    grid = np.asarray(render_grid(maps, cmap="gray"))  # 3x3 tiles enlarged 10x, 1 px white separator
    assert grid.shape == (30, 61, 3)
    assert (grid[:, :30] == 0).all() and (grid[:, 31:] == 0).all()  # both constant tiles at the colormap's bottom
    assert (grid[:, 30] == 255).all()


def test_values_beyond_two_sigma_are_clipped():
    maps = torch.zeros(1, 1, 100)
    maps[0, 0, 0] = 1000.0  # z ~ 9.95 -> clipped to 255
    pixels = normalize_to_uint8(maps)
    mean = 10.0
    std = math.sqrt(((1000 - mean) ** 2 + 99 * mean**2) / 100)
    assert (1000 - mean) / std > 2  # beyond the range 64 z + 128 can show
    assert pixels[0, 0, 0] == 255
    assert pixels[0, 0, 1] == round(64 * (0 - mean) / std + 128)


# -- grids ---------------------------------------------------------------------------------------
def test_grid_tiles_separators_and_colours():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]] * 3)
    grid = np.asarray(render_grid(maps, per_row=2, cmap="viridis"))
    # 2x2 maps are enlarged 14x (whole factor) to 28 px; 1 px separators; 2 rows x 2 columns
    assert grid.shape == (57, 57, 3)
    lut = colormap_lut("viridis")
    pixels = normalize_to_uint8(maps[:1])[0]
    np.testing.assert_array_equal(grid[0, 0], lut[pixels[0, 0]])
    np.testing.assert_array_equal(grid[13, 13], lut[pixels[0, 0]])     # nearest: same block
    np.testing.assert_array_equal(grid[14, 14], lut[pixels[1, 1]])
    np.testing.assert_array_equal(grid[28, 5], [255, 255, 255])        # separator row
    np.testing.assert_array_equal(grid[5, 28], [255, 255, 255])        # separator column
    np.testing.assert_array_equal(grid[29, 14], lut[pixels[0, 1]])      # tile 2: second row, first column
    np.testing.assert_array_equal(grid[40, 40], [255, 255, 255])        # the fourth slot is empty
    assert tile_box(2, (3, 2, 2), per_row=2) == (0, 29, 28, 57)


def test_gray_colormap_and_large_maps_keep_resolution():
    maps = torch.arange(2 * 64 * 64, dtype=torch.float32).view(2, 64, 64)
    grid = render_grid(maps, per_row=16, cmap="gray")
    assert grid.size == (64 * 2 + 2, 64)  # no enlargement, 2 px separator for large tiles
    pixels = np.asarray(grid)
    assert (pixels[..., 0] == pixels[..., 1]).all()
    np.testing.assert_array_equal(pixels[:, :64, 0], normalize_to_uint8(maps)[0])


def test_bad_render_options():
    with pytest.raises(InputError, match="unknown colormap 'nope'"):
        render_grid(torch.zeros(1, 2, 2), cmap="nope")
    with pytest.raises(InputError, match="^normalize: unknown 'global'"):
        render_grid(torch.zeros(1, 2, 2), normalize="global")


def test_safe_and_unique_file_names():
    assert safe_name("block3_conv1") == "block3_conv1"
    assert safe_name("_blocks.3._depthwise_conv") == "_blocks.3._depthwise_conv"
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"  # no separator, no leading dot
    assert safe_name("..") == "layer" and safe_name("a b/c") == "a_b_c"
    assert unique_file_names(["a/b", "a_b", "A_B"]) == {"a/b": "a_b", "a_b": "a_b-2", "A_B": "A_B-3"}


# -- capture -------------------------------------------------------------------------------------
def test_default_layers_are_conv_and_pool(tiny_model):
    assert default_activation_layers(tiny_model.all_layers()) == ["conv1", "pool", "conv2"]  # global pool left out


def test_activations_values_and_in_place_relu(tiny, tiny_model, model_state):
    before = model_state(tiny)
    x = torch.randn(2, 3, 16, 16)
    out = convscope.activations(tiny_model, x, ["conv2", "conv1", "relu1"])
    assert list(out) == ["conv1", "relu1", "conv2"]  # network order
    conv1 = F.conv2d(x, tiny.conv1.weight, tiny.conv1.bias, padding=1)
    torch.testing.assert_close(out["conv1"], conv1)
    assert (out["conv1"] < 0).any()
    torch.testing.assert_close(out["relu1"], conv1.clamp(min=0))
    conv2 = F.conv2d(F.max_pool2d(conv1.clamp(min=0), 2), tiny.conv2.weight, tiny.conv2.bias, padding=1)
    torch.testing.assert_close(out["conv2"], conv2)
    assert out["conv2"].shape == (2, 6, 8, 8) and not out["conv2"].requires_grad
    before.assert_unchanged(tiny)


def test_activations_from_a_plain_module_and_images(tiny):
    out = convscope.activations(tiny, [np.zeros((5, 5, 3), np.uint8)], "conv*")
    assert list(out) == ["conv1", "conv2"] and out["conv1"].shape == (1, 4, 224, 224)


def test_memory_limit_is_checked_before_any_work(tiny_model, monkeypatch, model_state):
    before = model_state(tiny_model.module)
    tiny_model.layers()
    monkeypatch.setattr(tiny_model.module, "forward", lambda x: pytest.fail("forward ran"))
    with pytest.raises(InputError, match=r"would take about .* GB, over the limit"):
        convscope.activations(tiny_model, torch.zeros(1, 3, 4000, 4000), "conv1", max_bytes=10**8)
    monkeypatch.undo()
    before.assert_unchanged(tiny_model.module)


def test_hooks_removed_when_forward_fails(tiny, tiny_model, model_state):
    before = model_state(tiny)
    tiny_model.layers()
    with pytest.raises(RuntimeError):
        convscope.activations(tiny_model, torch.zeros(1, 5, 16, 16), "conv2")  # wrong channel count
    before.assert_unchanged(tiny)


# -- the command ---------------------------------------------------------------------------------
def test_cli_vgg19_writes_21_keras_named_grids_and_raw(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["activations", "sample:chelsea", "--model", "vgg19", "--weights", "random",
                 "--out", str(out), "--save-raw"])
    assert code == 0, capsys.readouterr().err
    pngs = sorted(p.stem for p in (out / "activations").glob("*.png"))
    assert pngs == sorted(VGG19_KERAS)
    x = np.load(out / "input.npy")
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    raw = np.load(out / "activations" / "block1_conv1.npy")
    assert raw.shape == (64, 224, 224) and raw.dtype == np.float32
    model = convscope.load_model("vgg19", "random")
    conv = model.module.features[0]
    expected = F.conv2d(torch.from_numpy(x), conv.weight, conv.bias, padding=1).clamp(min=0)[0]
    np.testing.assert_allclose(raw, expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    grid = Image.open(out / "activations" / "block5_pool.png")
    # 512 tiles of 7x7 enlarged 4x to 28 px, 16 per row, 1 px separators
    assert grid.size == (16 * 28 + 15, 32 * 28 + 31)
    assert not list(out.glob("**/.*.tmp"))
    assert "21 layer grids" in capsys.readouterr().out


def test_cli_layer_selection_options_and_errors(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["activations", "sample:coffee", "--layers", "_blocks.15.*conv,_conv_head", "--out", str(out),
                 "--per-row", "8", "--normalize", "layer", "--cmap", "gray"])
    assert code == 0
    files = sorted(p.name for p in (out / "activations").iterdir())
    assert files == ["_blocks.15._depthwise_conv.png", "_blocks.15._expand_conv.png",
                     "_blocks.15._project_conv.png", "_conv_head.png"]
    head = np.asarray(Image.open(out / "activations" / "_conv_head.png"))
    assert head.shape[1] == 8 * 28 + 7 and (head[..., 0] == head[..., 2]).all()

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_usage_errors(capsys, ["activations", "sample:coffee"], [
        (["--layers", "_fc"], "_fc outputs [1000], not a C x H x W feature map"),
        (["--layers", "_conv_stemm"], "did you mean _conv_stem"),
        (["--cmap", "rainbowz"], "unknown colormap 'rainbowz'"),
        (["--out", str(a_file)], "exists and is not a folder"),
        (["--per-row", "0"], "at least 1"),
    ])
    assert a_file.read_text() == "x"
