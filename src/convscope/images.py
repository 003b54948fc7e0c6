"""Reading images from paths, PIL images or arrays, and turning them into model input.

:func:`load_image` returns an RGB PIL image with its EXIF orientation applied, whatever the source
mode (grayscale, 16-bit, palette, CMYK, RGBA). Anything that cannot be read raises
:class:`~convscope.errors.ImageError` with one line naming the file and the reason.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]



def _silence_pillow() -> None:
    """Pillow's warnings (damaged metadata, a large image below the decompression-bomb error) are
    noise beside convscope's one-line errors: filtered process-wide, made sure of before each read
    (a caller's ``catch_warnings`` may have dropped the filters since). Never with
    ``warnings.catch_warnings`` here: photos are decoded in threads, and that context manager swaps
    the process's filter list, so two threads inside it at once can leave every warning ignored."""
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: What Pillow raises, besides its own errors, on corrupt input (found by fuzzing the loader).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct.error,
                 ZeroDivisionError, OverflowError, MemoryError, RecursionError)

#: Images with more pixels than this are refused from their header, before decoding
#: (Pillow's own decompression-bomb threshold, about 89 million pixels).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def describe(source: ImageSource) -> str:
    """A short name for an image source, used in messages and output file names."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return "<array>"


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{path}: empty file")
    _silence_pillow()
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image dimensions are too large (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a recognized image file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except DECODE_ERRORS as exc:
        raise ImageError(f"{path}: cannot read image ({_reason(exc)})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageError(f"{path}: image is {width}x{height} pixels, over the limit of {MAX_PIXELS} "
                         "pixels (decompression bomb?)")
    if width < 1 or height < 1:
        raise ImageError(f"{path}: image has no pixels ({width}x{height})")
    try:
        image.load()
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image dimensions are too large (decompression bomb?)") from None
    except DECODE_ERRORS as exc:
        reason = _reason(exc)
        if "truncated" in reason or isinstance(exc, EOFError):
            raise ImageError(f"{path}: truncated or corrupt image ({reason})") from None
        raise ImageError(f"{path}: corrupt image ({reason})") from None
    return image


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """HxW or HxWxC (C in 1, 3, 4) arrays: uint8 as is, uint16 over 65535, floats in [0, 1]."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"<array>: expected an HxW or HxWx3/4 image array, got shape {tuple(a.shape)}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"<array>: image has no pixels (shape {tuple(a.shape)})")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.float32) / 65535.0 * 255.0).round().astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError("<array>: image array contains NaN or infinite values")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"<array>: unsupported image array dtype {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; high bit depths are scaled, alpha is composited on white."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "F":
            top = 1.0 if values.size and values.max() <= 1.0 else 255.0
        else:
            top = 65535.0 if values.size and values.max() > 255 else 255.0
        gray = (np.clip(values / top, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def load_image(source: ImageSource) -> Image.Image:
    """Read one image as 8-bit RGB with its EXIF orientation applied.

    ``source`` is a path, a PIL image or an array (HxW or HxWxC, uint8, uint16 or floats in [0, 1]).
    Raises :class:`ImageError` (one line: the file and the reason) if it cannot be read. Pillow's
    warnings about damaged metadata are silenced: the error line is the only thing said.
    """
    _silence_pillow()
    return _load_image(source)


def _load_image(source: ImageSource) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        image = _open_path(path)
        name = os.fspath(path)
    elif isinstance(source, Image.Image):
        image = source
        name = describe(source)
    elif isinstance(source, np.ndarray):
        return _to_rgb(_array_to_pil(source))
    else:
        raise ImageError(f"{source!r}: not an image (expected a path, a PIL image or an array)")
    try:
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)
    except DECODE_ERRORS as exc:
        raise ImageError(f"{name}: corrupt image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: RGB in [0, 1] (or gray, for one mean and std) resized to ``size``
    (H, W), then ``(x - mean) / std``; a video network's ``frames`` (T) of each clip stacked along the
    time axis (input B x C x T x H x W; None: an image network's B x C x H x W)."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frames: int | None = None

    def centre_crop(self, image: Image.Image) -> Image.Image:
        """The largest centred box of ``image`` with the model's aspect ratio."""
        height, width = self.size
        box_w = max(1, min(image.width, round(image.height * width / height)))
        box_h = max(1, min(image.height, round(image.width * height / width)))
        left = (image.width - box_w) // 2
        top = (image.height - box_h) // 2
        return image.crop((left, top, left + box_w, top + box_h))

    def squash(self, image: Image.Image) -> float:
        """How much resizing the whole image to the input size distorts it: the ratio of the image's
        aspect ratio to the model's, 1 or more (2.0: one side shrinks twice as much as the other)."""
        height, width = self.size
        ratio = (image.width / image.height) / (width / height)
        return max(ratio, 1 / ratio)

    @property
    def channels(self) -> int:
        """Input channels: 3 (RGB), or 1 for a grayscale model (one mean and one std)."""
        return len(self.mean)

    def to_tensor(self, image: Image.Image, crop: bool = False) -> torch.Tensor:
        """One RGB image -> normalized C x H x W float32 tensor (C = :attr:`channels`; a grayscale
        model gets the image's luminance). The whole image is kept (resized, not cropped) unless
        ``crop`` asks for the centred box of the model's aspect ratio."""
        return self.from_resized(self.resized(image, crop))

    def resized(self, image: Image.Image, crop: bool = False) -> Image.Image:
        """The image as the model sees it before normalization: at the input size, in the model's
        colours (RGB, or luminance for a grayscale model)."""
        height, width = self.size
        if crop:
            image = self.centre_crop(image)
        if self.channels == 1:
            image = image.convert("L")
        return image.resize((width, height), Image.BILINEAR)

    def from_resized(self, resized: Image.Image) -> torch.Tensor:
        """:meth:`resized`'s picture -> the normalized C x H x W float32 tensor (one frame of a clip too)."""
        height, width = self.size
        pixels = np.asarray(resized, dtype=np.float32).reshape(height, width, -1) / 255.0
        return self.normalize(torch.from_numpy(pixels).permute(2, 0, 1), clip=False)

    def clip_tensor(self, frames: Sequence[Image.Image], crop: bool = False) -> torch.Tensor:
        """A clip's frames -> the normalized C x T x H x W float32 tensor (each frame as :meth:`to_tensor`)."""
        return torch.stack([self.from_resized(self.resized(frame, crop)) for frame in frames], dim=1)

    def _statistics(self, like: torch.Tensor, clip: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.frames is not None if clip is None else clip
        shape = (self.channels, 1, 1, 1) if clip else (self.channels, 1, 1)
        return (torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape))

    def normalize(self, rgb: torch.Tensor, clip: bool | None = None) -> torch.Tensor:
        """Pixels in [0, 1] (..., C, H, W; a video network's (..., C, T, H, W) unless ``clip`` is
        False) -> model input."""
        mean, std = self._statistics(rgb, clip)
        return (rgb - mean) / std

    def denormalize(self, x: torch.Tensor, clip: bool | None = None) -> torch.Tensor:
        """Model input (..., C, H, W; a video network's (..., C, T, H, W) unless ``clip`` is False)
        -> pixels in [0, 1] (not clipped)."""
        mean, std = self._statistics(x, clip)
        return x * std + mean


def as_list(images: ImageSource | Sequence[ImageSource]) -> list[ImageSource]:
    """One image source or a sequence of them -> a list (a 2-D/3-D array counts as one image)."""
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    return list(images)
