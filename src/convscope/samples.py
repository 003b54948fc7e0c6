"""Sample photos that ship inside installed packages (nothing is downloaded).

``chelsea`` (a cat) and ``coffee`` come from scikit-image's ``skimage.data``; ``grace_hopper``
from matplotlib's sample data. On the command line they are named ``sample:chelsea`` and so on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .catalog import SAMPLES
from .errors import InputError

#: The samples the demo uses.
DEMO_SAMPLES = ("chelsea", "coffee")


def sample_array(name: str) -> np.ndarray:
    """The sample photo ``name`` as an H x W x 3 uint8 RGB array."""
    if name in ("chelsea", "coffee"):
        try:
            from skimage import data
        except ImportError:
            raise InputError(f"sample {name!r} comes from scikit-image, which is not installed "
                             "(pip install scikit-image)") from None
        return np.asarray(getattr(data, name)())
    if name == "grace_hopper":
        with Image.open(_grace_hopper_path()) as image:
            return np.asarray(image.convert("RGB"))
    raise InputError(f"unknown sample {name!r}; choose from {', '.join(SAMPLES)}")


def _grace_hopper_path() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
