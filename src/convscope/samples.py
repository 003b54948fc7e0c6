"""Sample photos that ship inside installed packages (nothing is downloaded).

``chelsea`` (a cat) and ``coffee`` come from scikit-image's ``skimage.data``; ``grace_hopper``
from matplotlib's sample data. :func:`sample_path` writes a sample as a PNG/JPEG file into a
folder the caller chooses, so commands can treat it like any other image file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError

SAMPLES = ("chelsea", "coffee", "grace_hopper")
#: The samples the demo uses.
DEMO_SAMPLES = ("chelsea", "coffee")


def sample_array(name: str) -> np.ndarray:
    """The sample photo ``name`` as an H x W x 3 uint8 RGB array."""
    if name in ("chelsea", "coffee"):
        try:
            from skimage import data
        except ImportError:
            raise InputError(f"sample {name!r} comes from scikit-image, which is not installed "
                             "(pip install 'convscope[demo]')") from None
        return np.asarray(getattr(data, name)())
    if name == "grace_hopper":
        with Image.open(_grace_hopper_path()) as image:
            return np.asarray(image.convert("RGB"))
    raise InputError(f"unknown sample {name!r}; choose from {', '.join(SAMPLES)}")


def _grace_hopper_path() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def sample_path(name: str, folder: str | Path) -> Path:
    """Write sample ``name`` into ``folder`` (``<name>.png``, or the original JPEG for grace_hopper)
    and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if name == "grace_hopper":
        target = folder / "grace_hopper.jpg"
        shutil.copyfile(_grace_hopper_path(), target)
        return target
    target = folder / f"{name}.png"
    Image.fromarray(sample_array(name)).save(target)
    return target
