"""Drawing: tensors into pictures (PIL images and PNG bytes) -- normalization, colormaps, tile grids,
overlays and heatmaps. Nothing here computes a technique or writes a file.

Normalization of a feature map (as the classic Keras tutorial draws activations): standardize,
``z = (a - mean) / std``, then ``pixel = clip(64 z + 128, 0, 255)``. With ``normalize="channel"``
mean and std are each channel's own; with ``"layer"`` they are the whole layer's, so tiles can be
compared. A channel with zero spread (constant) is drawn flat at the bottom of the colormap.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFilter

from ..catalog import NORMALIZATIONS
from ..errors import InputError, check_at_least, check_between, check_choice
from ..techniques.cams import upsample
from ..techniques.examples import ReceptiveField

#: Standard deviations are scaled by this and centred at 128 (the Keras tutorial's mapping).
Z_SCALE = 64.0
#: Tiles of small feature maps are enlarged by a whole factor to be at least this many pixels.
MIN_TILE = 28
BACKGROUND = (255, 255, 255)
#: Layout of filter pictures: columns per row and the margin around each picture, in pixels.
PICTURE_COLUMNS = 8
PICTURE_MARGIN = 4
#: The longer side of a dataset report's thumbnails.
THUMB = 128
#: A dataset example's crop: its side, the gap between crops in a grid, the outline of the unit's
#: own cell, and the gray where a receptive field runs past the image's edge.
CROP = 64
CROP_GAP = 2
CROP_MARK = (255, 214, 0)
CROP_BACKGROUND = (128, 128, 128)


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """The matplotlib colormap ``name`` as a 256 x 3 uint8 lookup table (InputError if unknown)."""
    try:
        cmap = colormaps[name]
    except KeyError:
        known = ", ".join(n for n in ("viridis", "gray", "magma", "inferno", "plasma", "jet", "turbo"))
        raise InputError(f"cmap: unknown colormap {name!r} (any matplotlib colormap, e.g. {known})",
                         parameter="cmap") from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)


def normalize_to_uint8(maps: torch.Tensor | np.ndarray, normalize: str = "channel") -> np.ndarray:
    """C x H x W values -> C x H x W uint8 by ``clip(64 (a - mean) / std + 128, 0, 255)``.

    Statistics per channel (``"channel"``) or over the whole layer (``"layer"``). A constant channel
    (or layer) maps to 0 everywhere: flat, never NaN.
    """
    check_choice("normalize", normalize, NORMALIZATIONS)
    a = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float32)
    if a.ndim != 3:
        raise InputError(f"maps: expected a C x H x W feature map, got shape {tuple(a.shape)}", parameter="maps")
    a = a.astype(np.float64, copy=False)
    axes = (1, 2) if normalize == "channel" else (0, 1, 2)
    mean = a.mean(axis=axes, keepdims=True)
    std = a.std(axis=axes, keepdims=True)
    flat = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    z = (a - mean) / np.where(flat, 1.0, std)
    pixels = np.clip(z * Z_SCALE + 128.0, 0.0, 255.0)
    pixels = np.where(flat, 0.0, pixels)
    return pixels.round().astype(np.uint8)


def tile_scale(height: int, width: int, min_tile: int = MIN_TILE) -> int:
    """Whole-number enlargement so that a tile is at least ``min_tile`` pixels on its longer side."""
    return max(1, -(-min_tile // max(height, width)))


def grid_layout(count: int, per_row: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` tiles with at most ``per_row`` per row."""
    columns = max(1, min(per_row, count))
    return -(-count // columns), columns


def grid_geometry(height: int, width: int) -> tuple[int, int]:
    """(scale, separator width) used for tiles of a height x width feature map."""
    scale = tile_scale(height, width)
    separator = 1 if max(height, width) * scale < 64 else 2
    return scale, separator


def render_grid(maps: torch.Tensor | np.ndarray, per_row: int = 16, normalize: str = "channel",
                cmap: str = "viridis") -> Image.Image:
    """One layer's feature maps (C x H x W) as a colour-mapped RGB grid, ``per_row`` tiles per row.

    Tiles keep the map's own resolution, enlarged by a whole factor with nearest neighbour when
    small (no blurring), separated by thin white lines, in channel order. A layer whose maps are
    1x1 (one value per channel, e.g. after global pooling) is drawn as one strip of its values
    instead, normalized over the whole layer (see :func:`value_strip`).
    """
    check_at_least("per_row", per_row, 1)
    if tuple(maps.shape[1:]) == (1, 1):
        return value_strip(maps, cmap)
    return _pixel_grid(normalize_to_uint8(maps, normalize), per_row, cmap)


def render_frame_grids(maps: torch.Tensor | np.ndarray, per_row: int = 16, normalize: str = "channel",
                       cmap: str = "viridis") -> list[Image.Image]:
    """A video network's feature maps (C x T x H x W) as one :func:`render_grid` picture per frame,
    each channel normalized over all its frames (or the whole layer over all), so that the frames
    compare."""
    check_at_least("per_row", per_row, 1)
    channels, frames, height, width = maps.shape
    if (height, width) == (1, 1):
        return [value_strip(maps[:, t], cmap) for t in range(frames)]
    flat = normalize_to_uint8(maps.reshape(channels, frames * height, width), normalize)
    pixels = flat.reshape(channels, frames, height, width)
    return [_pixel_grid(pixels[:, t], per_row, cmap) for t in range(frames)]


def _pixel_grid(pixels: np.ndarray, per_row: int, cmap: str) -> Image.Image:
    """C x H x W uint8 pixels -> the colour-mapped grid of :func:`render_grid`."""
    count, height, width = pixels.shape
    scale, sep = grid_geometry(height, width)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    tile_h, tile_w = height * scale, width * scale
    rows, columns = grid_layout(count, per_row)
    lut = colormap_lut(cmap)
    canvas = np.empty((rows * tile_h + (rows - 1) * sep, columns * tile_w + (columns - 1) * sep, 3), np.uint8)
    canvas[...] = BACKGROUND
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = r * (tile_h + sep), c * (tile_w + sep)
        canvas[top:top + tile_h, left:left + tile_w] = lut[pixels[index]]
    return Image.fromarray(canvas, "RGB")


def value_strip(maps: torch.Tensor | np.ndarray, cmap: str = "viridis", height: int = MIN_TILE) -> Image.Image:
    """C x 1 x 1 values as one horizontal strip, channel 0 at the left: each value a column of
    ``max(1, 512 // C)`` pixels (at most ``height``), colour-mapped after normalizing over the layer."""
    pixels = normalize_to_uint8(maps, "layer")[:, 0, 0]
    cell = min(height, max(1, 512 // len(pixels)))
    row = colormap_lut(cmap)[np.repeat(pixels, cell)]
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (height, *row.shape))), "RGB")


