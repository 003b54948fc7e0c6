"""The ``timm:`` model source (when timm is installed): any timm model by name, its pretrained
weights from the Hugging Face Hub -- offline at once, from the local cache only, when the hub cannot
be reached.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterator

from ..errors import InputError, WeightsError
from ..images import Preprocessing
from ..model import Model
from ..network import reachable
from .registry import build_seeded, load_file_weights, register_model

#: Where timm's pretrained weights come from.
HUGGING_FACE_HUB = ("huggingface.co", 443)


@register_model("timm:")
def _timm(name: str, spec: str) -> Model:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise InputError(f"timm:{name}: timm is not installed (pip install 'convscope[timm]')") from None
    if not timm.list_models(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown timm model {name!r}{hint}")
    if spec == "imagenet":
        try:
            with _hub_offline_unless_reachable():
                module = timm.create_model(name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise WeightsError(f"timm:{name}: pretrained weights cannot be loaded ({exc}); use weights=random "
                               "or weights=PATH", mentions=["weights"]) from None
    else:
        module = build_seeded(lambda: timm.create_model(name, pretrained=False))
        if spec != "random":
            load_file_weights(module, spec, f"timm:{name}")
    config = resolve_data_config({}, model=module)
    _, height, width = config["input_size"]
    preprocessing = Preprocessing((height, width), tuple(config["mean"]), tuple(config["std"]))
    return Model(module, name=f"timm:{name}", weights=spec, preprocessing=preprocessing)


@contextlib.contextmanager
def _hub_offline_unless_reachable() -> Iterator[None]:
    """Hugging Face Hub in offline mode (its local cache only) when the hub cannot be reached, so
    that uncached weights fail at once instead of after a minute of retries."""
    if reachable(*HUGGING_FACE_HUB, timeout=2.0):
        yield
        return
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant
