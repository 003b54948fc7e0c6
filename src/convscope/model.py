"""The :class:`Model` object: a torch module with its preprocessing, class labels and layer names."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError
from .hooks import evaluating
from .images import ImageSource, Preprocessing, as_list, load_image
from .labels import imagenet_labels, numbered_labels
from .layers import LayerAlias, LayerInfo, discover_layers, select_layers, unknown_layer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Prediction:
    """One class of a prediction: index, label and softmax probability."""

    index: int
    label: str
    probability: float

    def as_json(self) -> dict:
        return {"index": self.index, "label": self.label, "probability": self.probability}


class Model:
    """A classification CNN as convscope sees it.

    ``module`` is any ``torch.nn.Module`` mapping a B x 3 x H x W batch to B x classes logits.
    ``preprocessing`` says how images become input (size, mean, std); ``labels`` names the classes
    (ImageNet's when the module has 1000 outputs and none are given); ``aliases`` adds friendly
    layer names (Keras names on VGG) and ``hidden`` module paths not listed by :meth:`layers`.
    """

    def __init__(self, module: nn.Module, *, name: str = "custom", weights: str = "custom",
                 preprocessing: Preprocessing | None = None,
                 input_size: int | tuple[int, int] = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 labels: Sequence[str] | None = None,
                 aliases: Sequence[LayerAlias] = (), hidden: Sequence[str] = ()) -> None:
        if not isinstance(module, nn.Module):
            raise InputError(f"expected a torch.nn.Module, got {type(module).__name__}")
        if preprocessing is None:
            size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            if len(size) != 2 or min(size) < 1:
                raise InputError(f"input_size must be a positive int or (height, width), got {input_size!r}")
            preprocessing = Preprocessing((int(size[0]), int(size[1])), tuple(mean), tuple(std))
        self.module = module
        self.name = name
        self.weights = weights
        self.preprocessing = preprocessing
        self._labels = tuple(labels) if labels is not None else None
        self.aliases = tuple(aliases)
        self.hidden = tuple(hidden)
        self._all_layers: list[LayerInfo] | None = None

    def __repr__(self) -> str:
        return f"<convscope.Model {self.name} weights={self.weights} input={self.input_size}>"

    # -- basic facts ---------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.preprocessing.size

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
        """Class names in index order."""
        if self._labels is None:
            classes = self.num_classes
            self._labels = imagenet_labels() if classes == 1000 else numbered_labels(classes)
        return self._labels

    @property
    def num_classes(self) -> int:
        if self._labels is not None:
            return len(self._labels)
        with evaluating(self.module), torch.no_grad():
            out = self.module(self.dummy_input())
        return int(out.shape[-1])

    def dummy_input(self, batch: int = 1) -> torch.Tensor:
        """A zero input batch of the model's size, device and dtype."""
        return torch.zeros(batch, 3, *self.input_size, device=self.device, dtype=self.dtype)

    # -- images --------------------------------------------------------------------------------
    def preprocess(self, images: ImageSource | Sequence[ImageSource], crop: bool = False) -> torch.Tensor:
        """Paths, PIL images or arrays (one or many) -> float tensor B x 3 x H x W on the model's device.

        The whole image is resized to the input size (no crop) unless ``crop`` is true (resize the
        short side, then centre crop). Raises :class:`~convscope.errors.ImageError` for bad images.
        """
        sources = as_list(images)
        if not sources:
            raise InputError("no images given")
        tensors = [self.preprocessing.to_tensor(load_image(src), crop=crop) for src in sources]
        return torch.stack(tensors).to(device=self.device, dtype=self.dtype)

    # -- layers --------------------------------------------------------------------------------
    def all_layers(self) -> list[LayerInfo]:
        """Every layer name, listed or not, in network order (discovered once, then cached)."""
        if self._all_layers is None:
            self._all_layers = discover_layers(self.module, self.dummy_input(), self.aliases, self.hidden)
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

    def select_layers(self, spec: str | Sequence[str]) -> list[str]:
        """Names, comma lists, glob patterns or ``all`` -> layer names in network order."""
        return select_layers(spec, self.all_layers())

    # -- predictions ---------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores before softmax, in eval mode without gradients (the module's mode is restored)."""
        with evaluating(self.module), torch.no_grad():
            return self.module(x.to(device=self.device, dtype=self.dtype)).float()

    def predict(self, x: torch.Tensor, top: int = 5, batch_size: int = 16) -> list[list[Prediction]]:
        """The ``top`` most probable classes of each image of the batch ``x``, best first."""
        classes = len(self.labels)
        if not 1 <= top <= classes:
            raise InputError(f"--top must be between 1 and {classes}, got {top}")
        results = []
        for start in range(0, x.shape[0], batch_size):
            logits = self.logits(x[start:start + batch_size])
            if logits.dim() != 2 or logits.shape[-1] != classes:
                raise InputError(f"the model outputs {tuple(logits.shape[1:])} per image but has {classes} "
                                 "class labels; give one label per output")
            probs = logits.softmax(dim=-1)
            values, indices = probs.topk(top, dim=-1)
            for row_values, row_indices in zip(values.tolist(), indices.tolist()):
                results.append([Prediction(i, self.labels[i], p) for i, p in zip(row_indices, row_values)])
        return results

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


__all__ = ["Model", "Prediction", "IMAGENET_MEAN", "IMAGENET_STD"]
