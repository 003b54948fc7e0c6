"""Benchmark: Grad-CAM on a model opened from a file against the same architecture as a native torch
module, batch 8 of the sample photos, fp32, median of ``--repeat`` after a warm-up.

* Keras's ``VGG19(weights=None)`` saved to ``.keras`` and opened by convscope (Keras 3 on its PyTorch
  backend), at ``block5_conv4``, against torchvision's ``vgg19`` at the same layer (``features.34``,
  convscope's ``block5_conv4`` alias) -- the same architecture, not the same weights;
* torchvision's ``resnet18`` exported to ONNX (default exporter) and opened by convscope, at
  ``layer4.1.relu_1``, against the torch ``resnet18`` itself at ``layer4``.
Target: the file's model within 1.2x of the native one. Run alone on the machine:
    .venv/bin/python benchmarks/model_files_vs_native.py [--repeat 3]
Needs the test extras (Keras, onnx, onnxscript, onnx2pytorch).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import torch
import torchvision.models as tvm

import convscope
from convscope.allocator import keep_freed_memory
from convscope.models.keras_source import import_keras
from convscope.samples import SAMPLES, sample_array
from convscope.techniques.cams import compute_cam
from timing import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    keep_freed_memory()
    keras = import_keras()
    photos = [sample_array(name) for name in (list(SAMPLES) * args.batch)[:args.batch]]
    print(f"{'model':<36} {'file s':>8} {'native s':>9} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as folder:
        keras.utils.set_random_seed(0)
        keras.applications.VGG19(weights=None).save(Path(folder) / "vgg19.keras")
        from_file = convscope.load_model(str(Path(folder) / "vgg19.keras"))
        native = convscope.load_model("vgg19", "random")
        x = from_file.preprocess(photos)
        ours = timed(lambda: compute_cam(from_file, x, None, "block5_conv4"), args.repeat)
        theirs = timed(lambda: compute_cam(native, native.preprocess(photos), None, "block5_conv4"), args.repeat)
        print(f"{'Keras VGG19 (.keras) vs torchvision':<36} {ours:8.3f} {theirs:9.3f} {ours / theirs:7.2f}", flush=True)

        torch.manual_seed(0)
        net = tvm.resnet18(weights=None).eval()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(Path(folder) / "resnet18.onnx"))
        from_file = convscope.load_model(str(Path(folder) / "resnet18.onnx"))
        x = from_file.preprocess(photos)
        ours = timed(lambda: compute_cam(from_file, x, None, "layer4.1.relu_1"), args.repeat)
        theirs = timed(lambda: compute_cam(net, x, None, "layer4"), args.repeat)
        print(f"{'ResNet-18 (.onnx) vs torch':<36} {ours:8.3f} {theirs:9.3f} {ours / theirs:7.2f}", flush=True)


if __name__ == "__main__":
    main()
