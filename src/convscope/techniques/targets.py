"""Targets: what a gradient technique differentiates -- a function from the model's output to one
score per image.

A target takes the model's output (B x N, fp32) and the class of each image, and returns the B
scores whose gradient the technique follows (``Y_c`` in the definitions of
:mod:`convscope.techniques.cams` and :mod:`convscope.techniques.explain`). The built-in one is
``class_score``: each image's class score before softmax (the logit). A new target (a segmentation
mask's summed scores, a detection box, an embedding's similarity, ...) is one function registered
with :func:`register_target`; the methods need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import check_choice

#: (model output B x N, each image's class) -> B scores.
Target = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]
#: Every target by name; :data:`DEFAULT_TARGET` is the class score.
TARGETS: dict[str, Target] = {}
DEFAULT_TARGET = "class_score"


def register_target(name: str) -> Callable[[Target], Target]:
    """Decorator adding a target function to :data:`TARGETS` under ``name``."""
    def register(target: Target) -> Target:
        TARGETS[name] = target
        return target
    return register


def target_named(name: str) -> Target:
    """The registered target ``name`` (InputError naming ``target`` if unknown)."""
    check_choice("target", name, TARGETS, "target")
    return TARGETS[name]


@register_target("class_score")
def class_score(output: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``Y_c`` for each image: its class's score before softmax, ``output[b, classes[b]]``."""
    index = torch.tensor(list(classes), device=output.device)[:, None]
    return output.float().gather(1, index)[:, 0]


#: FinerCAM's comparison: the classes whose scores are nearest the explained class's, and the
#: strength of the comparison (pytorch-grad-cam's defaults).
FINER_NEAREST = 3
FINER_ALPHA = 1.0


@register_target("finer")
def finer_score(output: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """FinerCAM's target (pytorch-grad-cam's ``FinerWeightedTarget``): with c the class and j the
    :data:`FINER_NEAREST` other classes whose scores are nearest Y_c, ``sum_j p_j (Y_c - alpha Y_j) /
    (sum_j p_j + 1e-9)``, p the softmax probabilities (part of the function, so differentiated too).
    torchcam's FinerCAM differs: a plain mean and alpha 0.6."""
    output = output.float()
    rows = []
    for scores, cls in zip(output, classes):
        distance = (scores - scores[cls]).abs().detach()
        order = torch.sort(distance, stable=True).indices
        nearest = [int(j) for j in order if int(j) != cls][:FINER_NEAREST]
        probabilities = scores.softmax(dim=0)[nearest]
        rows.append((probabilities * (scores[cls] - FINER_ALPHA * scores[nearest])).sum()
                    / (probabilities.sum() + 1e-9))
    return torch.stack(rows)
