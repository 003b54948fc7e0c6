"""Results display themselves in a notebook, small, and are still the dict, tuple and tensor they were."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
from PIL import Image

import convscope
from convscope.techniques.cams import cam as plain_cam


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_activations_show_their_grids_as_thumbnails(tiny_model):
    x = torch.randn(2, 3, 16, 16)
    outputs = convscope.activations(tiny_model, x, "all")
    assert isinstance(outputs, dict) and list(outputs)[0] == "conv1" and outputs["conv1"].shape == (2, 4, 16, 16)
    html = outputs._repr_html_()
    pictures = [_image(base64.b64decode(data)) for data in re.findall(r'base64,([^"]+)"', html)]
    assert len(pictures) == len(outputs) == 7
    assert all(p.width <= convscope.presentation.notebook.NOTEBOOK_WIDTH for p in pictures)
    assert pictures[0].size == convscope.render_grid(outputs["conv1"][0]).size  # small already: not scaled
    many = convscope.Activations({f"l{i}": torch.zeros(1, 2, 4, 4) for i in range(20)})
    assert many._repr_html_().count("<img") == 12 and "and 8 more layers" in many._repr_html_()


def test_filters_show_their_pictures(tiny_model):
    result = convscope.filters(tiny_model, "conv1", 3, steps=2, size=16, precision="fp32")
    images, scores = result  # still the (images, scores) pair
    assert images.shape == (3, 3, 16, 16) and scores.shape == (3,) and result.images is images
    picture = _image(result._repr_png_())
    assert picture.size == convscope.picture_grid(images).size
    assert result._repr_html_() is None  # channels: the grid alone


def test_class_pictures_show_their_classes_and_diversity_a_row_per_unit(tiny_model):
    classes = convscope.filters(tiny_model, "logits", [1, 3], steps=2, size=16, precision="fp32")
    shown = classes._repr_html_()
    assert shown.count("<img") == 2
    assert [f"{tiny_model.labels[c]} (logit {s:.2f})" for c, s in zip([1, 3], classes.scores.tolist())] == \
        re.findall(r"<figcaption>(.*?)</figcaption>", shown)
    several = convscope.filters(tiny_model, "conv2", [0, 4], steps=2, size=16, precision="fp32", diversity=3)
    assert _image(several._repr_png_()).size == convscope.picture_grid(several.images, columns=3).size


def test_cam_maps_show_themselves_over_their_images(tiny_model):
    x = torch.randn(2, 3, 16, 16)
    maps = convscope.cam(tiny_model, x, [1, 2])
    assert isinstance(maps, torch.Tensor)
    torch.testing.assert_close(maps.as_subclass(torch.Tensor), plain_cam(tiny_model, x, [1, 2]))
    picture = np.asarray(_image(maps._repr_png_()).convert("RGB"))
    assert picture.shape == (16, 2 * 16 + 4, 3)  # the two overlays side by side
    rgb = tiny_model.preprocessing.denormalize(x)[1].clamp(0, 1)
    photo = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    expected = np.asarray(convscope.overlay(photo, maps[1].as_subclass(torch.Tensor).numpy()))
    np.testing.assert_array_equal(picture[:, 20:], expected)
    assert _image((maps * 2)._repr_png_()).size == (36, 16)  # derived tensors still draw (as heatmaps)


def test_attributions_show_themselves_over_their_images(tiny_model):
    from convscope.presentation.drawing import signed_overlay
    from convscope.techniques.attributions import attribute as plain_attribute

    x = torch.randn(2, 3, 16, 16)
    result = convscope.attribute(tiny_model, x, [1, 2], "inputxgradient")
    assert isinstance(result, convscope.AttributionResult) and result.classes == [1, 2]
    plain = plain_attribute(tiny_model, x, [1, 2], "inputxgradient")
    torch.testing.assert_close(result.attributions, plain.attributions)
    picture = np.asarray(_image(result._repr_png_()).convert("RGB"))
    assert picture.shape == (16, 2 * 16 + 4, 3)
    rgb = tiny_model.preprocessing.denormalize(x)[1].clamp(0, 1)
    photo = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    np.testing.assert_array_equal(picture[:, 20:], np.asarray(signed_overlay(photo, result.maps[1].numpy())))
