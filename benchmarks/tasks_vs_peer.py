"""Benchmark: Grad-CAM on models that are not single-label CNNs, against pytorch-grad-cam and the floor.

ours  = ``compute_cam(model, x, classes, None, "gradcam")`` with the model's target (fp32, the default layer)
peer  = pytorch-grad-cam 1.5.7's ``GradCAM`` on the same module, layer, inputs and target (its tutorial's
        wrapper and ``reshape_transform``)
floor = the model's own forward pass and the backward pass of the same scores to the layer's output (a
        plain forward hook holding the output: what any Grad-CAM must compute), no convscope

Each timed after a warm-up, the median of ``--repeat`` runs. Targets: ours <= the peer's time and within
1.2x of the floor. The models, random weights (seeded), at the peer's usual input size, the sample photos
(``--batch`` of them, default 2): ``fasterrcnn_mobilenet_v3_large_fpn`` (512 px given, 800 inside: each
image's best box, FasterRCNNBoxScoreTarget), ``deeplabv3_mobilenet_v3_large`` (segmentation, 520 px: the
summed logits of each image's largest non-background class over its pixels), ``vit_b_16`` (224 px: a
class logit, the last block's first norm) and ``r3d_18`` (video: 16 frames of 112 px, each photo a still
clip; a class logit, ``layer4``; the peer upsamples its 3-D map with scipy's cubic zoom, convscope
trilinearly).

Run alone on the machine (two torch processes distort each other):
    .venv/bin/python benchmarks/tasks_vs_peer.py [--batch 2] [--repeat 3] [--models all|LIST]
Needs the test extras (pytorch-grad-cam).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.models as tvm
from torch import nn

import convscope
import convscope.targets
from convscope.allocator import keep_freed_memory
from convscope.samples import SAMPLES, sample_array
from convscope.techniques.cams import compute_cam
from convscope.techniques.capture import cam_layer
from timing import timed


@dataclass
class Task:
    """A model for the benchmark: its convscope Model, the module the peer runs (its tutorial's
    wrapper), the peer's reshape transform, and the peer's targets for the classes convscope explains."""

    model: convscope.Model
    peer_module: nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor] | None
    peer_targets: Callable[[torch.Tensor, list[int]], list]


class SegmentationOutput(nn.Module):
    """pytorch-grad-cam's segmentation tutorial wrapper: the model's ``out``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


def segmentation_task() -> Task:
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    net = _seeded(lambda: tvm.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None))
    model = convscope.load_model(net, input_size=520)

    def targets(x, classes):
        with torch.no_grad():
            assigned = net(x)["out"].argmax(dim=1)
        return [SemanticSegmentationTarget(c, (assigned[i] == c).float().numpy()) for i, c in enumerate(classes)]
    return Task(model, SegmentationOutput(net), None, targets)


def vit_task() -> Task:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _seeded(lambda: tvm.vit_b_16(weights=None))
    with torch.no_grad():  # torchvision starts the head at zero
        net.heads.head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))

    def transform(tensor):
        return tensor[:, 1:, :].reshape(tensor.size(0), 14, 14, tensor.size(2)).permute(0, 3, 1, 2)
    return Task(convscope.load_model(net), net, transform,
                lambda x, classes: [ClassifierOutputTarget(c) for c in classes])


def detection_task() -> Task:
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    net = _seeded(lambda: tvm.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                                                         box_score_thresh=0.0))
    model = convscope.load_model(net, input_size=512, mean=(0, 0, 0), std=(1, 1, 1),
                                 target_options=convscope.targets.TargetOptions(score_threshold=0.01))

    def targets(x, classes):
        found = model.target.options.detections
        return [FasterRCNNBoxScoreTarget([found[k].label], np.array([found[k].box])) for k in classes]
    return Task(model, net, None, targets)


def video_task() -> Task:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _seeded(lambda: tvm.video.r3d_18(weights=None))
    model = convscope.load_model(net, input_size=112, mean=(0.43216, 0.394666, 0.37645),
                                 std=(0.22803, 0.22145, 0.216989), frames=16)
    return Task(model, net, None, lambda x, classes: [ClassifierOutputTarget(c) for c in classes])


TASKS = {"fasterrcnn_mobilenet_v3_large_fpn": detection_task, "deeplabv3_mobilenet_v3_large": segmentation_task,
         "vit_b_16": vit_task, "r3d_18": video_task}


def floor_work(task: Task, x: torch.Tensor, layer: str, classes: list[int]) -> Callable[[], None]:
    """The forward pass and the backward of the explained scores to the layer's output, nothing else."""
    model = task.model
    module = model.submodule(layer)

    def run():
        held = {}
        handle = module.register_forward_hook(lambda m, i, o: held.setdefault("output", o))
        try:
            with torch.enable_grad():
                scores = model.scores(x)
                total = scores[torch.arange(len(x)), torch.tensor(classes)].sum()
                torch.autograd.grad(total, held["output"])
        finally:
            handle.remove()
    return run


def peer_work(task: Task, x: torch.Tensor, layer: str, classes: list[int]) -> Callable[[], None]:
    import pytorch_grad_cam

    targets = task.peer_targets(x, classes)

    def run():
        with pytorch_grad_cam.GradCAM(model=task.peer_module, target_layers=[task.model.submodule(layer)],
                                      reshape_transform=task.transform) as extractor:
            extractor(input_tensor=x, targets=targets)
        task.peer_module.zero_grad(set_to_none=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", default="all")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs
    torch.manual_seed(0)
    names = list(TASKS) if args.models == "all" else args.models.split(",")
    photos = [sample_array(name) for name in (list(SAMPLES) * args.batch)[:args.batch]]
    print(f"{'model':<30} {'ours s':>8} {'peer s':>8} {'floor s':>8} {'ours/peer':>10} {'ours/floor':>11}")
    for name in names:
        task = TASKS[name]()
        model = task.model
        x = model.preprocess(photos)
        layer = cam_layer(model)
        ranked = model.predict(x, top=1)  # a detector's boxes are found here: each image's best is explained
        result = compute_cam(model, x, [row[0].index for row in ranked] if model.target.finds_entries else None,
                             None, "gradcam")
        classes = result.classes
        ours = timed(lambda: compute_cam(model, x, classes, None, "gradcam"), args.repeat)
        peer = timed(peer_work(task, x, layer, classes), args.repeat)
        floor = timed(floor_work(task, x, layer, classes), args.repeat)
        print(f"{name:<30} {ours:8.3f} {peer:8.3f} {floor:8.3f} {ours / peer:10.2f} {ours / floor:11.2f}",
              flush=True)
        assert np.isfinite(ours)


if __name__ == "__main__":
    main()
