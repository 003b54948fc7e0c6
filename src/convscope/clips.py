"""Reading clips, the input of a video network (r3d_18, any Conv3d network): a video file (PyAV,
``pip install 'convscope[video]'``), a folder of frames, a ``.npy`` volume, or one image (a still).

:func:`read_clip` returns a :class:`Clip` of exactly the frames a model takes, evenly spaced over the
source (``round(i (n - 1) / (T - 1))`` for i = 0 .. T-1; a source with fewer frames repeats some).
:func:`probe_clip` checks a source and counts its frames without decoding it all. Anything that cannot
be read raises :class:`~convscope.errors.ImageError` with one line naming the source and the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError, InputError
from .images import DECODE_ERRORS, ImageSource, describe, load_image

#: File suffixes read as videos (by PyAV).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv")
#: File suffixes of the frames a folder holds.
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")


@dataclass(frozen=True)
class Clip:
    """A clip's frames as 8-bit RGB pictures of one size, in time order, and the source's name."""

    frames: tuple[Image.Image, ...]
    name: str

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size

    def map(self, change) -> Clip:
        """The clip with ``change`` applied to each frame (a centre crop, a resize)."""
        return Clip(tuple(change(frame) for frame in self.frames), self.name)


ClipSource = ImageSource


def is_clip_source(source: object) -> bool:
    """Whether ``source`` names a clip rather than one image: a video file, a folder, a ``.npy``
    file, a :class:`Clip` or a 4-D array (T x H x W x C)."""
    if isinstance(source, Clip):
        return True
    if isinstance(source, np.ndarray):
        return source.ndim == 4
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES + (".npy",)
    return False


def spaced(count: int, frames: int) -> list[int]:
    """``frames`` indices evenly spaced over ``count`` frames, first and last included."""
    if frames == 1:
        return [0]
    return [round(i * (count - 1) / (frames - 1)) for i in range(frames)]


def probe_clip(source: ClipSource) -> int:
    """How many frames the clip ``source`` has (an image: 1); ImageError if it cannot be read."""
    if isinstance(source, Clip):
        return len(source.frames)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return len(_volume(source, "<array>"))
    if not isinstance(source, (str, os.PathLike)):
        load_image(source)
        return 1
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    if path.is_dir():
        return len(_frame_files(path))
    if path.suffix.lower() == ".npy":
        return len(_volume(_load_npy(path), str(path)))
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_frame_count(path)
    load_image(path)
    return 1


def read_clip(source: ClipSource, frames: int) -> Clip:
    """``frames`` frames of ``source`` evenly spaced over it (see :func:`spaced`), as a :class:`Clip`:
    a video file (decoded by PyAV), a folder of images (sorted by name, numbers in order), a ``.npy``
    or array volume (T x H x W x 3 or T x H x W; uint8, or floats in [0, 1]), or one image (a still:
    the frame repeated)."""
    if isinstance(source, Clip):
        return Clip(tuple(source.frames[i] for i in spaced(len(source.frames), frames)), source.name)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        volume = _volume(source, "<array>")
        return Clip(tuple(load_image(volume[i]) for i in spaced(len(volume), frames)), "<array>")
    if not isinstance(source, (str, os.PathLike)):  # a PIL image or an image array: a still
        return Clip((load_image(source),) * frames, describe(source))
    path = Path(source)
    name = os.fspath(source)
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _frame_files(path)
        return Clip(tuple(_same_size([load_image(files[i]) for i in spaced(len(files), frames)], name)), name)
    if path.suffix.lower() == ".npy":
        volume = _volume(_load_npy(path), name)
        return Clip(tuple(load_image(volume[i]) for i in spaced(len(volume), frames)), name)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return Clip(tuple(_decode_video(path, frames)), name)
    still = load_image(path)
    return Clip((still,) * frames, name)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                   key=_natural_key)
    if not files:
        raise ImageError(f"{folder}: is a directory holding no image file ({', '.join(FRAME_SUFFIXES)}), so neither "
                         "an image nor a folder of frames")
    return files


def _same_size(pictures: Sequence[Image.Image], name: str) -> list[Image.Image]:
    sizes = {picture.size for picture in pictures}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
        raise ImageError(f"{name}: its frames differ in size ({shown}); a clip's frames share one size")
    return list(pictures)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())[:200]})") from None


def _volume(array: np.ndarray, name: str) -> np.ndarray:
    """A T x H x W (x 1, 3 or 4) volume, checked."""
    if array.ndim == 4 and array.shape[-1] in (1, 3, 4):
        volume = array
    elif array.ndim == 3:
        volume = array
    else:
        raise ImageError(f"{name}: expected a T x H x W x 3 or T x H x W volume, got shape {tuple(array.shape)}")
    if min(volume.shape[:3]) < 1:
        raise ImageError(f"{name}: the volume has no frames or no pixels (shape {tuple(array.shape)})")
    return volume


def _open_video(path: Path):
    try:
        import av
    except ImportError:
        raise InputError(f"{path}: reading a video file needs PyAV: pip install 'convscope[video]' (or give a "
                         "folder of frames or a .npy volume)") from None
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, *DECODE_ERRORS) as exc:
        raise ImageError(f"{path}: not a readable video ({' '.join(str(exc).split())[:200]})") from None


def _video_frame_count(path: Path) -> int:
    """The frames of the video's first video stream: from its header, else by counting its packets."""
    import av

    with _open_video(path) as container:
        if not container.streams.video:
            raise ImageError(f"{path}: holds no video stream")
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        try:
            count = sum(1 for packet in container.demux(stream) if packet.size)
        except (av.error.FFmpegError, *DECODE_ERRORS) as exc:
            raise ImageError(f"{path}: corrupt video ({' '.join(str(exc).split())[:200]})") from None
    if not count:
        raise ImageError(f"{path}: the video has no frames")
    return count


def _decode_video(path: Path, frames: int) -> list[Image.Image]:
    """The video's frames at the evenly spaced indices, decoded in one pass (only those kept)."""
    import av

    count = _video_frame_count(path)
    wanted = spaced(count, frames)
    kept: dict[int, Image.Image] = {}
    with _open_video(path) as container:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    kept[index] = frame.to_image().convert("RGB")
                if index >= wanted[-1]:
                    break
        except (av.error.FFmpegError, *DECODE_ERRORS) as exc:
            raise ImageError(f"{path}: corrupt video ({' '.join(str(exc).split())[:200]})") from None
    if not kept:
        raise ImageError(f"{path}: the video has no decodable frames")
    last = kept[max(kept)]  # a header that counts more frames than decode: the last one stands in
    return [kept.get(index, last) for index in wanted]
