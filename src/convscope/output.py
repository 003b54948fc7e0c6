"""Writing results: atomic files, safe file names, and an output folder that is checked first.

Every file is written to a temporary file in its own folder and then renamed over the target, so
an interrupted run never leaves a half-written image. Names derived from layer names or image
stems are sanitized so that no path can leave the output folder.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str, fallback: str = "layer") -> str:
    """A file-name-safe version of ``name``: runs of other characters become ``_``; no leading dots,
    never empty, at most 150 characters."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:150]
    return cleaned or fallback


def check_out_dir(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that ``path`` can be the output folder: not a file, and
    the nearest existing folder above it writable. InputError otherwise."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, not a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {existing} is not writable")
    return out


def prepare_out_dir(path: str | os.PathLike, *subdirs: str) -> Path:
    """Create the output folder (and ``subdirs`` inside it); a path that is a file or a folder that
    cannot be written raises InputError before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for sub in subdirs:
            target = out / sub
            if target.exists() and not target.is_dir():
                raise InputError(f"--out {out}: {target} exists and is not a folder")
            target.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create folder ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: folder is not writable")
    return out


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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


def save_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a NumPy array as ``.npy`` atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def save_json(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON (indented, UTF-8) atomically."""
    return write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
