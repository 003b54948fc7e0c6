"""Files: atomic writes, safe file names, and an output folder that is checked first.

Every file is written to a temporary file in its own folder and then renamed over the target, so
an interrupted run never leaves a half-written image. Names derived from layer names or image
stems are sanitized so that no path can leave the output folder.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str, fallback: str = "layer") -> str:
    """A file-name-safe version of ``name``: runs of other characters become ``_``; no leading dots,
    never empty, at most 150 characters."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:150]
    return cleaned or fallback


def check_out_dir(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that ``path`` can be the output folder: not a file, and
    the nearest existing folder above it writable. InputError naming ``out`` otherwise."""
    out = Path(path)
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "exists and is not a folder" if existing == out else f"{existing} is a file, not a folder"
        raise InputError(f"out {out}: {where}", parameter="out")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"out {out}: {existing} is not writable", parameter="out")
    return out


def prepare_out_dir(path: str | os.PathLike, *subdirs: str) -> Path:
    """Create the output folder (and ``subdirs`` inside it) after :func:`check_out_dir`; a sub-folder
    that is a file or a folder that cannot be created raises InputError before any work."""
    out = check_out_dir(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for sub in subdirs:
            target = out / sub
            if target.exists() and not target.is_dir():
                raise InputError(f"out {out}: {target} exists and is not a folder", parameter="out")
            target.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"out {out}: cannot create folder ({exc.strerror or exc})", parameter="out") from None
    return out


def distinct_safe_names(names: Sequence[str], fallback: str = "layer") -> list[str]:
    """Safe file stems for ``names``, in order, made distinct (also case-insensitively) by ``-2``, ``-3``..."""
    stems: list[str] = []
    used: set[str] = set()
    for name in names:
        stem = base = safe_name(name, fallback)
        counter = 2
        while stem.lower() in used:
            stem = f"{base}-{counter}"
            counter += 1
        used.add(stem.lower())
        stems.append(stem)
    return stems


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename): a file
    is complete or absent, never half-written. A full disk is an InputError naming the file (the
    temporary file removed, everything written before intact)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"out: no space left on the device while writing {path} ({exc.strerror}); "
                             "free some and run the command again: finished files are kept",
                             parameter="out") from None
        raise
    return path


def save_image(image: Image.Image, path: str | os.PathLike, **options: Any) -> Path:
    """Encode ``image`` in the format its suffix names (PNG fast compression by default) and write it atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    if fmt == "PNG":
        options.setdefault("compress_level", 1)
    image.save(buffer, fmt, **options)
    return write_bytes(path, buffer.getvalue())


#: How long each frame of an animation shows, in milliseconds (8 frames a second).
FRAME_MS = 125


def save_animation(frames: Sequence[Image.Image], path: str | os.PathLike, frame_ms: int = FRAME_MS) -> Path:
    """An animated WebP of ``frames`` (looping, ``frame_ms`` each, lossy quality 80), written atomically."""
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=list(frames[1:]), duration=frame_ms, loop=0,
                   quality=80, method=4)
    return write_bytes(path, buffer.getvalue())


def save_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a NumPy array as ``.npy`` atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def save_json(data: Any, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """Write JSON (UTF-8; indented unless ``indent=None``: compact, for large machine-read files) atomically."""
    separators = None if indent else (",", ":")
    text = json.dumps(data, indent=indent, separators=separators, ensure_ascii=False)
    return write_bytes(path, (text + "\n").encode("utf-8"))
