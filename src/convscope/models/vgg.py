"""Keras layer names for torchvision's VGG: ``block1_conv1`` ... ``block5_conv4``, ``block1_pool`` ...
``block5_pool``, ``fc1``, ``fc2``, ``predictions``.

As in Keras, a conv name denotes the conv's output *after* its ReLU (the alias targets the ReLU
module), and ``fc1``/``fc2`` the dense layers after theirs; ``predictions`` denotes the logits (the
torchvision model has no softmax). torchvision's own module names stay valid and denote each
module's own output (``features.0`` is the first conv before its ReLU).
"""

from __future__ import annotations

from torch import nn

from ..layers import LayerAlias


def _activation_after(children: list[tuple[str, nn.Module]], index: int, prefix: str) -> str:
    """Path of the ReLU that follows ``children[index]`` (skipping BatchNorm), or the module itself."""
    for name, module in children[index + 1:]:
        if isinstance(module, nn.ReLU):
            return f"{prefix}.{name}"
        if not isinstance(module, nn.BatchNorm2d):
            break
    return f"{prefix}.{children[index][0]}"


def keras_aliases(vgg: nn.Module) -> tuple[list[LayerAlias], list[str]]:
    """The Keras-named aliases of a torchvision VGG, and the module paths they hide from listings."""
    aliases: list[LayerAlias] = []
    features = list(vgg.features.named_children())
    block, conv = 1, 0
    for i, (name, module) in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
            target = _activation_after(features, i, "features")
            aliases.append(LayerAlias(f"block{block}_conv{conv}", target, "Conv2d", f"features.{name}"))
        elif isinstance(module, nn.MaxPool2d):
            aliases.append(LayerAlias(f"block{block}_pool", f"features.{name}", "MaxPool2d", f"features.{name}"))
            block, conv = block + 1, 0
    classifier = list(vgg.classifier.named_children())
    linears = [i for i, (_, m) in enumerate(classifier) if isinstance(m, nn.Linear)]
    for number, i in enumerate(linears):
        name = classifier[i][0]
        if number == len(linears) - 1:
            aliases.append(LayerAlias("predictions", f"classifier.{name}", "Linear", f"classifier.{name}"))
        else:
            target = _activation_after(classifier, i, "classifier")
            aliases.append(LayerAlias(f"fc{number + 1}", target, "Linear", f"classifier.{name}"))
    hidden = ["features", "classifier"]
    hidden += [f"features.{name}" for name, _ in features]
    hidden += [f"classifier.{name}" for name, _ in classifier]
    return aliases, hidden
