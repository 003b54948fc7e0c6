"""Targets: what a map explains -- the model's output turned into scores, one per thing to explain.

Every technique differentiates (or measures) one score per row: ``Y_n`` of the definitions. A
target reads whatever the module returns -- B x N class scores, a dict with ``out``, B x D
embeddings -- and gives B x N scores (differentiable); a row explains entry ``n`` of its image's
scores. The target also says which entries are worth explaining (its :meth:`Target.predictions`,
each image's candidates best first, the default ones ``chosen``), what the metrics of "which map to
trust" follow (:meth:`Target.measure`) and, in one line, what a map explains.

Built in (one registered class each, :func:`register_target`):

* ``class``: the logit of a class. ``softmax``: its probability. ``rest``: the logit minus the
  cross-entropy, ``y_c + log softmax(y)_c`` (ShapleyCAM's "ReST", pytorch-grad-cam's
  ``ClassifierOutputReST``). Predictions: softmax probabilities, the top one chosen.
* ``multilabel``: the logit of a class of a sigmoid model; predictions are sigmoid probabilities,
  every class above ``threshold`` chosen (no softmax anywhere).
* ``segmentation``: B x classes x H x W scores (or a dict with ``out``): class c's score is the sum
  of its logits over a region -- the pixels the model assigns to c (argmax over the classes,
  decided by the pass itself), or a fixed ``region`` mask (H x W, from a box or a mask file) --
  pytorch-grad-cam's ``SemanticSegmentationTarget``. Predictions: each class's share of the pixels,
  the largest class other than the background chosen.
* ``embedding``: B x D outputs; the cosine similarity to a ``reference`` embedding (one image's, or
  a folder's mean), pytorch-grad-cam's ``SimilarityToConceptTarget``.
* ``output``: one raw output (regression heads); predictions in index order, output 0 chosen.
* ``detection``: a list of dicts with ``boxes``, ``labels``, ``scores`` (torchvision's detectors): the
  boxes found above ``score_threshold`` by :meth:`convscope.Model.predict` are the entries; box k's
  score is that of the detection matching it (IoU above 0.5, the same label) plus the IoU, 0 when
  none matches (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .catalog import TARGET_THRESHOLD
from .errors import InputError, check_between
from .specs import parse_box

#: Labels that name a segmentation model's background class (never chosen by default).
BACKGROUND = ("__background__", "background")


@dataclass(frozen=True)
class Prediction:
    """One entry of an image's target scores, as the target ranks them: ``index``, ``label``, and
    ``probability`` -- the value the target ranks by, named by ``kind`` (``probability`` for the
    class targets, ``pixels`` for segmentation's share of the pixels, ``similarity``, ``value``,
    ``score`` for a detection). ``chosen``: explained when no class is given."""

    index: int
    label: str
    probability: float
    kind: str = "probability"
    chosen: bool = False
    #: A detection's class index and box (x0, y0, x1, y1 in the model input's pixels); None otherwise.
    class_index: int | None = None
    box: tuple[float, float, float, float] | None = None

    @property
    def value(self) -> float:
        """The ranked value (the field keeps the name ``probability`` for the class targets' JSON)."""
        return self.probability

    def as_json(self) -> dict:
        found = {"index": self.index, "label": self.label, self.kind: self.probability}
        if self.box is not None:
            found.update({"class": self.class_index, "box": [round(v, 2) for v in self.box]})
        return found


@dataclass(frozen=True)
class TargetOptions:
    """A target's settings: ``threshold`` (multilabel: the sigmoid probability a chosen class
    exceeds), ``region`` (segmentation: an H x W mask at the input size, None for the pixels assigned
    to each class), ``reference`` (embedding: the D-vector compared with), ``reference_name`` (its
    name in labels), ``score_threshold`` (detection: the score a box explained by default exceeds),
    ``detections`` (detection: the boxes found, each a :class:`Detected`; set by
    :meth:`convscope.Model.predict`)."""

    threshold: float = TARGET_THRESHOLD
    region: torch.Tensor | None = field(default=None, repr=False)
    reference: torch.Tensor | None = field(default=None, repr=False)
    reference_name: str = "the reference"
    score_threshold: float = TARGET_THRESHOLD
    detections: tuple[Detected, ...] = ()


@dataclass(frozen=True)
class Detected:
    """A box the detection target explains: the ``image`` (its row in the batch it was found in), the
    ``box`` (x0, y0, x1, y1 in the model input's pixels), its ``label`` (class index) and ``score``."""

    image: int
    box: tuple[float, float, float, float]
    label: int
    score: float


class Target:
    """A registered target (see the module notes); subclasses set ``name``, ``explains`` and the methods."""

    name: ClassVar[str]
    #: What a map explains, in words ("the logit of a class").
    explains: ClassVar[str]
    #: What each prediction's value is.
    kind: ClassVar[str] = "probability"
    #: Whether it knows each map's region (:meth:`regions`): the pointing game needs no boxes then.
    has_regions: ClassVar[bool] = False
    #: Whether its entries are found in the images :meth:`convscope.Model.predict` is given (a
    #: detector's boxes), so that its labels are known only after it.
    finds_entries: ClassVar[bool] = False
    #: Whether its entries are classes ranked by probability, several worth a map each (a report shows
    #: a classifier's top 3; other targets, the entries they choose).
    ranks_classes: ClassVar[bool] = False
    #: The default CAM layer is the last feature map under this module path, where there is one.
    default_layer_within: ClassVar[str | None] = None

    def __init__(self, options: TargetOptions | None = None) -> None:
        self.options = options or TargetOptions()

    def __repr__(self) -> str:
        return f"<convscope target {self.name}>"

    def misfit(self, output: Any) -> str | None:
        """Why this target cannot read ``output`` (None when it can)."""
        return None if _tensor(output) is not None and _tensor(output).dim() == 2 else "B x N scores"

    def scores(self, output: Any) -> torch.Tensor:
        """B x N scores, differentiable: entry n of row b is what a map of (b, n) explains."""
        raise NotImplementedError

    def measure(self, output: Any) -> torch.Tensor:
        """B x N values the metrics of "which map to trust" follow (default: the scores)."""
        return self.scores(output)

    def labels(self, class_labels: Sequence[str]) -> tuple[str, ...]:
        """The names of the N scores (default: the model's class labels)."""
        return tuple(class_labels)

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        """Each image's ``top`` candidates, best first, the default ones ``chosen`` (a target may list
        more: a multilabel model's every class above the threshold, a segmentation's every class
        present, a detector's every box)."""
        raise NotImplementedError

    def first_choice(self, output: Any, labels: Sequence[str]) -> list[int]:
        """Each image's entry explained when no class is given: its best chosen candidate."""
        return [next(p.index for p in row if p.chosen) for row in self.predictions(output, labels, 1)]

    def regions(self, output: Any, classes: Sequence[int], size: tuple[int, int]) -> torch.Tensor | None:
        """Each row's region (B x H x W; ``size``: the input's) where the score is about one (a
        segmentation's pixels, a detection's box); None for targets without."""
        return None

    def found_in(self, outputs: Sequence[Any]) -> TargetOptions | None:
        """Options with what the target takes from the images it predicts on (a detector's boxes), given
        the outputs of the batches of one :meth:`convscope.Model.predict`; None where it takes nothing."""
        return None

    def describe(self, returns: str) -> str:
        """One line: the target and what the model returns (``returns``: :func:`describe_output`'s words)."""
        return f"target: {self.name} -- {self.explains} (the model returns {returns})"


#: Every target by name, in the order :data:`convscope.catalog.TARGET_NAMES` lists them.
TARGETS: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator adding a target to :data:`TARGETS` under its ``name``."""
    TARGETS[cls.name] = cls
    return cls


def _tensor(output: Any) -> torch.Tensor | None:
    return output if isinstance(output, torch.Tensor) else None


def _ranked(values: torch.Tensor, labels: Sequence[str], top: int, kind: str,
            chosen: Callable[[int, float, int], bool]) -> list[list[Prediction]]:
    """Each row of ``values`` (B x N) ranked, best first, its ``top`` first as Predictions;
    ``chosen(index, value, rank)`` marks the default ones."""
    top = min(top, values.shape[1])
    found, indices = values.float().topk(top, dim=1)
    return [[Prediction(i, labels[i], v, kind, chosen(i, v, rank))
             for rank, (i, v) in enumerate(zip(row_i, row_v))]
            for row_i, row_v in zip(indices.tolist(), found.tolist())]


class _ClassScores(Target):
    """The class targets: predictions by softmax, the top one chosen; the metrics follow the class's
    softmax probability."""

    ranks_classes = True

    def measure(self, output: Any) -> torch.Tensor:
        return output.float().softmax(dim=1)

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        return _ranked(output.float().softmax(dim=1), labels, top, "probability", lambda i, v, rank: rank == 0)

    def first_choice(self, output: Any, labels: Sequence[str]) -> list[int]:
        return output.argmax(dim=1).tolist()


@register_target
class ClassLogit(_ClassScores):
    name = "class"
    explains = "the logit of a class"

    def scores(self, output: Any) -> torch.Tensor:
        return output


@register_target
class ClassSoftmax(_ClassScores):
    name = "softmax"
    explains = "the softmax probability of a class"

    def scores(self, output: Any) -> torch.Tensor:
        return output.softmax(dim=1)


@register_target
class ClassRest(_ClassScores):
    name = "rest"
    explains = "the logit of a class minus the cross-entropy, y_c + log softmax(y)_c (ShapleyCAM's ReST)"

    def scores(self, output: Any) -> torch.Tensor:
        return output + output.log_softmax(dim=1)


@register_target
class Multilabel(Target):
    name = "multilabel"
    explains = "the logit of each class whose sigmoid is above the threshold"

    def scores(self, output: Any) -> torch.Tensor:
        return output

    def measure(self, output: Any) -> torch.Tensor:
        return output.float().sigmoid()

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        """The ``top`` most probable classes by sigmoid, and every class above the threshold (chosen)."""
        threshold = self.options.threshold
        probabilities = output.float().sigmoid()
        top = max(top, int((probabilities > threshold).sum(dim=1).max()))
        return _ranked(probabilities, labels, top, "probability", lambda i, v, rank: v > threshold)

    def first_choice(self, output: Any, labels: Sequence[str]) -> list[int]:
        return output.argmax(dim=1).tolist()


def _segmentation_scores(output: Any) -> torch.Tensor | None:
    """The B x classes x H x W scores of a segmentation model's output (a tensor or a dict's ``out``)."""
    if isinstance(output, Mapping):
        output = output.get("out")
    return output if isinstance(output, torch.Tensor) and output.dim() == 4 else None


@register_target
class Segmentation(Target):
    name = "segmentation"
    kind = "pixels"
    default_layer_within = "backbone"  # its last stage, as pytorch-grad-cam's segmentation tutorial
    has_regions = True

    @property
    def explains(self) -> str:  # type: ignore[override]
        where = "a fixed region" if self.options.region is not None else "the pixels the model assigns to it"
        return f"the sum of a class's logits over {where}"

    def misfit(self, output: Any) -> str | None:
        return None if _segmentation_scores(output) is not None else "B x classes x H x W scores (or a dict with 'out')"

    def region_masks(self, output: Any) -> torch.Tensor:
        """B x classes x H x W, 1 where a pixel belongs to the class's region (no gradient)."""
        logits = _segmentation_scores(output)
        if self.options.region is not None:
            region = self.options.region.to(logits.device, logits.dtype)
            if region.shape != logits.shape[2:]:
                region = F.interpolate(region[None, None], size=logits.shape[2:], mode="nearest")[0, 0]
            return region.expand_as(logits).detach()
        assigned = logits.detach().argmax(dim=1)
        return F.one_hot(assigned, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)

    def scores(self, output: Any) -> torch.Tensor:
        logits = _segmentation_scores(output)
        return (logits * self.region_masks(output)).sum(dim=(2, 3))

    def regions(self, output: Any, classes: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
        masks = self.region_masks(output)
        return masks[torch.arange(len(masks)), torch.as_tensor(list(classes))]

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        """Every class whose region has pixels (``top`` does not cut them: a class missing here has an
        empty region), ranked by its share of the pixels -- of the image, or of the fixed region's --
        the largest class other than the background chosen."""
        logits = _segmentation_scores(output).detach()
        assigned = F.one_hot(logits.argmax(dim=1), logits.shape[1]).float()
        fixed = self.options.region is not None
        if fixed:
            region = self.region_masks(output)[:, 0, :, :, None]
            assigned = assigned * region / region.sum(dim=(1, 2), keepdim=True).clamp(min=1)
            shares = assigned.sum(dim=(1, 2))
        else:
            shares = assigned.mean(dim=(1, 2))
        result = []
        for row in _ranked(shares, labels, shares.shape[1], "pixels", lambda i, v, rank: False):
            listed = row if fixed else [p for p in row if p.probability > 0]
            pick = next((p for p in listed if p.label.lower() not in BACKGROUND and p.probability > 0), listed[0])
            result.append([replace(p, chosen=p is pick) for p in listed])
        return result


@register_target
class Embedding(Target):
    name = "embedding"
    kind = "similarity"

    @property
    def explains(self) -> str:  # type: ignore[override]
        return f"the cosine similarity of the embedding to {self.options.reference_name}'s"

    def misfit(self, output: Any) -> str | None:
        reason = super().misfit(output)
        if reason is not None:
            return "B x D embeddings"
        reference = self.options.reference
        if reference is not None and reference.numel() != output.shape[1]:
            return f"B x {reference.numel()} embeddings (as the reference)"
        return None

    def scores(self, output: Any) -> torch.Tensor:
        if self.options.reference is None:
            raise InputError("reference: the embedding target compares with a reference image's embedding; give "
                             "--reference IMAGE or DIR", parameter="reference")
        reference = self.options.reference.to(output.device, output.dtype)
        return F.cosine_similarity(output, reference[None], dim=1)[:, None]

    def labels(self, class_labels: Sequence[str]) -> tuple[str, ...]:
        return (f"similarity to {self.options.reference_name}",)

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        return [[Prediction(0, labels[0], float(v), "similarity", True)] for v in self.scores(output)[:, 0].tolist()]

    def first_choice(self, output: Any, labels: Sequence[str]) -> list[int]:
        return [0] * len(output)


@register_target
class Output(Target):
    name = "output"
    kind = "value"
    explains = "one raw output (a regression head's value)"

    def misfit(self, output: Any) -> str | None:
        return None if _tensor(output) is not None and output.dim() >= 1 else "a tensor"

    def scores(self, output: Any) -> torch.Tensor:
        return output.reshape(len(output), -1)

    def labels(self, class_labels: Sequence[str]) -> tuple[str, ...]:
        return tuple(f"output {i}" for i in range(len(class_labels)))

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        values = self.scores(output).float()
        return [[Prediction(i, labels[i], float(v), "value", i == 0) for i, v in enumerate(row[:top].tolist())]
                for row in values]

    def first_choice(self, output: Any, labels: Sequence[str]) -> list[int]:
        return [0] * len(output)


def region_mask(region: str | Sequence[float], size: tuple[int, int]) -> torch.Tensor:
    """A segmentation region as an H x W mask at the model input's ``size`` (1 inside): a box
    ``(x0, y0, x1, y1)`` in the input's pixels (or its text ``x0,y0,x1,y1``; x1 and y1 excluded), or
    a mask image's path (nonzero inside; resized to the input, nearest). InputError naming ``region``
    for a malformed box or a region with no pixel."""
    height, width = size
    box = parse_box(region) if isinstance(region, str) else [float(v) for v in region]
    mask = torch.zeros(height, width)
    if box is not None:
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"region {region}: a box x0,y0,x1,y1 needs x0 < x1 and y0 < y1", parameter="region")
        mask[max(0, int(y0)):max(0, int(-(-y1 // 1))), max(0, int(x0)):max(0, int(-(-x1 // 1)))] = 1
        where = f"box {region} in the {width}x{height} input"
    else:
        from PIL import Image

        from .images import load_image

        picture = load_image(str(region)).convert("L").resize((width, height), Image.Resampling.NEAREST)
        mask = (torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).view(height, width) > 0).float()
        where = f"mask {region}"
    if not mask.any():
        raise InputError(f"region: the {where} holds no pixel of the input", parameter="region")
    return mask


def _detections(output: Any) -> list[Mapping[str, torch.Tensor]] | None:
    """A detector's output -- a list of dicts with ``boxes``, ``labels`` and ``scores`` -- or None."""
    if isinstance(output, (list, tuple)) and output and all(isinstance(o, Mapping) for o in output) \
            and all(key in output[0] for key in ("boxes", "labels", "scores")):
        return list(output)
    return None


#: A detection matches a box when their IoU is above this and the labels agree (FasterRCNNBoxScoreTarget's).
IOU_THRESHOLD = 0.5


@register_target
class Detection(Target):
    name = "detection"
    kind = "score"
    explains = ("the score of the detection matching a box (IoU above 0.5, the same label) plus that IoU, as "
                "pytorch-grad-cam's FasterRCNNBoxScoreTarget")
    default_layer_within = "backbone.body"  # the backbone's last stage
    finds_entries = True
    has_regions = True

    def misfit(self, output: Any) -> str | None:
        return None if _detections(output) is not None else "a list of dicts with 'boxes', 'labels' and 'scores'"

    def scores(self, output: Any) -> torch.Tensor:
        """Row b, box k: IoU + score of the detection of row b with the largest IoU with box k, where
        that IoU is above 0.5 and its label is box k's; else 0."""
        from torchvision.ops import box_iou

        found = _detections(output)
        known = self.options.detections
        rows = []
        for detections in found:
            boxes = detections["boxes"]
            row = [boxes.new_zeros(())] * len(known)
            if len(boxes) and known:
                ious = box_iou(boxes.new_tensor([d.box for d in known]), boxes)
                best, index = ious.max(dim=1)
                matched = best.detach() > IOU_THRESHOLD
                for k, detected in enumerate(known):
                    i = int(index[k])
                    if bool(matched[k]) and int(detections["labels"][i]) == detected.label:
                        row[k] = best[k] + detections["scores"][i]
            rows.append(torch.stack(row) if row else boxes.new_zeros(0))
        return torch.stack(rows)

    def labels(self, class_labels: Sequence[str]) -> tuple[str, ...]:
        return tuple(f"{class_labels[d.label] if d.label < len(class_labels) else d.label} box {k}"
                     for k, d in enumerate(self.options.detections))

    def found_in(self, outputs: Sequence[Any]) -> TargetOptions:
        """Every box of every image with a score above ``score_threshold``, the images numbered in order."""
        found, image = [], 0
        for output in outputs:
            for detections in _detections(output):
                for box, label, score in zip(detections["boxes"].tolist(), detections["labels"].tolist(),
                                             detections["scores"].tolist()):
                    if score > self.options.score_threshold:
                        found.append(Detected(image, tuple(box), int(label), float(score)))
                image += 1
        return replace(self.options, detections=tuple(found))

    def predictions(self, output: Any, labels: Sequence[str], top: int) -> list[list[Prediction]]:
        """Row b's boxes (those found in image b), best score first, every one chosen (``top`` does not
        cut them: each is explained by default)."""
        result = []
        for row in range(len(_detections(output))):
            mine = sorted((k for k, d in enumerate(self.options.detections) if d.image == row),
                          key=lambda k: -self.options.detections[k].score)
            found = self.options.detections
            result.append([Prediction(k, labels[k], found[k].score, "score", True, found[k].label, found[k].box)
                           for k in mine])
        return result

    def first_choice(self, output: Any, labels: Sequence[str]) -> list[int]:
        chosen = [row[0].index if row else None for row in self.predictions(output, labels, 1)]
        if None in chosen:
            raise InputError(f"score_threshold: no box above {self.options.score_threshold} in image "
                             f"{chosen.index(None) + 1}", parameter="score_threshold")
        return chosen

    def regions(self, output: Any, classes: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
        masks = torch.zeros(len(classes), *size)
        for row, k in enumerate(classes):
            x0, y0, x1, y1 = self.options.detections[k].box
            masks[row, max(0, int(y0)):max(0, int(math.ceil(y1))), max(0, int(x0)):max(0, int(math.ceil(x1)))] = 1
        return masks


def describe_output(output: Any) -> str:
    """What a module returned, in a few words: ``a tensor 2 x 1000``, ``a dict with keys 'out', 'aux'``."""
    if isinstance(output, torch.Tensor):
        return f"a tensor {' x '.join(str(s) for s in output.shape)}"
    if isinstance(output, Mapping):
        return f"a dict with keys {', '.join(repr(k) for k in list(output)[:5])}"
    if isinstance(output, (tuple, list)):
        inner = f" (dicts with keys {', '.join(repr(k) for k in list(output[0])[:5])})" \
            if output and all(isinstance(o, Mapping) for o in output) else ""
        return f"a {type(output).__name__} of {len(output)} items{inner}"
    return f"a {type(output).__name__}"


def detected_target_name(output: Any, multilabel: bool = False, reference: bool = False) -> str | None:
    """The target a module's output calls for: ``segmentation`` for B x classes x H x W scores or a
    dict with ``out``, ``detection`` for a list of dicts with boxes, ``embedding`` where a reference is
    given, ``multilabel`` where asked, else ``class`` for B x N scores; None when none fits."""
    if _segmentation_scores(output) is not None:
        return "segmentation"
    if _detections(output) is not None:
        return "detection"
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return "embedding" if reference else "multilabel" if multilabel else "class"
    return None


def make_target(name: str, output: Any, options: TargetOptions | None = None) -> Target:
    """The registered target ``name`` with ``options``, checked to read ``output`` (an InputError naming
    ``target`` and what the model returned otherwise)."""
    if name not in TARGETS:
        close = difflib.get_close_matches(name, list(TARGETS), n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"target {name!r}: unknown{hint} (choose {', '.join(TARGETS)})", parameter="target")
    options = options or TargetOptions()
    check_between("threshold", options.threshold, 0.0, 1.0)
    check_between("score_threshold", options.score_threshold, 0.0, 1.0)
    target = TARGETS[name](options)
    reason = target.misfit(output)
    if reason is not None:
        raise InputError(f"target {name}: needs a model returning {reason}, but the model returns "
                         f"{describe_output(output)}", parameter="target")
    return target

