"""Coverage: which ONNX files convscope opens. torchvision architectures (random weights, seeded)
exported by torch's default (dynamo) exporter and its legacy one at opset 17, opened with
``convscope.load_model``; each cell the largest difference of the logits from the torch model's on
two sample photos (relative to their largest), or the one line convscope says when it refuses it.

    .venv/bin/python benchmarks/onnx_coverage.py [--models resnet18,vgg16,...] [--size 224]
Needs the test extras (onnx, onnxscript, onnx2pytorch).
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
from convscope.errors import ConvscopeError
from convscope.samples import sample_array

MODELS = ("resnet18", "vgg16", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny")
EXPORTERS = {"default (dynamo)": {"dynamo": True}, "legacy, opset 17": {"dynamo": False, "opset_version": 17}}


def cell(net: torch.nn.Module, path: Path, options: dict, size: int) -> str:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), **options)
    except Exception as exc:  # noqa: BLE001 -- the exporter's failure is the cell
        return f"export fails ({type(exc).__name__})"
    try:
        model = convscope.load_model(str(path))
    except ConvscopeError as exc:
        return f"refused: {exc}"[:160]
    x = model.preprocess([sample_array("chelsea"), sample_array("coffee")])
    with torch.no_grad():
        reference = net(x)
        relative = float((model.logits(x) - reference).abs().max() / reference.abs().max())
    return f"opens, logits within {relative:.1e} of their largest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            torch.manual_seed(0)
            net = tvm.get_model(name, weights=None).eval()
            for exporter, options in EXPORTERS.items():
                print(f"{name:<20} {exporter:<18} {cell(net, Path(folder) / f'{name}.onnx', options, args.size)}",
                      flush=True)
                (Path(folder) / f"{name}.onnx").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
