"""The ONNX model source: a ``.onnx`` file (``pip install 'convscope[onnx]'``), normalized by
onnxscript's optimizer (constant folding, the legacy exporter's Identity chains removed) and
converted to a torch module by onnx2pytorch.

The coverage that chose them (README, "Keras and ONNX models"): onnx2pytorch converts the files
``torch.onnx.export`` writes by default exactly, and, after the optimizer, the legacy exporter's too;
onnx2torch fails on both. Layer names come from the ONNX graph: the module path the exporter recorded
(``pkg.torch.onnx.name_scopes`` from the default exporter, ``/layer1/layer1.0/conv1/Conv`` node names
from the legacy one), else the node's name; a second node of one module gets ``_1``, ``_2``.
An ONNX file holds no code: opening one runs nothing but the conversion.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..images import Preprocessing
from ..layers import LayerAlias
from ..model import Model
from .keras_source import PREPROCESS
from .registry import register_model_file

ONNX_SUFFIXES = (".onnx",)


class OnnxNetwork(nn.Module):
    """A converted ONNX graph taking NCHW RGB input (BGR for ``caffe`` preprocessing), handed to a
    graph whose input is NHWC (Keras's and tf2onnx's exports) as NHWC."""

    def __init__(self, graph: nn.Module, bgr: bool = False, nhwc: bool = False) -> None:
        super().__init__()
        self.graph = graph
        self.bgr = bgr
        self.nhwc = nhwc

    def forward(self, x: Any) -> Any:
        if self.bgr:
            x = x.flip(1)
        return self.graph(x.permute(0, 2, 3, 1) if self.nhwc else x)


#: ONNX operators whose output is NCHW by the standard, whatever layout reached them.
NCHW_OPERATORS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                  "BatchNormalization", "InstanceNormalization", "LRN", "LpPool"}
#: ONNX operators that keep the layout of their first input (element-wise).
LAYOUT_KEEPING = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
                  "Softplus", "Gelu", "Add", "Sub", "Mul", "Div", "Identity", "Dropout", "Neg", "Abs", "Erf",
                  "Sqrt", "Pow", "Max", "Min", "Cast"}


def channels_last_outputs(graph: Any, input_name: str, nhwc: bool) -> set[str]:
    """The node outputs that hold N x H x W x C maps: the input's layout carried through the graph
    (a Transpose to (0, 2, 3, 1) makes NHWC, to (0, 3, 1, 2) NCHW; a convolution or pooling gives
    NCHW; element-wise operators keep their input's), so that each is seen as C x H x W."""
    layout: dict[str, str] = {input_name: "nhwc" if nhwc else "nchw"}
    for node in graph.node:
        first = next((layout[name] for name in node.input if name in layout), None)
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
            found = {(0, 2, 3, 1): "nhwc", (0, 3, 1, 2): "nchw"}.get(tuple(perm)) if first else None
        elif node.op_type in NCHW_OPERATORS:
            found = "nchw"
        elif node.op_type in LAYOUT_KEEPING:
            found = first
        else:
            found = None
        for output in node.output:
            if found is not None:
                layout[output] = found
    return {name for name, kind in layout.items() if kind == "nhwc"}


def _import() -> tuple[Any, Any, Any]:
    try:
        import onnx
        from onnx2pytorch import ConvertModel
        from onnxscript import optimizer
    except ImportError:
        raise InputError("model: ONNX files need onnx, onnxscript and onnx2pytorch: pip install 'convscope[onnx]'",
                         parameter="model") from None
    return onnx, ConvertModel, optimizer


def module_path(node: Any) -> str:
    """The readable name of an ONNX node: the module path the exporter recorded (the module itself
    where it is a torch.nn layer, such as ``layer1.0.relu``; ``layer1.0.add`` for an operation inside
    a block's own forward), or the node's name."""
    facts = {prop.key: prop.value for prop in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in facts:
        try:
            scopes = [scope for scope in ast.literal_eval(facts["pkg.torch.onnx.name_scopes"]) if scope]
            classes = ast.literal_eval(facts.get("pkg.torch.onnx.class_hierarchy", "[]"))
        except (ValueError, SyntaxError):
            scopes, classes = [], []
        if scopes:
            operation = re.sub(r"_\d+$", "", scopes[-1])
            if len(scopes) == 1:
                return operation
            leaf = len(classes) >= 2 and str(classes[-2]).startswith("torch.nn.modules.")
            return scopes[-2] if leaf else f"{scopes[-2]}.{operation}"
    parts = [part for part in node.name.split("/") if part]
    if len(parts) > 1:  # the legacy exporter: /layer1/layer1.0/conv1/Conv
        path, last = "", ""
        for part in parts[:-1]:
            path = path[:len(path) - len(last)] + part if last and part.startswith(last + ".") else \
                (f"{path}.{part}" if path else part)
            last = part
        return path
    return node.name.strip("/") or node.output[0]


def readable_names(graph: Any, original: Any | None = None) -> dict[str, str]:
    """Each node's first output -> its readable layer name, distinct (``_1``, ``_2`` for more nodes of
    one module); a node the optimizer rewrote is named as the ``original`` graph's node that made
    the same output."""
    before = {node.output[0]: node for node in (original.node if original is not None else ()) if node.output}
    names: dict[str, str] = {}
    taken: dict[str, int] = {}
    for node in graph.node:
        if not node.output:
            continue
        base = module_path(before.get(node.output[0], node))
        count = taken.get(base, 0)
        taken[base] = count + 1
        names[node.output[0]] = base if count == 0 else f"{base}_{count}"
    return names


def _any_batch(proto: Any, batch: int | None) -> None:
    """A graph exported for a fixed batch (the exporters write the example's, usually 1) made to take
    any: each Reshape whose constant target shape starts with that batch and has no other -1 gets -1
    there (the input's batch then decides it). The graph is changed in place."""
    if batch is None:
        return
    from onnx import numpy_helper

    constants = {tensor.name: tensor for tensor in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(constants[node.input[1]]).copy()
        if shape.ndim == 1 and len(shape) >= 2 and shape[0] == batch and -1 not in shape[1:]:
            shape[0] = -1
            constants[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))


def _check_batches(graph: nn.Module, path: str, channels: int, height: int, width: int) -> None:
    """InputError unless the converted graph gives a batch of two inputs what it gives each alone (a
    graph whose batch is fixed somewhere convscope cannot see would mix the images silently)."""
    x = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            together = graph(x)
            alone = torch.cat([graph(x[:1]), graph(x[1:])])
        except RuntimeError as exc:
            raise InputError(f"model {path}: runs on one image at a time only ({' '.join(str(exc).split())[:120]}); "
                             "export it with a dynamic batch (dynamic_axes / dynamic_shapes)",
                             parameter="model") from None
    if not isinstance(together, torch.Tensor) or together.shape != alone.shape or \
            not torch.allclose(together, alone, rtol=1e-3, atol=1e-4 * float(alone.abs().max()) + 1e-6):
        raise InputError(f"model {path}: the converted graph gives a batch of images other outputs than each image "
                         "alone (a fixed batch of 1 inside it); export it with torch.onnx.export(..., dynamo=False) "
                         "or with a dynamic batch", parameter="model")


def _plain_module_names(graph: nn.Module) -> None:
    """onnx2pytorch names a module after its node's output, ``/layer1/layer1.0/conv1/Conv_output_0`` from
    the legacy exporter: a name with dots and slashes, which a module path cannot hold. Such modules
    are renamed (letters, digits, ``_``) here, where the converter's own graph is made, its node ->
    module mapping with them."""
    for output, name in list(graph.mapping.items()):
        if name in graph._modules and re.search(r"[^0-9A-Za-z_]", name):
            plain = re.sub(r"[^0-9A-Za-z_]", "_", name)
            while plain in graph._modules or hasattr(graph, plain):
                plain += "_"
            graph._modules[plain] = graph._modules.pop(name)
            graph.mapping[output] = plain


@register_model_file(*ONNX_SUFFIXES)
def load_onnx_file(path: str, preprocess: str | None = None,
                   input_size: int | tuple[int, int] | None = None) -> Model:
    """An ONNX classifier taking N x C x H x W (C 1 or 3) as a :class:`~convscope.model.Model`."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"model {path}: no such file", parameter="model")
    onnx, convert, optimizer = _import()
    try:
        proto = onnx.load(str(file))
    except Exception as exc:  # noqa: BLE001 -- protobuf's decode errors have no common base
        raise InputError(f"model {path}: not a readable ONNX file ({' '.join(str(exc).split())[:200]})",
                         parameter="model") from None
    initializers = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"model {path}: takes {len(inputs)} inputs; convscope opens models of one image input",
                         parameter="model")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    nhwc = len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3)
    if nhwc:  # Keras's and tf2onnx's exports: N x H x W x C
        dims = [dims[0], dims[3], dims[1], dims[2]]
    if len(dims) != 4 or dims[1] not in (1, 3):
        raise InputError(f"model {path}: its input is {dims}, not N x 3 x H x W or N x H x W x 3 (or one channel)",
                         parameter="model")
    height, width = dims[2], dims[3]
    if height is None or width is None:
        if input_size is None:
            raise InputError(f"model {path}: its input size is dynamic (N x {dims[1]} x H x W); give it: "
                             "--input-size H,W (input_size=(H, W))", parameter="model")
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    mode = preprocess or "torch"
    if mode not in PREPROCESS:
        raise InputError(f"preprocess {mode!r}: choose caffe, tf, torch or none", parameter="preprocess")
    mean, std, bgr = PREPROCESS[mode]
    if dims[1] == 1:
        mean, std = mean[:1], std[:1]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            optimized = optimizer.optimize(proto)
    except Exception:  # noqa: BLE001 -- the optimizer is a convenience: the graph as it is then
        optimized = proto
    _any_batch(optimized, dims[0])
    opset = next((entry.version for entry in optimized.opset_import if entry.domain in ("", "ai.onnx")), "?")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            graph = convert(optimized, experimental=False)
    except NotImplementedError as exc:
        raise InputError(f"model {path}: the ONNX converter (onnx2pytorch) lacks an operator of this file (opset "
                         f"{opset}): {' '.join(str(exc).split())[:200]}", parameter="model") from None
    except Exception as exc:  # noqa: BLE001 -- a converter's failure is the file's, in one line
        raise InputError(f"model {path}: cannot be converted to torch (opset {opset}; {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})", parameter="model") from None
    _plain_module_names(graph)
    network = OnnxNetwork(graph.eval(), bgr, nhwc).eval()
    _check_batches(network, path, dims[1], int(height), int(width))
    readable = readable_names(optimized.graph, proto.graph)
    types = {node.output[0]: node.op_type for node in optimized.graph.node if node.output}
    aliases = [LayerAlias(readable[output], f"graph.{module}", types.get(output, "Node"), f"graph.{module}")
               for output, module in graph.mapping.items() if output in readable]
    hidden = [name for name, _ in network.named_modules() if name]
    last = channels_last_outputs(optimized.graph, inputs[0].name, nhwc)
    model = Model(network, name=file.name, weights="onnx", preprocessing=Preprocessing((int(height), int(width)),
                                                                                       mean, std),
                  aliases=aliases, hidden=hidden,
                  channels_last=frozenset(f"graph.{module}" for output, module in graph.mapping.items()
                                          if output in last))
    model.fixed_input_size = dims[2] is not None
    if preprocess is None:
        model.loading_note = ("preprocessing: torch (the ImageNet mean and std: an ONNX file does not say how its "
                              "input is normalized; --preprocess sets it)")
    return model
