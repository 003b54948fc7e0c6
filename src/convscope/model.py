"""The :class:`Model` object: a torch module with its preprocessing, class labels and layer names;
and :func:`as_model` / :func:`as_input`, which every technique uses to accept a ``Model`` or a plain
``nn.Module``, and a tensor or images."""

from __future__ import annotations

import difflib
import warnings
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from PIL import Image
from torch import nn

from .clips import Clip, is_clip_source, read_clip
from .errors import ConvscopeWarning, InputError, check_at_least, check_between
from .hooks import evaluating
from .images import ImageSource, Preprocessing, as_list, describe, load_image
from .labels import imagenet_labels, numbered_labels
from .layers import LayerAlias, LayerInfo, discover_layers, select_layers, unknown_layer
from .precision import computing_in
from .targets import Prediction, Target, TargetOptions, describe_output, detected_target_name, make_target

#: Aspect-ratio distortion above which resizing the whole image gets a warning (4:1 for a square input).
MAX_SQUASH = 4.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Model:
    """A classification CNN as convscope sees it.

    ``module`` is any ``torch.nn.Module`` mapping a B x 3 x H x W batch to B x classes logits.
    ``preprocessing`` says how images become input (size, mean, std); ``labels`` names the classes
    (ImageNet's when the module has 1000 outputs and none are given); ``aliases`` adds friendly
    layer names (Keras names on VGG) and ``hidden`` module paths not listed by :meth:`layers`.
    ``output`` picks the class scores from a module that returns more than one tensor: an index (of
    a tuple or list), a key (of a dict) or a function of the output.

    ``target`` (:mod:`convscope.targets`) says what a map explains: a registered name (``class``,
    ``softmax``, ``rest``, ``multilabel``, ``segmentation``, ``embedding``, ``output``,
    ``detection``); None detects it from what the module returns (``multilabel`` for a sigmoid model's B x N scores when
    ``multilabel``); ``target_options`` its settings. :meth:`use_target` changes it later.

    A video network (its first convolution a ``Conv3d``, or ``frames`` given) takes clips: B x C x T x H
    x W with ``frames`` = T (default :data:`DEFAULT_FRAMES`), read by :mod:`convscope.clips`.
    ``channels_last``: the module's layers output B x H x W x C (a Keras model), seen as B x C x H x W;
    or the module paths of the layers that do (an ONNX graph's NHWC nodes).
    """

    def __init__(self, module: nn.Module, *, name: str = "custom", weights: str = "custom",
                 preprocessing: Preprocessing | None = None,
                 input_size: int | tuple[int, int] = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 labels: Sequence[str] | None = None,
                 aliases: Sequence[LayerAlias] = (), hidden: Sequence[str] = (),
                 output: int | str | Callable[[Any], torch.Tensor] | None = None,
                 target: str | None = None, multilabel: bool = False,
                 target_options: TargetOptions | None = None, frames: int | None = None,
                 channels_last: bool | Collection[str] = False) -> None:
        if not isinstance(module, nn.Module):
            raise InputError(f"module: expected a torch.nn.Module, got {type(module).__name__}",
                             parameter="module")
        if preprocessing is None:
            size = checked_input_size(input_size)
            if len(mean) != len(std) or len(mean) not in (1, 3):
                raise InputError(f"mean has {len(mean)} values and std {len(std)}: give 3 of each (RGB) or 1 "
                                 "(grayscale)", parameter="mean")
            preprocessing = Preprocessing(size, tuple(mean), tuple(std))
        if frames is not None or (preprocessing.frames is None and _takes_clips(module)):
            check_at_least("frames", DEFAULT_FRAMES if frames is None else frames, 1)
            preprocessing = replace(preprocessing, frames=int(DEFAULT_FRAMES if frames is None else frames))
        _check_input_channels(module, preprocessing.channels)
        self.module = module
        self.name = name
        self.weights = weights
        self.preprocessing = preprocessing
        self._labels = tuple(labels) if labels is not None else None
        self._num_outputs: int | None = None
        self.aliases = tuple(aliases)
        self.hidden = tuple(hidden)
        self.output = output
        self._all_layers: list[LayerInfo] | None = None
        self._target: Target | None = None
        self._target_name = target
        self.multilabel = multilabel
        self._target_options = target_options or TargetOptions()
        self._returns = ""  # what the module returns, in words (found with the target)
        self.channels_last = channels_last
        #: What convscope guessed when it loaded the model, in one line (a Keras model's preprocessing), or None.
        self.loading_note: str | None = None
        #: The module takes inputs of its own size only (a Keras model built for one input shape).
        self.fixed_input_size = False
        #: Module path -> (module, its inputs) -> its output before a fused activation (a Keras
        #: convolution's ``activation="relu"``): what filter pictures optimize there.
        self.preactivations: dict[str, Callable[[nn.Module, Any], torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"<convscope.Model {self.name} weights={self.weights} input={self.input_size}>"

    # -- basic facts ---------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.preprocessing.size

    @property
    def frames(self) -> int | None:
        """Frames per clip of a video network (T of its B x C x T x H x W input); None for images."""
        return self.preprocessing.frames

    def with_frames(self, frames: int) -> Model:
        """This video network taking clips of ``frames`` frames from now on (layers found again); returns it."""
        check_at_least("frames", frames, 1)
        if self.frames is None:
            raise InputError(f"frames: {self.name} takes images, not clips", parameter="frames")
        self.preprocessing = replace(self.preprocessing, frames=int(frames))
        self._all_layers = None
        return self

    def with_input_size(self, input_size: int | tuple[int, int]) -> Model:
        """This model taking inputs of ``input_size`` ((height, width), or one side of a square) from
        now on: images are resized to it and layers found again; returns it."""
        self.preprocessing = replace(self.preprocessing, size=checked_input_size(input_size))
        self._all_layers = None
        return self

    @property
    def device(self) -> torch.device:
        for tensor in self.module.parameters():
            return tensor.device
        for tensor in self.module.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.module.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    @property
    def labels(self) -> tuple[str, ...]:
        """The names of the target's scores: the class names in index order (ImageNet's for 1000
        outputs, ``class N`` otherwise, unless given), or the target's own (``similarity to ...``)."""
        if self._labels is None and not self.target.finds_entries:  # a detector's labels name its boxes
            outputs = self.num_outputs
            self._labels = imagenet_labels() if outputs == 1000 else numbered_labels(outputs)
        return self.target.labels(self._labels or ())

    @property
    def class_labels(self) -> tuple[str, ...]:
        """The names of the classes the module knows: :attr:`labels`, except for a detector, whose
        labels name its boxes: its categories (which the boxes' labels index; empty when not given)."""
        if self.target.finds_entries:
            return tuple(self._labels or ())
        return self.labels

    @labels.setter
    def labels(self, labels: Sequence[str]) -> None:
        self._labels = tuple(labels)

    @property
    def num_outputs(self) -> int:
        """Target scores per image (found with the target: one forward pass on the first use)."""
        self.target  # noqa: B018 -- finding the target counts its scores
        return self._num_outputs

    @property
    def num_classes(self) -> int:
        """How many classes the model names: one per label."""
        return len(self.labels)

    # -- what a map explains -------------------------------------------------------------------
    @property
    def target(self) -> Target:
        """What a map explains (see :mod:`convscope.targets`): the target given, or the one the
        module's output calls for (found with one forward pass on the first use)."""
        if self._target is None:
            self.use_target(self._target_name, self._target_options, self.multilabel)
        return self._target

    def use_target(self, name: str | None = None, options: TargetOptions | None = None,
                   multilabel: bool = False) -> Model:
        """This model explaining the target ``name`` with ``options`` from now on (None: the one its
        output calls for, ``multilabel`` for a sigmoid model), checked against what the module
        returns; returns the model."""
        output = self._plain_output(self.dummy_input())
        options = options or TargetOptions()
        name = name or detected_target_name(output, multilabel, options.reference is not None)
        if name is None:
            self.class_scores(output)  # the error that says how to pick the scores
        self.multilabel, self._returns = multilabel, describe_output(output)
        self._adopt(make_target(name, output, options), output)
        return self

    def _adopt(self, target: Target, output: Any) -> None:
        """Explain ``target`` from now on, its score count taken from ``output`` (one it was checked against)."""
        self._target, self._target_options = target, target.options
        self._num_outputs = int(target.scores(output).shape[-1])

    def resolve(self) -> Model:
        """Find the target and the labels now (one forward pass on a dummy batch, the first time only),
        so that no hidden forward pass runs later while a technique's hooks are live."""
        self.labels  # noqa: B018 -- resolving is the point
        return self

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The module's output tensor for the model input ``x`` (B x ..., fp32), in eval mode without
        gradients: an embedding model's embeddings."""
        return self.class_scores(self._plain_output(x)).float()

    def _plain_output(self, x: torch.Tensor) -> Any:
        """:meth:`raw_output` for ``x`` moved to the model's device and dtype, in eval mode without
        gradients, in fp32 (the module's mode is restored)."""
        with evaluating(self.module), torch.no_grad(), computing_in(self.device, "fp32"):
            return self.raw_output(x.to(device=self.device, dtype=self.dtype))

    def describe_target(self) -> str:
        """One line: the target, what it explains and what the module returns."""
        return self.target.describe(self._returns)

    def raw_output(self, x: torch.Tensor) -> Any:
        """The module's output for the model input ``x``, or the part of it that ``output`` picks."""
        output = self.module(x)
        if self.output is None:
            return output
        try:
            return self.output(output) if callable(self.output) else output[self.output]
        except (KeyError, IndexError, TypeError) as exc:
            raise InputError(f"output {self.output!r} does not pick the class scores from the module's "
                             f"{describe_output(output)} ({type(exc).__name__}: {exc})",
                             parameter="output") from None

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The target's scores for the model input ``x`` (B x N), with gradients and modes as the
        caller has them."""
        return self.target.scores(self.raw_output(x))

    def scores_for(self, x: torch.Tensor, classes: Sequence[int] | None) -> tuple[torch.Tensor, list[int]]:
        """The target's scores for ``x`` and each row's entry to explain: ``classes``, or where None
        the target's first choice for each image (a classifier's top-1)."""
        output = self.raw_output(x)
        scores = self.target.scores(output)
        return scores, (self.target.first_choice(output, self.labels) if classes is None else list(classes))

    def regions(self, x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor | None:
        """Each row's region (B x H x W, 1 inside) where the target is about one (segmentation: the
        pixels of row b assigned to ``classes[b]``, or the fixed region; detection: the box), else None."""
        return self.target.regions(self._plain_output(x), classes, tuple(x.shape[2:]))

    def measure(self, x: torch.Tensor) -> torch.Tensor:
        """What the metrics follow for ``x`` (B x N): a class's softmax probability for the class
        targets, a multilabel model's sigmoid, the target's scores otherwise."""
        return self.target.measure(self.raw_output(x))

    @staticmethod
    def class_scores(output: Any) -> torch.Tensor:
        """``output`` as one tensor of scores; else an InputError saying how to pick them."""
        if isinstance(output, torch.Tensor):
            return output
        example = "'logits'" if isinstance(output, Mapping) else "0"
        raise InputError(f"output: the module returns {describe_output(output)}, not one tensor of class scores; "
                         f"say which part holds them: load_model(module, output={example}) (an index, a key or "
                         "a function)", parameter="output")

    def dummy_input(self, batch: int = 1) -> torch.Tensor:
        """A zero input batch of the model's size, device and dtype (a video network's with its frames)."""
        frames = () if self.frames is None else (self.frames,)
        return torch.zeros(batch, self.preprocessing.channels, *frames, *self.input_size, device=self.device,
                           dtype=self.dtype)

    # -- images --------------------------------------------------------------------------------
    def preprocess(self, images: ImageSource | Sequence[ImageSource], crop: bool = False,
                   names: Sequence[str] | None = None) -> torch.Tensor:
        """Paths, PIL images or arrays (one or many) -> float tensor B x 3 x H x W on the model's device.

        The whole image is resized to the input size (no crop) unless ``crop`` is true (resize the
        short side, then centre crop); an image squashed by more than :data:`MAX_SQUASH` (wider than
        4:1 for a square input) gets a :class:`~convscope.errors.ConvscopeWarning` naming it (by its
        entry in ``names`` when given). Raises
        :class:`~convscope.errors.ImageError` for bad images.
        """
        sources = [images] if isinstance(images, Clip) else as_list(images)
        if not sources:
            raise InputError("images: no images given", parameter="images")
        pictures = self.pictures(sources, names)
        if self.frames is not None:
            tensors = [self.preprocessing.clip_tensor(clip.frames, crop=crop) for clip in pictures]
            return torch.stack(tensors).to(device=self.device, dtype=self.dtype)
        for name, picture in zip(names or [describe(source) for source in sources], pictures):
            if not crop and self.preprocessing.squash(picture) > MAX_SQUASH:
                warnings.warn(f"{name}: {picture.width}x{picture.height} is squashed to "
                              f"{self.input_size[1]}x{self.input_size[0]} (the whole image is kept; crop the "
                              "centre with --crop or crop=True)", ConvscopeWarning, stacklevel=2)
        tensors = [self.preprocessing.to_tensor(picture, crop=crop) for picture in pictures]
        return torch.stack(tensors).to(device=self.device, dtype=self.dtype)

    def pictures(self, sources: Sequence[ImageSource | Clip], names: Sequence[str] | None = None
                 ) -> list[Image.Image | Clip]:
        """What the model takes of each source: a video network's clips, read with its frames (an image
        is a still clip), or an image network's images (a clip refused with one line naming it)."""
        if self.frames is not None:
            return [read_clip(source, self.frames) for source in sources]
        for name, source in zip(names or [describe(source) for source in sources], sources):
            if is_clip_source(source):
                raise InputError(f"{name}: a clip (video, frame folder or volume), but {self.name} takes images; "
                                 "a video network (torchvision:r3d_18, any Conv3d network) takes clips")
        return [load_image(source) for source in sources]

    # -- layers --------------------------------------------------------------------------------
    def all_layers(self) -> list[LayerInfo]:
        """Every layer name, listed or not, in network order (discovered once, then cached)."""
        if self._all_layers is None:
            dummy = self.dummy_input()
            try:
                self._all_layers = discover_layers(self.module, dummy, self.aliases, self.hidden, self.channels_last)
            except RuntimeError as exc:
                reason = " ".join(str(exc).split())[:200]
                raise InputError(f"input_size: the module fails on an input of {'x'.join(map(str, dummy.shape))} "
                                 f"({reason}); if it takes another size, give it: load_model(module, "
                                 "input_size=(height, width))", parameter="input_size") from exc
        return self._all_layers

    def layers(self) -> list[LayerInfo]:
        """The listed layers in network order: name, type, output shape for one image."""
        return [layer for layer in self.all_layers() if layer.listed]

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers()]

    def layer(self, name: str) -> LayerInfo:
        """The layer called ``name``; an unknown name raises LayerError suggesting the closest names."""
        layers = self.all_layers()
        for layer in layers:
            if layer.name == name:
                return layer
        listed_first = sorted(layers, key=lambda layer: not layer.listed)
        raise unknown_layer(name, [layer.name for layer in listed_first])

    def submodule(self, name: str) -> nn.Module:
        """The module whose output the layer name denotes."""
        return self.module.get_submodule(self.layer(name).module)

    def select_layers(self, spec: str | Sequence[str], kind: str | None = None) -> list[str]:
        """Names, comma lists, glob patterns or ``all`` -> layer names in network order (patterns and
        ``all`` keep only layers of ``kind``, e.g. ``conv``, when given)."""
        return select_layers(spec, self.all_layers(), kind)

    # -- predictions ---------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The target's scores (a classifier's class scores before softmax), in eval mode without
        gradients (the module's mode is restored)."""
        with torch.no_grad():
            return self.target.scores(self._plain_output(x)).float()

    def predict(self, x: torch.Tensor, top: int = 5, batch_size: int = 16) -> list[list[Prediction]]:
        """Each image's ``top`` candidates as the target ranks them (a classifier's most probable
        classes), best first, the target's default ones marked ``chosen``. A detector's target takes
        the boxes found here as the ones it explains (their indices are the "classes" of its maps)."""
        outputs = [self._plain_output(x[start:start + batch_size]) for start in range(0, x.shape[0], batch_size)]
        found = self.target.found_in(outputs)
        if found is not None:  # checked against these outputs: no other forward pass
            self._adopt(make_target(self.target.name, outputs[0], found), outputs[0])
            if not found.detections:
                raise InputError(f"score_threshold: the detector finds no box above {found.score_threshold} in "
                                 "any image; lower it to see weaker boxes", parameter="score_threshold")
            top = min(top, len(self.labels))
        labels = self.labels
        check_between("top", top, 1, len(labels))
        results = []
        for output in outputs:
            with torch.no_grad():
                scores = self.target.scores(output)
            if scores.dim() != 2 or scores.shape[-1] != len(labels):
                raise InputError(f"the model outputs {tuple(scores.shape[1:])} per image but has {len(labels)} "
                                 "class labels; give one label per output")
            results.extend(self.target.predictions(output, labels, top))
        return results

    def shown(self, wanted: int) -> int:
        """How many predictions to ask :meth:`predict` for: ``wanted``, cut to the labels there are
        (not for a detector, whose boxes -- its labels -- are found by ``predict`` itself)."""
        return wanted if self.target.finds_entries else min(wanted, len(self.labels))

    def class_index(self, value: int | str) -> int:
        """A class given as an index or a label (exact, then case-insensitive) -> its index."""
        labels = self.labels
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            index = int(value)
            if not 0 <= index < len(labels):
                raise InputError(f"class index {index} is out of range (0..{len(labels) - 1})")
            return index
        if value in labels:
            return labels.index(value)
        lowered = [label.lower() for label in labels]
        if value.lower() in lowered:
            return lowered.index(value.lower())
        close = difflib.get_close_matches(value, labels, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(f"unknown class label {value!r}{hint}")


#: Frames per clip a video network takes unless told (torchvision's video models are trained on 16).
DEFAULT_FRAMES = 16


def checked_input_size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """``input_size`` as (height, width): one int is a square; anything but two positive ints is an
    InputError naming ``input_size``."""
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"input_size must be a positive int or (height, width), got {input_size!r}",
                         parameter="input_size")
    return int(size[0]), int(size[1])


def _takes_clips(module: nn.Module) -> bool:
    """Whether the module's first convolution is 3-D (a video network, or one for volumes)."""
    first = next((m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return isinstance(first, nn.Conv3d)


def _check_input_channels(module: nn.Module, channels: int) -> None:
    """InputError when the module's first convolution takes another number of input channels."""
    first = next((m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if first is not None and first.in_channels != channels:
        fix = "mean=(m,), std=(s,)" if first.in_channels == 1 else "three values each for mean and std"
        raise InputError(f"mean: {channels} value(s) for {channels} input channel(s), but the module's first "
                         f"convolution takes {first.in_channels}: give {fix}", parameter="mean")


#: The layers of plain modules already wrapped, per module and input size: wrapping a module discovers
#: its layers with a forward pass, which a second call on the same module need not repeat. Only the
#: layer facts are kept (they hold no reference to the module), so the module can still be freed.
_DISCOVERED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], list[LayerInfo]]] = \
    weakref.WeakKeyDictionary()


def as_model(model: Model | nn.Module, x: torch.Tensor | object = None) -> Model:
    """A :class:`Model` as it is, or a plain module wrapped with ImageNet normalization and ImageNet
    or numbered labels. The wrapper's input size is the size of the tensor ``x`` (so a network that
    only accepts its own size works), 224 x 224 when ``x`` is not a tensor; the layers are discovered
    once per module and size."""
    if isinstance(model, Model):
        return model
    if not isinstance(model, nn.Module):
        raise InputError(f"model: expected a convscope Model or a torch.nn.Module, got {type(model).__name__}",
                         parameter="model")
    size = (int(x.shape[-2]), int(x.shape[-1])) if isinstance(x, torch.Tensor) and x.dim() >= 2 else (224, 224)
    frames = int(x.shape[-3]) if isinstance(x, torch.Tensor) and x.dim() == 5 else None
    wrapper = Model(model, name=type(model).__name__, input_size=size, frames=frames)
    size = (*size, wrapper.frames) if wrapper.frames is not None else size
    per_size = _DISCOVERED.setdefault(model, {})
    if size in per_size:
        wrapper._all_layers = per_size[size]
    else:
        per_size[size] = wrapper.all_layers()
    return wrapper


def as_input(model: Model, x: torch.Tensor | ImageSource | Sequence[ImageSource]) -> torch.Tensor:
    """A B x 3 x H x W tensor (a video network's B x 3 x T x H x W) as it is (moved to the model's
    device), or images (clips) preprocessed."""
    if isinstance(x, torch.Tensor):
        dims = 4 if model.frames is None else 5
        if x.dim() == dims - 1:
            x = x.unsqueeze(0)
        if x.dim() != dims:
            expected = "B x C x H x W" if model.frames is None else "B x C x T x H x W"
            raise InputError(f"x: expected an input of shape {expected}, got {tuple(x.shape)}", parameter="x")
        return x.to(device=model.device, dtype=model.dtype)
    return model.preprocess(x)


__all__ = ["Model", "Prediction", "IMAGENET_MEAN", "IMAGENET_STD", "as_model", "as_input"]