def tile_box(index: int, maps_shape: tuple[int, int, int], per_row: int = 16) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixel box of tile ``index`` in :func:`render_grid`'s picture."""
    count, height, width = maps_shape
    scale, sep = grid_geometry(height, width)
    _, columns = grid_layout(count, per_row)
    r, c = divmod(index, columns)
    left, top = c * (width * scale + sep), r * (height * scale + sep)
    return left, top, left + width * scale, top + height * scale


def colorize(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Values in [0, 1] (H x W) -> H x W x 3 uint8 RGB through a matplotlib colormap."""
    indices = np.clip(np.rint(np.asarray(values, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[indices]


def overlay(photo: Image.Image, heat: np.ndarray, alpha: float = 0.4, cmap: str = "jet") -> Image.Image:
    """``(1 - alpha) * photo + alpha * cmap(heat)`` in RGB; ``heat`` in [0, 1] at the photo's size (H x W)."""
    check_between("alpha", alpha, 0, 1)
    rgb = np.asarray(photo.convert("RGB"), np.float32)
    if heat.shape != rgb.shape[:2]:
        raise InputError(f"heat: a map of shape {heat.shape} does not match the photo's {rgb.shape[:2]}",
                         parameter="heat")
    blended = (1.0 - alpha) * rgb + alpha * colorize(heat, cmap).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


def outlined(picture: Image.Image, region: np.ndarray, caption: str | None = None,
             colour: tuple[int, int, int] = (255, 255, 255), width: int = 2) -> Image.Image:
    """``picture`` with the outline of ``region`` (H x W, nonzero inside, at any size: resized to the
    picture, nearest) drawn in ``colour``: the pixels within ``width`` of the region's edge, inside;
    ``caption`` written on a dark label at the region's top left (a detection's class and box)."""
    inside = (np.asarray(region) > 0).astype(np.uint8) * 255
    mask = Image.fromarray(inside).resize(picture.size, Image.Resampling.NEAREST)
    inner = mask.filter(ImageFilter.MinFilter(2 * width + 1))
    edge = np.asarray(mask) > np.asarray(inner)
    rgb = np.array(picture.convert("RGB"))
    rgb[edge] = colour
    result = Image.fromarray(rgb, "RGB")
    rows, columns = np.nonzero(np.asarray(mask))
    if caption and len(rows):
        draw = ImageDraw.Draw(result)
        left, top, right, bottom = draw.textbbox((0, 0), caption)
        x, y = int(columns.min()), max(0, int(rows.min()) - (bottom - top) - 4)
        draw.rectangle((x, y, x + right - left + 4, y + bottom - top + 4), fill=(0, 0, 0))
        draw.text((x + 2 - left, y + 2 - top), caption, fill=colour)
    return result


def heatmap_png(low_res: np.ndarray, title: str, cmap: str = "jet") -> bytes:
    """A low-resolution map in [0, 1] drawn large with a colour bar (like ``matshow``), as PNG bytes."""
    figure = Figure(figsize=(5.2, 4.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    image = axes.matshow(np.asarray(low_res, np.float32), cmap=cmap, vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_title(title, fontsize=10, parse_math=False)
    axes.tick_params(labelsize=8)
    return _png_of(figure)


def confusion_png(counts: np.ndarray, rows: Sequence[str], columns: Sequence[str]) -> bytes:
    """A confusion matrix (``counts`` R x C: true classes ``rows``, predicted classes ``columns``)
    drawn with each row scaled to its images (the share predicted as each class), as PNG bytes."""
    counts = np.asarray(counts, np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(14.0, 3.0 + 0.22 * max(len(rows), len(columns)))
    figure = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    axes = figure.subplots()
    image = axes.matshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class's images")
    size = 8 if max(len(rows), len(columns)) <= 30 else 6
    axes.set_xticks(np.arange(len(columns)), [str(label) for label in columns], rotation=90, fontsize=size)
    axes.set_yticks(np.arange(len(rows)), [str(label) for label in rows], fontsize=size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    return _png_of(figure)


def picture_grid(images: torch.Tensor | np.ndarray, columns: int = PICTURE_COLUMNS, margin: int = PICTURE_MARGIN,
                 background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Pictures N x 3 x S x S (RGB in [0, 1]; N x 1 x S x S drawn gray) in a grid of ``columns``
    with ``margin`` px around each."""
    pictures = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if pictures.ndim != 4 or pictures.shape[1] not in (1, 3):
        raise InputError(f"images: expected pictures N x 3 x H x W (or N x 1 x H x W), got shape "
                         f"{tuple(pictures.shape)}", parameter="images")
    pictures = np.repeat(pictures, 3 // pictures.shape[1], axis=1)
    count, _, height, width = pictures.shape
    rows, cols = grid_layout(count, columns)
    canvas = np.empty((rows * (height + margin) + margin, cols * (width + margin) + margin, 3), np.uint8)
    canvas[...] = background
    pixels = np.clip(np.rint(pictures.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
    for index in range(count):
        r, c = divmod(index, cols)
        top, left = margin + r * (height + margin), margin + c * (width + margin)
        canvas[top:top + height, left:left + width] = pixels[index]
    return Image.fromarray(canvas, "RGB")


def kernel_patches(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """First-layer kernels (N x 3 x kh x kw) as pictures N x 3 x size x size: ``0.5 + 0.5 w / max|W|``
    (one scale for the whole layer, so zero is mid-gray and the strongest weight is black or full
    colour), enlarged without smoothing."""
    scaled = 0.5 + 0.5 * kernels.float() / kernels.abs().max().clamp(min=1e-12)
    return F.interpolate(scaled, size=(size, size), mode="nearest").clamp(0.0, 1.0)


#: MaCo's display of a transparency map (Horama's ``plot_maco``): clipped at this percentile of each
#: picture's map, then scaled to [0, 1].
TRANSPARENCY_PERCENTILE = 80


def transparent_grid(images: torch.Tensor, transparency: torch.Tensor, columns: int = PICTURE_COLUMNS) -> Image.Image:
    """The pictures (N x 3 x S x S) in a grid as :func:`picture_grid`, each with its transparency map
    (N x S x S, >= 0) as its alpha channel: clipped at its :data:`TRANSPARENCY_PERCENTILE`-th
    percentile and scaled to [0, 1] (MaCo's display: where the ascent pushed little shows through)."""
    flat = transparency.detach().float().flatten(1)
    ceiling = torch.quantile(flat, TRANSPARENCY_PERCENTILE / 100.0, dim=1).clamp(min=1e-12).view(-1, 1, 1)
    alpha = (transparency.float() / ceiling).clamp(max=1.0)[:, None].expand(-1, 3, -1, -1)
    rgb = picture_grid(images, columns)
    opacity = np.asarray(picture_grid(alpha, columns, background=(255, 255, 255)))[..., :1]
    return Image.fromarray(np.concatenate([np.asarray(rgb), opacity], axis=2), "RGBA")


def _png_of(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_png(curves: Sequence[tuple[str, Sequence[float] | None, Sequence[float] | None]], title: str) -> bytes:
    """Deletion and insertion curves side by side, one line per ``(label, deletion, insertion)``;
    x: the share of pixels changed, y: the class probability."""
    figure = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, kind, column in ((axes[0], "Deletion (lower is better)", 1), (axes[1], "Insertion (higher is better)", 2)):
        for entry in curves:
            values = entry[column]
            if values is not None:
                ax.plot(np.linspace(0, 1, len(values)), values, label=entry[0])
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("share of pixels changed, highest map values first")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("class probability")
    axes[1].legend(fontsize=8, loc="lower right")
    figure.suptitle(title, fontsize=10)
    return _png_of(figure)


def methods_png(photo: Image.Image, entries: Sequence[tuple[str, np.ndarray]], alpha: float = 0.4,
                width: int = 240) -> bytes:
    """Each ``(caption, map)`` as an overlay on ``photo`` (maps in [0, 1] at the photo's size), side by
    side in the given order, each ``width`` px wide with its caption above."""
    count = len(entries)
    height = width * photo.height / photo.width
    figure = Figure(figsize=(count * width / 100, height / 100 + 0.6), dpi=100, layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, count))
    for ax, (caption, heat) in zip(axes, entries):
        ax.imshow(np.asarray(overlay(photo, heat, alpha)))
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    return _png_of(figure)


def explanation_png(photo: Image.Image, cam: np.ndarray, title: str, summary: str,
                    rows: Sequence[tuple[str, Image.Image | None, np.ndarray, float, tuple[float, float],
                                         Image.Image | None]],
                    alpha: float = 0.4) -> bytes:
    """"Why this class" as one figure (PNG bytes): the photo and its Grad-CAM (``cam`` in [0, 1] at
    the photo's size) with ``title`` and ``summary``, then one row per channel ``(caption, filter
    picture or None, activation in [0, 1] at the photo's size, contribution, peak (x, y) in photo
    pixels, the picture the activation is drawn over or None for the photo: a clip's frame)``: the
    picture, the activation over the photo with its peak marked, and the contribution as a bar (blue
    for, red against; every bar on one scale)."""
    values = [row[3] for row in rows]
    low, high = min([0.0, *values]), max([0.0, *values])
    span = (high - low) or 1.0
    aspect = photo.height / photo.width
    row_height = max(1.25, 1.6 * aspect)
    figure = Figure(figsize=(10, 2.8 + row_height * len(rows)), dpi=100, layout="constrained")
    header, body = figure.subfigures(2, 1, height_ratios=[2.8, max(row_height * len(rows), 0.1)])
    axes = header.subplots(1, 3, width_ratios=[1, 1, 1.2])
    axes[0].imshow(np.asarray(photo.convert("RGB")))
    axes[0].set_title("photo", fontsize=9)
    axes[1].imshow(np.asarray(overlay(photo, cam, alpha)))
    axes[1].set_title("Grad-CAM", fontsize=9)
    axes[2].text(0, 0.95, f"{title}\n\n{summary}", va="top", ha="left", fontsize=9, wrap=True, parse_math=False)
    for ax in axes:
        ax.axis("off")
    if rows:
        grid = np.atleast_2d(body.subplots(len(rows), 3, width_ratios=[1, 1.4, 2.4]))
        for (caption, picture, heat, value, peak, under), (picture_ax, heat_ax, bar_ax) in zip(rows, grid):
            if picture is not None:
                picture_ax.imshow(np.asarray(picture.convert("RGB")))
            bar_ax.set_title(caption, fontsize=9, loc="left", parse_math=False)
            heat_ax.imshow(np.asarray(overlay(photo if under is None else under, heat, 0.55)))
            heat_ax.plot(*peak, marker="o", markersize=7, markerfacecolor="none", markeredgecolor="white",
                         markeredgewidth=1.5)
            for ax in (picture_ax, heat_ax):
                ax.axis("off")
            if picture_ax is grid[0][0]:
                picture_ax.set_title("filter picture", fontsize=8)
                heat_ax.set_title("activation (o: its peak)", fontsize=8)
            bar_ax.barh([0], [value], color="tab:blue" if value >= 0 else "tab:red", height=0.5)
            bar_ax.set_xlim(low - 0.05 * span, high + 0.35 * span)
            bar_ax.set_ylim(-0.6, 0.6)
            bar_ax.axvline(0, color="0.3", linewidth=0.8)
            bar_ax.text(max(value, 0) + 0.02 * span, 0, f"{value:+.3g}", va="center", fontsize=8)
            bar_ax.set_yticks([])
            bar_ax.tick_params(labelsize=7, labelbottom=bar_ax is grid[-1][2])
            for side in ("top", "right", "left"):
                bar_ax.spines[side].set_visible(False)
        grid[-1][2].set_xlabel("contribution to the class score (sum of gradient x activation)", fontsize=8)
    return _png_of(figure)


def map_over(photo: Image.Image, low_res: torch.Tensor, alpha: float = 0.4) -> Image.Image:
    """A low-resolution map upsampled to the photo (bilinear, min-max normalized) and laid over it."""
    return overlay(photo, resized_map(low_res, photo.height, photo.width), alpha)


def resized_map(low_res: torch.Tensor, height: int, width: int, frames: int | None = None) -> np.ndarray:
    """A map upsampled bilinearly to height x width and min-max normalized (:func:`upsample`), as NumPy;
    a video's t x h x w map trilinearly to ``frames`` x height x width."""
    size = (height, width) if low_res.dim() == 2 else (frames or low_res.shape[0], height, width)
    return upsample(low_res[None], size)[0].cpu().numpy()


#: The height of each frame in a frame strip (px).
STRIP_HEIGHT = 112
#: Frames a strip shows at most (evenly spaced over the clip).
STRIP_FRAMES = 8


def frame_strip(frames: Sequence[Image.Image], height: int = STRIP_HEIGHT, most: int = STRIP_FRAMES) -> Image.Image:
    """At most ``most`` of ``frames`` (evenly spaced, first and last included) side by side, each
    ``height`` px high."""
    count = len(frames)
    chosen = [frames[round(i * (count - 1) / (most - 1))] for i in range(most)] if count > most else list(frames)
    scaled = [frame.resize((max(1, round(frame.width * height / frame.height)), height), Image.BILINEAR)
              for frame in chosen]
    return side_by_side(scaled, gap=2)


def clip_overlays(frames: Sequence[Image.Image], low_res: torch.Tensor, alpha: float = 0.4) -> list[Image.Image]:
    """A video's map (t x h x w) upsampled trilinearly to the clip (T x H x W), each frame under its slice."""
    heat = resized_map(low_res, frames[0].height, frames[0].width, len(frames))
    return [overlay(frame, slice_, alpha) for frame, slice_ in zip(frames, heat)]


def frames_side_by_side(maps: np.ndarray) -> np.ndarray:
    """A video's t x h x w map as one h x (t w) picture, its frames left to right (an image's map as it is)."""
    maps = np.asarray(maps)
    return np.concatenate(list(maps), axis=1) if maps.ndim == 3 else maps


def thumbnail(photo: Image.Image, size: tuple[int, int] | None = None, longest: int = THUMB) -> Image.Image:
    """The photo within ``longest`` x ``longest`` pixels with the aspect ratio of ``size`` (width,
    height; default its own): a box reduction, then bilinear. A dataset run passes the model-sized
    picture it made anyway with the photo's size, a third of the work of shrinking the photo itself."""
    width, height = size or photo.size
    scale = longest / max(width, height)
    if scale >= 1 and size is None:
        return photo
    target = (max(1, round(width * min(scale, 1))), max(1, round(height * min(scale, 1))))
    return photo.resize(target, Image.BILINEAR, reducing_gap=2.0)


def receptive_field_crop(seen: Image.Image | None, field: ReceptiveField, row: int, column: int) -> Image.Image:
    """The unit's receptive field cut from the picture the model saw (the photo at the input size),
    shown at CROP x CROP -- every crop of a layer at one scale, the unit always at the centre, gray
    where the field runs past the image's edge -- with the unit's own cell outlined."""
    tile = Image.new("RGB", (CROP, CROP), CROP_BACKGROUND)
    if seen is None:
        return tile
    left, top, right, bottom = field.box(row, column)
    whole_left, whole_top, _, _ = field.box(row, column, clip=False)
    zoom = CROP / max(field.size)
    # the unclipped box fills the tile (centred when not square); the clipped part sits where it belongs
    origin = ((CROP - field.size[1] * zoom) / 2 - whole_left * zoom,
              (CROP - field.size[0] * zoom) / 2 - whole_top * zoom)
    at = (round(origin[0] + left * zoom), round(origin[1] + top * zoom))
    shown = (max(1, round((right - left) * zoom)), max(1, round((bottom - top) * zoom)))
    resample = Image.NEAREST if zoom >= 2 else Image.BILINEAR
    tile.paste(seen.crop((left, top, right, bottom)).resize(shown, resample, reducing_gap=2.0), at)
    cell = field.cell(row, column)
    ImageDraw.Draw(tile).rectangle((round(origin[0] + cell[0] * zoom), round(origin[1] + cell[1] * zoom),
                                    round(origin[0] + cell[2] * zoom) - 1, round(origin[1] + cell[3] * zoom) - 1),
                                   outline=CROP_MARK)
    return tile


def crop_grid(tiles: Sequence[Image.Image]) -> Image.Image:
    """Tiles in a near-square grid, row by row, best first."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    grid = Image.new("RGB", (columns * CROP + (columns - 1) * CROP_GAP, rows * CROP + (rows - 1) * CROP_GAP),
                     (255, 255, 255))
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * (CROP + CROP_GAP), (index // columns) * (CROP + CROP_GAP)))
    return grid


def png_bytes(image: Image.Image, width: int) -> bytes:
    """PNG bytes of ``image``, scaled down (nearest neighbour, so tiles stay crisp) to ``width``."""
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def photo_of_input(pixels: torch.Tensor) -> Image.Image:
    """Model input turned back into pixels (C x H x W in [0, 1]; one channel drawn gray) as a PIL photo."""
    rgb = pixels.expand(3, *pixels.shape[1:]).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Pictures side by side on white."""
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(image.height for image in images)), (255, 255, 255))
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width + gap
    return canvas


def filter_pictures(images: torch.Tensor) -> list[Image.Image]:
    """Each of N x C x S x S pictures in [0, 1] as a PIL image (8 bits; gray for one channel)."""
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return [Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture) for picture in pixels]


#: The diverging colormap of signed attributions: blue below zero, white at zero, red above.
DIVERGING = "RdBu_r"


def signed_scale(values: np.ndarray) -> np.ndarray:
    """A signed map scaled to [-1, 1] by its largest magnitude (zeros stay zeros; an all-zero map stays zero)."""
    values = np.asarray(values, np.float32)
    peak = float(np.abs(values).max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def diverging_png(values: np.ndarray, title: str) -> bytes:
    """A signed map drawn with zero at white (:data:`DIVERGING`, limits +-its largest magnitude) and a
    colour bar, as PNG bytes."""
    values = np.asarray(values, np.float32)
    peak = float(np.abs(values).max()) or 1.0
    figure = Figure(figsize=(5.2, 4.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values, cmap=DIVERGING, vmin=-peak, vmax=peak, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_title(title, fontsize=10, parse_math=False)
    axes.set_xticks([])
    axes.set_yticks([])
    return _png_of(figure)


def signed_overlay(photo: Image.Image, values: np.ndarray, alpha: float = 0.6, peak: float | None = None
                   ) -> Image.Image:
    """A signed map (H x W at the photo's size) over the photo: each pixel blended towards red
    (positive) or blue (negative) by ``alpha`` times its magnitude relative to the largest (or to
    ``peak``: a clip's frames share their clip's); where the map is zero the photo shows as it is."""
    check_between("alpha", alpha, 0, 1)
    rgb = np.asarray(photo.convert("RGB"), np.float32)
    scaled = signed_scale(values) if peak is None else np.clip(np.asarray(values, np.float32) / (peak or 1.0), -1, 1)
    if scaled.shape != rgb.shape[:2]:
        raise InputError(f"values: a map of shape {scaled.shape} does not match the photo's {rgb.shape[:2]}",
                         parameter="values")
    colours = colormap_lut(DIVERGING)[np.clip(np.rint((scaled + 1) * 127.5), 0, 255).astype(np.uint8)]
    weight = alpha * np.abs(scaled)[..., None]
    blended = (1.0 - weight) * rgb + weight * colours.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


def concept_overlay(photo: Image.Image, maps: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Concept maps (n x H x W in [0, 1], at the photo's size) over the photo: each pixel coloured by
    its strongest concept (matplotlib's ``tab10``, then ``tab20``), blended by ``alpha`` times that
    concept's value there."""
    check_between("alpha", alpha, 0, 1)
    rgb = np.asarray(photo.convert("RGB"), np.float32)
    maps = np.asarray(maps, np.float32)
    if maps.shape[1:] != rgb.shape[:2]:
        raise InputError(f"maps: shape {maps.shape[1:]} does not match the photo's {rgb.shape[:2]}",
                         parameter="maps")
    palette = concept_colours(len(maps))
    strongest = maps.argmax(axis=0)
    weight = alpha * maps.max(axis=0)[..., None]
    blended = (1.0 - weight) * rgb + weight * palette[strongest]
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


def concept_colours(count: int) -> np.ndarray:
    """``count`` distinct RGB colours (0-255, float): tab10, then tab20 beyond ten."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N)[:3] for i in range(count)], np.float32) * 255.0


def concepts_png(picture: Image.Image, names: Sequence[str], title: str) -> bytes:
    """The concept overlay with a legend of each concept's colour and name, as PNG bytes."""
    from matplotlib.patches import Patch

    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    axes = figure.subplots()
    axes.imshow(np.asarray(picture))
    axes.set_axis_off()
    axes.set_title(title, fontsize=10, parse_math=False)
    colours = concept_colours(len(names)) / 255.0
    axes.legend(handles=[Patch(color=colour, label=name) for colour, name in zip(colours, names)], fontsize=7,
                loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png_of(figure)
