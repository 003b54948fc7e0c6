"""What a dataset run reads: the images of a source (a folder, searched recursively; a glob; or a
text file listing paths) and their true classes (class sub-folders, ImageFolder-style, or a labels
file in CSV or JSON), matched to the model's classes by index or label, case-insensitive."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..clips import VIDEO_SUFFIXES
from ..errors import InputError
from ..model import Model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: What a video network's dataset run reads: video files and ``.npy`` volumes (a clip each).
CLIP_SUFFIXES = (*VIDEO_SUFFIXES, ".npy")


def folder_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The images in ``folder`` and below (by their suffix: ``suffixes``), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def find_images(source: str | os.PathLike, clips: bool = False) -> tuple[list[Path], Path | None]:
    """The images of ``source`` (a folder, searched recursively; a glob; one image file; or a text
    file listing paths, one per line, relative to the file), sorted, and the folder they come from (None for a
    glob or a list); with ``clips``, a video network's clips instead (:data:`CLIP_SUFFIXES`).
    InputError when there is nothing to read."""
    suffixes = CLIP_SUFFIXES if clips else IMAGE_SUFFIXES
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        images = folder_images(path, suffixes)
        root: Path | None = path
    elif path.is_file() and path.suffix.lower() in suffixes:  # one image (or clip)
        images, root = [path], None
    elif path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        images = sorted({(path.parent / line) if not Path(line).is_absolute() else Path(line)
                         for line in lines if line and not line.startswith("#")})
        root = None
    elif any(ch in text for ch in "*?["):
        images = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in suffixes)
        root = None
    else:
        raise InputError(f"source {text}: no such folder, file or glob", parameter="source")
    if not images:
        what = "clips" if clips else "images"
        raise InputError(f"source {text}: holds no {what} ({', '.join(suffixes[:5])}, ...)", parameter="source")
    return images, root


def folder_labels(model: Model, images: Sequence[Path], root: Path | None) -> list[int | None] | None:
    """True classes from class sub-folders (ImageFolder layout): every image one folder below
    ``root`` or deeper, each top folder named by a class index or label (case-insensitive). None
    when the layout is not that."""
    if root is None or any(len(p.relative_to(root).parts) < 2 for p in images):
        return None
    names = sorted({p.relative_to(root).parts[0] for p in images})
    matched = _match_classes(model, names)
    if matched is None:
        return None
    return [matched[p.relative_to(root).parts[0]] for p in images]


def _match_classes(model: Model, names: Sequence[str], strict: bool = False) -> dict[str, int] | None:
    """Class names (indices or labels, case-insensitive) -> indices; None (or, ``strict``, an
    InputError listing a few) when some do not match."""
    lowered = {label.lower(): index for index, label in enumerate(model.labels)}
    found, unmatched = {}, []
    for name in names:
        key = str(name).strip()
        if key.isdigit() and int(key) < len(model.labels):
            found[name] = int(key)
        elif key.lower() in lowered:
            found[name] = lowered[key.lower()]
        else:
            unmatched.append(name)
    if unmatched:
        if strict:
            shown = ", ".join(repr(n) for n in unmatched[:4]) + (", ..." if len(unmatched) > 4 else "")
            raise InputError(f"labels: {len(unmatched)} class names match no class of the model: {shown}",
                             parameter="labels")
        return None
    return found


def file_labels(model: Model, images: Sequence[Path], path: str | os.PathLike) -> list[int | None]:
    """True classes from a labels file: CSV (image path, class index or label) or JSON
    (``{image path: class}``); paths relative to the file or as given in the source."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            pairs = json.loads(text)
            if not isinstance(pairs, dict):
                raise ValueError("expected {image path: class}")
            pairs = list(pairs.items())
        else:
            pairs = [(row[0], row[1]) for row in csv.reader(io.StringIO(text)) if len(row) >= 2]
    except FileNotFoundError:
        raise InputError(f"labels {path}: no such file", parameter="labels") from None
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"labels {path}: cannot be read as CSV or JSON ({exc})", parameter="labels") from None
    classes = _match_classes(model, sorted({str(c) for _, c in pairs}), strict=True)
    by_path: dict[str, int] = {}
    for name, cls in pairs:
        for key in (os.path.normpath(path.parent / name), os.path.normpath(name)):
            by_path[key] = classes[str(cls)]
    return [by_path.get(os.path.normpath(p)) for p in images]
