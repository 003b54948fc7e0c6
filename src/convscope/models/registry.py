"""The model registry: :data:`MODELS`, :func:`register_model` and :func:`load_model`, plus what every
model source's builder shares (seeded construction, file weights) and the wrapping of a user's module.

A builder takes ``(name, weights_spec)`` -- ``imagenet``, ``random`` or a path, already checked --
and returns a :class:`~convscope.model.Model`; the source modules (:mod:`.bundled`,
:mod:`.torchvision_source`, :mod:`.timm_source`) register theirs when :mod:`convscope.models` is imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..catalog import DEFAULT_MODEL, DEFAULT_WEIGHTS
from ..errors import InputError, WeightsError
from ..model import IMAGENET_MEAN, IMAGENET_STD, Model
from ..targets import TargetOptions
from .weights import NAMED_WEIGHTS, apply_state_dict, read_state_dict

#: Seed for ``random`` weights, so that an untrained model is the same every time.
RANDOM_SEED = 0

#: A builder takes (name, weights spec): the full name, or for a family the part after its prefix.
ModelBuilder = Callable[[str, str], Model]
#: Model names (``vgg19``) and family prefixes (``torchvision:``) -> builder; see :func:`register_model`.
MODELS: dict[str, ModelBuilder] = {}
#: A model file's builder: (path, preprocess, input size) -> Model.
FileBuilder = Callable[[str, "str | None", "int | tuple[int, int] | None"], Model]
#: Model file suffixes (``.keras``, ``.h5``) -> builder; see :func:`register_model_file`.
MODEL_FILES: dict[str, FileBuilder] = {}


def register_model_file(*suffixes: str) -> Callable[[FileBuilder], FileBuilder]:
    """Decorator: ``load_model("path/model<suffix>")`` builds with ``builder(path, preprocess, input_size)``."""
    def register(builder: FileBuilder) -> FileBuilder:
        for suffix in suffixes:
            MODEL_FILES[suffix] = builder
        return builder
    return register


#: Builders of models held in memory that are not plain torch modules (a ``keras.Model``): each a
#: (recognizes, build) pair; ``build(model, preprocess, input_size)`` -> Model.
ObjectBuilder = Callable[[Any, "str | None", "int | tuple[int, int] | None"], Model]
MODEL_OBJECTS: list[tuple[Callable[[Any], bool], ObjectBuilder]] = []


def register_model_object(recognizes: Callable[[Any], bool]) -> Callable[[ObjectBuilder], ObjectBuilder]:
    """Decorator: ``load_model(obj)`` builds with ``builder(obj, preprocess, input_size)`` where
    ``recognizes(obj)`` (checked before the plain-module wrapping)."""
    def register(builder: ObjectBuilder) -> ObjectBuilder:
        MODEL_OBJECTS.append((recognizes, builder))
        return builder
    return register


def model_file_suffix(name: str) -> str | None:
    """The registered suffix ``name`` ends with (a model file), or None."""
    lowered = name.lower()
    return next((suffix for suffix in MODEL_FILES if lowered.endswith(suffix)), None)


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: ``load_model(name, weights)`` builds with ``builder(name, weights_spec)``. A name
    ending in ``:`` registers a family: ``load_model("torchvision:resnet50")`` calls the
    ``torchvision:`` builder with ``("resnet50", weights_spec)``."""
    def register(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder
    return register


def build_seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with its random initialization seeded, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return factory()


def load_file_weights(module: nn.Module, spec: str, model_name: str) -> None:
    """Load the state dict at path ``spec`` into ``module`` (safe loading; WeightsError on a mismatch)."""
    apply_state_dict(module, read_state_dict(spec), spec, model_name)


def _check_weights_spec(weights: str | Path) -> str:
    spec = str(weights)
    if not spec:
        raise WeightsError("weights: empty (use imagenet, random or a path to a state dict)", parameter="weights")
    return spec


def load_model(name: str | nn.Module = DEFAULT_MODEL, weights: str | Path | None = None, *,
               device: str | torch.device | None = None, labels: Sequence[str] | None = None,
               input_size: int | tuple[int, int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD,
               output: int | str | Callable[[Any], torch.Tensor] | None = None,
               target: str | None = None, multilabel: bool = False,
               target_options: TargetOptions | None = None, frames: int | None = None,
               preprocess: str | None = None) -> Model:
    """Load a model by name, or wrap a ``torch.nn.Module``.

    ``weights``: ``imagenet`` (the default; pretrained, for torchvision models fetched into torch's
    cache where a network exists), ``random`` (untrained, seeded) or a path to a state dict
    (``.pth``/``.pt`` loaded with ``weights_only=True``, or ``.safetensors``).

    ``input_size`` (height, width) or one side: the size images are resized to (default: the
    model's own; 224 for a module). A ``torch.nn.Module`` keeps its own weights unless ``weights``
    is a path to load into it; ``labels``, ``mean`` and ``std`` describe its input and classes, and its mode,
    device and parameters are left as they are (a ``device`` other than the one it is on is an
    error: move it yourself). Named models are built in eval mode on ``device`` (default cpu).
    ``output`` picks the class scores from a module that returns a tuple, a list or a dict: an
    index, a key or a function of the output (Inception's aux logits, ``(logits, features)``, ...).
    ``target`` says what a map explains (:mod:`convscope.targets`; None: the one the output calls
    for, ``multilabel=True`` for a sigmoid classifier), ``target_options`` its settings.
    ``frames``: the clip length T of a video network (a module whose first convolution is a ``Conv3d``
    takes 16 unless told; a torchvision video model its own).

    ``name`` may be a model file -- Keras's ``.keras``/``.h5`` (or a ``keras.Model`` in memory), run
    on Keras's PyTorch backend, or ``.onnx`` -- ; ``preprocess`` (``caffe``, ``tf``, ``torch``,
    ``none``) says how its input is normalized (default: as Keras documents for a
    ``keras.applications`` name, else ``torch``).
    """
    model = _load(name, weights, device, labels, input_size, mean, std, output, frames, preprocess)
    if target is not None or multilabel or target_options is not None:
        model.use_target(target, target_options, multilabel)
    return model


def _load(name: str | nn.Module, weights: str | Path | None, device: str | torch.device | None,
          labels: Sequence[str] | None, input_size: int | tuple[int, int] | None, mean: Sequence[float],
          std: Sequence[float], output: int | str | Callable[[Any], torch.Tensor] | None,
          frames: int | None = None, preprocess: str | None = None) -> Model:
    for recognizes, build in MODEL_OBJECTS:
        if recognizes(name):
            return _finish(build(name, preprocess, input_size), device, labels,
                           output, frames)
    if preprocess is not None and not (isinstance(name, str) and model_file_suffix(name)):
        raise InputError("preprocess: applies to Keras models and ONNX files; give mean= and std= for others",
                         parameter="preprocess")
    if isinstance(name, str) and model_file_suffix(name) and name.strip() not in MODELS:
        if weights is not None and str(weights) != DEFAULT_WEIGHTS:
            raise InputError(f"weights {weights}: {name} holds its own weights", parameter="weights")
        model = MODEL_FILES[model_file_suffix(name)](name.strip(), preprocess,
                                                     input_size)
        return _finish(model, device, labels, output, frames)
    if isinstance(name, nn.Module):
        model = _wrap_module(name, weights, device, labels, 224 if input_size is None else input_size, mean, std,
                             frames)
        model.output = output
        if labels is not None:
            _check_labels(model, labels)
        return model
    spec = _check_weights_spec(DEFAULT_WEIGHTS if weights is None else weights)
    key = str(name).strip()
    prefix, colon, rest = key.partition(":")
    if key in MODELS and not key.endswith(":"):
        model = MODELS[key](key, spec)
    elif colon and rest and prefix + colon in MODELS:
        model = MODELS[prefix + colon](rest, spec)
    elif Path(key).exists():
        saved_model = Path(key).is_dir() and (Path(key) / "saved_model.pb").exists()
        what = ("is a TensorFlow SavedModel folder: export it to a .keras file (model.save('model.keras')) or to "
                "ONNX") if saved_model else f"is not a model file convscope opens ({', '.join(MODEL_FILES)})"
        raise InputError(f"model {key}: {what}", parameter="model")
    else:
        full_names = [known for known in MODELS if not known.endswith(":")]
        close = difflib.get_close_matches(key, full_names, n=2, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        choices = [name if not name.endswith(":") else f"{name}<name>" for name in MODELS]
        raise InputError(f"unknown model {key!r}: {hint}choose {', '.join(choices[:-1])} or {choices[-1]}")
    if input_size is not None:
        model.with_input_size(input_size)
    return _finish(model, device, labels, output, frames)


def _finish(model: Model, device: str | torch.device | None, labels: Sequence[str] | None,
            output: int | str | Callable[[Any], torch.Tensor] | None, frames: int | None) -> Model:
    """A built model with the caller's labels, output, clip length and device, in eval mode."""
    if labels is not None:
        model.labels = labels
    if output is not None:
        model.output = output
    if frames is not None:
        model = model.with_frames(frames)
    model.module.eval()
    model.module.to("cpu" if device is None else device)
    if labels is not None:
        _check_labels(model, labels)
    return model


def _check_labels(model: Model, labels: Sequence[str]) -> None:
    """One label per class score, checked when the model is loaded (one forward pass); a detector's
    labels name the classes of its boxes, whatever their number."""
    if model.target.finds_entries:
        return
    outputs = model.num_outputs
    if len(labels) != outputs:
        raise InputError(f"labels has {len(labels)} entries but the module outputs {outputs} class scores per image: "
                         "give one label per output", parameter="labels")


def _wrap_module(module: nn.Module, weights: str | Path | None, device: str | torch.device | None,
                 labels: Sequence[str] | None, input_size: int | tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], frames: int | None = None) -> Model:
    """A user's module as a Model: its own weights, mode and device kept, or file weights loaded into it."""
    model = Model(module, name=type(module).__name__, weights="custom", input_size=input_size,
                  mean=mean, std=std, labels=labels, frames=frames)
    wanted = None if device is None else torch.device(device)
    if wanted is not None:
        if wanted.type != model.device.type or wanted.index not in (None, model.device.index):
            raise InputError(f"device {str(wanted)!r}: your module is on {model.device}; convscope leaves "
                             f"it where it is: move it first (module.to({str(wanted)!r}))", parameter="device")
    if weights is not None:
        spec = _check_weights_spec(weights)
        if spec in NAMED_WEIGHTS:
            raise WeightsError(f"weights {spec} applies to named models only; pass a path to a state "
                               "dict to load into your module, or nothing to keep its weights", parameter="weights")
        load_file_weights(module, spec, model.name)
        model.weights = spec
    return model
