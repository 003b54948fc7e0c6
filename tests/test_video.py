"""Video networks (B x C x T x H x W input): clips read from a video file, a frame folder, a .npy
volume or a still; maps over T x H x W computed by hand on a tiny Conv3d network and against
pytorch-grad-cam's 3-D path on torchvision's r3d_18 (random weights, seeded); the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import convscope
from convscope.clips import Clip, probe_clip, read_clip, spaced
from convscope.errors import ImageError, InputError
from convscope.techniques.cams import compute_cam, minmax, upsample


class TinyVideoNet(nn.Module):
    """conv3d (3 -> 4 channels) -> ReLU -> global mean over T x H x W -> linear (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def _tiny() -> convscope.Model:
    torch.manual_seed(0)
    return convscope.load_model(TinyVideoNet().eval(), input_size=8, frames=4)


def _volume(frames: int = 6, height: int = 10, width: int = 12) -> np.ndarray:
    """frames x height x width x 3 uint8, frame t filled with the value 10 t (to tell the frames apart)."""
    return np.stack([np.full((height, width, 3), 10 * t, np.uint8) for t in range(frames)])


# -- reading clips ---------------------------------------------------------------------------------
def test_spaced_frames_include_both_ends_and_repeat_when_short():
    assert spaced(6, 4) == [0, 2, 3, 5]
    assert spaced(2, 4) == [0, 0, 1, 1]
    assert spaced(9, 1) == [0]


def test_npy_folder_and_still_give_the_spaced_frames(tmp_path):
    volume = _volume()
    np.save(tmp_path / "clip.npy", volume)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(6):  # named so that a plain sort would put f10 before f2
        Image.fromarray(volume[t]).save(folder / f"f{[0, 1, 2, 10, 11, 12][t]}.png")
    for source in (tmp_path / "clip.npy", folder, volume):
        clip = read_clip(source, 4)
        assert [int(np.asarray(f)[0, 0, 0]) for f in clip.frames] == [0, 20, 30, 50]
        assert clip.size == (12, 10)
    assert probe_clip(folder) == 6
    Image.fromarray(volume[3]).save(tmp_path / "still.png")
    still = read_clip(tmp_path / "still.png", 3)
    assert len(still.frames) == 3 and all(int(np.asarray(f)[0, 0, 0]) == 30 for f in still.frames)


def test_video_file_is_decoded_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        for t in range(10):
            frame = np.full((16, 32, 3), 20 * t, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert probe_clip(path) == 10
    clip = read_clip(path, 4)
    assert clip.size == (32, 16)
    brightness = [float(np.asarray(f).mean()) for f in clip.frames]  # frames 0, 3, 6, 9: 0, 60, 120, 180
    assert brightness == pytest.approx([0, 60, 120, 180], abs=6)


def test_bad_clips_fail_in_one_line(tmp_path):
    with pytest.raises(ImageError, match="no such file or folder"):
        read_clip(tmp_path / "missing.mp4", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="is a directory holding no image file"):
        probe_clip(tmp_path / "empty")
    np.save(tmp_path / "flat.npy", np.zeros((4, 5)))
    with pytest.raises(ImageError, match=r"expected a T x H x W x 3 or T x H x W volume, got shape \(4, 5\)"):
        probe_clip(tmp_path / "flat.npy")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    pytest.importorskip("av")
    with pytest.raises(ImageError, match="broken.mp4: not a readable video"):
        probe_clip(tmp_path / "broken.mp4")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (4, 4)).save(mixed / "a.png")
    Image.new("RGB", (5, 4)).save(mixed / "b.png")
    with pytest.raises(ImageError, match="frames differ in size"):
        read_clip(mixed, 2)


def test_an_image_network_refuses_a_clip_and_a_video_network_takes_stills(tmp_path):
    np.save(tmp_path / "clip.npy", _volume())
    image_model = convscope.load_model(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                                       input_size=8)
    with pytest.raises(InputError, match="clip.npy: a clip .* takes images"):
        image_model.preprocess(str(tmp_path / "clip.npy"))
    model = _tiny()
    assert model.frames == 4 and model.dummy_input().shape == (1, 3, 4, 8, 8)
    x = model.preprocess([str(tmp_path / "clip.npy"), Image.new("RGB", (9, 9), (255, 0, 0))])
    assert x.shape == (2, 3, 4, 8, 8)
    expected = model.preprocessing.normalize(torch.tensor([1.0, 0, 0]).view(3, 1, 1, 1).expand(3, 4, 8, 8))
    torch.testing.assert_close(x[1], expected)
    assert model.layer("conv").shape == (4, 4, 8, 8)


def test_a_conv3d_module_takes_sixteen_frames_unless_told():
    model = convscope.load_model(TinyVideoNet().eval(), input_size=8)
    assert model.frames == 16 and model.dummy_input().shape == (1, 3, 16, 8, 8)


# -- maps over T x H x W, by hand ----------------------------------------------------------------
def test_gradcam_of_a_video_network_by_hand():
    model = _tiny()
    x = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    result = compute_cam(model, x, [0, 2], "relu", "gradcam")
    net = model.module
    with torch.no_grad():
        acts = torch.relu(net.conv(x))  # B x 4 x 4 x 8 x 8
    # Y_c = W_c . mean(A): dY_c/dA_k = W_ck / (T H W) everywhere, so w_k = W_ck / (T H W)
    weights = net.fc.weight[[0, 2]].detach() / (4 * 8 * 8)
    expected = torch.relu((weights[:, :, None, None, None] * acts).sum(dim=1))
    torch.testing.assert_close(result.low_res, expected, atol=1e-6, rtol=1e-5)
    assert result.maps.shape == (2, 4, 8, 8)  # at the input's T x H x W already: only normalized
    torch.testing.assert_close(result.maps, upsample(expected, (4, 8, 8)), atol=1e-6, rtol=0)


def test_a_coarser_layer_is_upsampled_trilinearly():
    net = nn.Sequential(nn.Conv3d(3, 2, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(2, 2))
    torch.manual_seed(3)
    model = convscope.load_model(net.eval(), input_size=8, frames=4)
    x = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    result = compute_cam(model, x, 1, "1", "layercam")
    assert result.low_res.shape == (1, 2, 4, 4)
    resized = F.interpolate(result.low_res[:, None], size=(4, 8, 8), mode="trilinear", align_corners=False)[:, 0]
    low, high = resized.amin(), resized.amax()
    torch.testing.assert_close(result.maps, (resized - low) / (high - low), atol=1e-6, rtol=0)


def test_the_user_model_is_left_as_it_was():
    model = _tiny()
    net = model.module
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    compute_cam(model, torch.randn(1, 3, 4, 8, 8), None, None, "gradcam++")
    assert not net._forward_hooks and all(not m._forward_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(p, before[name]) for name, p in net.named_parameters())


# -- against pytorch-grad-cam's 3-D path ---------------------------------------------------------------------
PEERS = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "layercam": "LayerCAM", "fem": "FEM"}


@pytest.fixture(scope="module")
def r3d():
    return convscope.load_model("torchvision:r3d_18", "random")


@pytest.mark.parametrize("method", list(PEERS))
def test_r3d_18_maps_equal_pytorch_grad_cams_3d_path(r3d, method, monkeypatch):
    """pytorch-grad-cam upsamples a 3-D map with scipy's cubic spline zoom (corner-aligned);
    convscope trilinearly, as it upsamples an image's map bilinearly: the maps are compared at the
    layer's t x h x w, where both are ReLU'd and min-max normalized (the peer normalizes twice, with
    an eps of 1e-7 each time, which leaves its maximum at 1 - 1e-14 / max^2)."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    scale = base_cam.scale_cam_image
    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: scale(cam, None))
    x = torch.randn(2, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0))
    ours = compute_cam(r3d, x, [5, 300], None, method)
    assert ours.layer == "layer4" and ours.maps.shape == (2, 16, 112, 112)
    net = r3d.module
    with getattr(pytorch_grad_cam, PEERS[method])(model=net, target_layers=[net.layer4]) as extractor:
        theirs = extractor(input_tensor=x.clone(), targets=[ClassifierOutputTarget(5), ClassifierOutputTarget(300)])
    net.zero_grad(set_to_none=True)
    theirs = torch.from_numpy(np.asarray(theirs, dtype=np.float32))
    assert theirs.shape == ours.low_res.shape == (2, 2, 7, 7)
    scaled = minmax(ours.low_res)
    assert float(scaled.max()) > 0
    torch.testing.assert_close(scaled, theirs, atol=1e-4, rtol=0)


# -- the command line ------------------------------------------------------------------------------------
def test_cam_and_activations_of_a_clip_from_the_command_line(tmp_path, r3d, capsys, monkeypatch):
    from convscope.cli import commands
    from convscope.cli.main import main

    monkeypatch.setattr(commands.models, "load_model", lambda *args, **kwargs: r3d)
    np.save(tmp_path / "clip.npy", (np.random.default_rng(0).random((20, 40, 48, 3)) * 255).astype(np.uint8))
    assert main(["cam", str(tmp_path / "clip.npy"), "--model", "torchvision:r3d_18", "--weights", "random",
                 "--class", "7", "--out", str(tmp_path / "out")]) == 0
    assert "Grad-CAM on layer layer4: 1 maps" in capsys.readouterr().out
    cam = tmp_path / "out" / "cam"
    with Image.open(cam / "clip_7_cam.webp") as animation:
        assert animation.n_frames == 16 and animation.size == (48, 40)
    with Image.open(cam / "clip_7_cam.jpg") as strip:  # 8 of the 16 frames, 112 px high
        assert strip.height == 112 and strip.width == 8 * round(48 * 112 / 40) + 7 * 2
    assert (cam / "clip_7_heatmap.png").exists()
    assert main(["activations", str(tmp_path / "clip.npy"), "--model", "torchvision:r3d_18", "--weights", "random",
                 "--layers", "layer1", "--out", str(tmp_path / "out")]) == 0
    grids = sorted(p.name for p in (tmp_path / "out" / "activations").iterdir())
    assert grids == ["layer1.png"] + [f"layer1_t{t:02d}.png" for t in range(16)]


def test_a_clip_given_to_an_image_model_is_one_line(tmp_path, capsys):
    from convscope.cli.main import main

    np.save(tmp_path / "clip.npy", _volume())
    assert main(["predict", str(tmp_path / "clip.npy"), "--weights", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "clip.npy: a clip (video, frame folder or volume)" in err


def test_clip_is_a_value():
    frames = (Image.new("RGB", (4, 3)),) * 2
    clip = Clip(frames, "x")
    assert clip.map(lambda f: f.resize((2, 2))).size == (2, 2)


# -- pixel attributions, metrics, "why this class" and the report on clips ---------------------------------
def test_occlusion_of_a_clip_covers_the_square_in_every_frame():
    """A network whose score is the sum of channel 0 of frame 1: occluding a square to the black
    baseline drops the score by exactly the square's values there, in frame 1 only."""
    class FrameSum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(3, 1, 1, bias=False)

        def forward(self, x):
            return torch.stack([self.conv(x)[:, 0, 1].sum(dim=(1, 2)), torch.zeros(len(x))], dim=1)

    net = FrameSum().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1, 1))
    model = convscope.load_model(net, input_size=4, frames=3, mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.rand(1, 3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    result = convscope.attribute(model, x, 0, "occlusion", window=2, stride=2)
    # each pixel lies in one 2 x 2 square; the square's drop is the sum of channel 0 of frame 1 inside it
    squares = x[0, 0, 1].unfold(0, 2, 2).unfold(1, 2, 2).sum(dim=(2, 3))
    expected = squares.repeat_interleave(2, 0).repeat_interleave(2, 1)
    # the square covers every frame and every channel alike: each value gets its square's drop
    torch.testing.assert_close(result.attributions[0], expected.expand(3, 3, 4, 4))


def test_deletion_of_a_clip_removes_voxels_in_the_maps_order():
    from convscope.techniques.metrics import curve_inputs

    x = torch.ones(1, 2, 2, 2)  # C x T x H x W
    heat = torch.tensor([[[0.1, 0.9], [0.5, 0.2]], [[0.8, 0.0], [0.3, 0.7]]])
    steps = curve_inputs(x, heat, x, torch.zeros_like(x), 4)  # 2 voxels a step, highest first
    removed = [(s[0] == 0).nonzero().tolist() for s in steps]
    assert removed[1] == [[0, 0, 1], [1, 0, 0]]  # 0.9 and 0.8
    assert {tuple(v) for v in removed[2]} == {(0, 0, 1), (1, 0, 0), (1, 1, 1), (0, 1, 0)}  # then 0.7, 0.5
    assert len(removed[4]) == 8


def test_why_this_class_of_a_clip_peaks_at_a_frame_row_and_column():
    model = _tiny()
    x = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    (explanation,) = convscope.explain(model, x, 1, "relu", top=2)
    net = model.module
    with torch.no_grad():
        acts = torch.relu(net.conv(x))[0]
    # dY/dA_k = W_1k / (T H W): contribution_k = W_1k mean(A_k)
    expected = net.fc.weight[1].detach() * acts.mean(dim=(1, 2, 3))
    torch.testing.assert_close(explanation.contributions, expected, atol=1e-6, rtol=1e-5)
    top = explanation.supporting[0]
    direction = 1.0 if top.contribution >= 0 else -1.0
    where = int(torch.argmax(direction * (net.fc.weight[1, top.index] * acts[top.index]).flatten()))
    assert top.peak == tuple(int(i) for i in np.unravel_index(where, (4, 8, 8)))


def test_the_report_of_a_clip(tmp_path):
    from convscope.presentation.run import html_report

    np.save(tmp_path / "clip.npy", (np.random.default_rng(1).random((6, 12, 16, 3)) * 255).astype(np.uint8))
    index = html_report(_tiny(), [str(tmp_path / "clip.npy")], tmp_path / "out", filters_steps=2,
                        filters_count=2, trust_methods="gradcam,saliency", sanity_seeds=1)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "activations").glob("conv*")) == ["conv.png"] + [
        f"conv_t{t:02d}.png" for t in range(4)]
    with Image.open(out / "images" / "clip.webp") as clip:
        assert clip.n_frames == 4
    page = index.read_text(encoding="utf-8")
    assert 'class="frame"' in page and "activations/conv_t03.png" in page
    assert list((out / "cam").glob("clip_*_cam.webp")) and list((out / "attribute").glob("*_overlay.webp"))
    assert (out / "evaluate" / "metrics.json").exists() and list((out / "explain").glob("clip_*.png"))
    with Image.open(next((out / "filters").glob("conv.png"))) as grid:
        assert grid.width > 0


def test_a_dataset_of_clips(tmp_path):
    from convscope.dataset import load
    from convscope.dataset.pipeline import run

    source = tmp_path / "clips"
    (source / "sub").mkdir(parents=True)
    np.save(source / "a.npy", _volume(5, 12, 16))
    np.save(source / "sub" / "b.npy", _volume(7, 10, 10))
    (source / "sub" / "photo.jpg").write_bytes(b"")  # an image is not a clip: not read
    np.save(source / "bad.npy", np.zeros((3, 4)))
    model = _tiny()
    folder = run(model, source, tmp_path / "out", metrics=["deletion"], steps=4)
    table = load(folder).to_pylist()
    assert [Path(row["path"]).name for row in table] == ["a.npy", "bad.npy", "b.npy"]
    assert "expected a T x H x W x 3 or T x H x W volume" in table[1]["error"]
    good = table[0]
    assert good["cam_shape"] == [4, 8, 8] and (good["width"], good["height"]) == (16, 12)
    x = model.preprocess(str(source / "a.npy"))
    expected = compute_cam(model, x, None, None, "gradcam")
    torch.testing.assert_close(torch.tensor(good["cam"]).view(4, 8, 8), expected.low_res[0])
    assert good["deletion"] is not None
    assert sorted(p.name for p in (folder / "thumbs").iterdir()) == ["000000.jpg", "000002.jpg"]
    with pytest.raises(InputError, match="examples: TinyVideoNet takes clips"):
        run(model, source, tmp_path / "out2", examples="default")


def test_the_notebook_displays_clips():
    model = _tiny()
    x = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    assert convscope.cam(model, x, 0)._repr_png_().startswith(b"\x89PNG")
    assert convscope.attribute(model, x, 0)._repr_png_().startswith(b"\x89PNG")
    assert "frame 1 of 4" in convscope.activations(model, x, "conv")._repr_html_()
    assert "<img" in convscope.evaluate(model, x, 0, "relu", "gradcam", metrics="deletion", steps=2)._repr_html_()
    assert "<img" in convscope.explain(model, x, 0, "relu", top=1, filters_steps=1)._repr_html_()


def test_a_video_transformer_is_refused_in_one_line():
    import torchvision.models as tvm

    torch.manual_seed(0)
    with pytest.raises(InputError, match="^model: SwinTransformer3d is a video transformer"):
        convscope.load_model(tvm.video.swin3d_t(weights=None).eval(), input_size=32, frames=4).layers()
