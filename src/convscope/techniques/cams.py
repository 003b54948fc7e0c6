"""Class activation maps: Grad-CAM and its family.

All methods work on one layer's feature maps ``A`` (B x K x h x w) and, for the gradient methods,
``g = dY_c/dA`` where ``Y_c`` is the class score before softmax:

* ``gradcam``   (Selvaraju et al. 2017): ``w_k = mean_ij g_kij``;        map = ReLU(sum_k w_k A_k)
* ``gradcam++`` (Chattopadhay et al. 2018): ``alpha = g^2 / (2 g^2 + sum_ij A_k * g^3)`` (0 where the
  denominator is 0), ``w_k = sum_ij alpha * ReLU(g)``;                    map = ReLU(sum_k w_k A_k)
* ``xgradcam``  (Fu et al. 2020): ``w_k = sum_ij (A_kij / sum_ij A_kij) g_kij``; map = ReLU(sum_k w_k A_k)
* ``layercam``  (Jiang et al. 2021): map = ReLU(sum_k ReLU(g_k) * A_k)  (element-wise)
* ``hirescam``  (Draelos & Carin 2020): map = ReLU(sum_k g_k * A_k)     (element-wise)
* ``scorecam``  (Wang et al. 2020, as the authors' code computes it): each non-constant channel,
  upsampled to the input and min-max normalized to [0, 1], masks the input; ``w_k`` = the softmax
  probability of class c for ``x * M_k`` (0 for a constant channel);       map = ReLU(sum_k w_k up(A_k)),
  the ReLU taken after upsampling
* ``eigencam``  (Muhammad & Yeasin 2020): the projection of the centred activations (hw x K) on
  their first principal component, signed to correlate positively with sum_k A_k; then ReLU.

Every map is then upsampled bilinearly (align_corners=False) to the input size and min-max
normalized per image (an all-zero map stays zero; a constant positive map becomes all ones).

Each method is one function registered with :func:`register_cam_method` in :data:`METHODS`; a
new method is one more registered function (and its hand-computed test). ``A`` and ``g`` come
from the shared capture path, :func:`convscope.techniques.capture.layer_pass`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..allocator import keeps_freed_memory
from ..catalog import CAM_METHOD_NAMES, FUSE_MODES, MAPS_PRECISION, SAMPLED_CAM_METHODS
from ..errors import InputError, check_at_least, check_choice
from ..hooks import evaluating
from ..images import ImageSource
from ..model import Model, as_input, as_model
from ..precision import check_precision, choose_precision, computing_in, prepare_input
from ..specs import check_fuse, check_samples
from .capture import LayerPass, batch_for_classes, cam_layer, full_gradients, layer_pass, replaced_pass
from .targets import DEFAULT_TARGET

#: Masked inputs per forward pass of the methods that mask the input, by device type: on CPUs small
#: batches are fastest with glibc's allocator as it comes (measured on the default model: 4 per pass
#: 2.7x faster than 32: a larger batch's blocks are mapped and unmapped at every pass), 16 where the
#: process keeps freed memory (:mod:`convscope.allocator`, as the command line does: 16 per pass
#: 1.15x faster than 4); larger ones on GPUs.
SCORECAM_BATCH = {"cpu": 4, "cuda": 32}
SCORECAM_BATCH_CPU_KEPT = 16


#: The epsilon of the peers' per-map scaling (:func:`minmax_channels`): pytorch-grad-cam's (FullGrad's
#: terms, its fusion of layers) and torchcam's (its Score-CAM family's masks, its Layer-CAM fusion). A
#: map whose values are all tiny, such as |b g| = 1e-6 or a middle layer's Grad-CAM at 1e-4, is scaled
#: visibly below 1 by it; the tests against the peers rely on it.
FULLGRAD_EPS = 1e-7
TORCHCAM_EPS = 1e-8
#: Ablated copies of a layer's output per forward pass of Ablation-CAM.
ABLATION_BATCH = 256
#: FEM's threshold: a position counts where the channel exceeds its mean by this many standard deviations.
FEM_K = 2
#: The noise's standard deviation of Smooth Grad-CAM++ (on the model input) and SS-CAM (on the
#: normalized masks), torchcam's defaults.
SMOOTHGRADCAMPP_STD = 0.3
SSCAM_STD = 2.0


def last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` among the module's submodules (registration order), or None."""
    found = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            found = sub
    return found


def default_scorecam_batch(device: torch.device) -> int:
    """Masked inputs per forward pass on ``device`` (see :data:`SCORECAM_BATCH`)."""
    if device.type == "cpu" and keeps_freed_memory():
        return SCORECAM_BATCH_CPU_KEPT
    return SCORECAM_BATCH.get(device.type, 8)


DEFAULT_METHOD = CAM_METHOD_NAMES[0]


@dataclass
class CamResult:
    """A batch of maps: ``maps`` B x H x W in [0, 1] at the input size, ``low_res`` B x h x w (after
    ReLU, before upsampling), the class of each image, the layer, the method and the logits."""

    maps: torch.Tensor
    low_res: torch.Tensor
    classes: list[int]
    layer: str
    method: str
    logits: torch.Tensor
    precision: str = MAPS_PRECISION
    precision_reason: str = "as asked"


@dataclass(frozen=True)
class CamInputs:
    """What a method computes its map from: the layer's activations ``acts`` (B x K x h x w, fp32),
    ``grads`` = dY_c/dA (same shape; None for methods without gradients), the model input ``x``, the
    ``logits``, each image's class, and ``forward`` (model input -> fp32 logits, in the call's
    precision) for methods that run the model again, ``batch_size`` inputs at a time; ``classifier``
    the model's last Linear layer (CAM's weights), if it has one; ``rerun(image, replacement)``
    the logits of one image (1 x C x H x W) with the layer's output replaced by each of the n maps
    of ``replacement`` (n x K x h x w), see :func:`~convscope.techniques.capture.replaced_pass`;
    ``gradients_everywhere()`` the input gradient and every bias's output gradient
    (:func:`~convscope.techniques.capture.full_gradients`, one more forward and full backward);
    ``hvp`` the Hessian-vector product ``H A`` for methods registered with ``needs_hessian``;
    ``samples`` the number of noisy or scaled copies a sampled method draws, ``generator`` the
    call's seeded random generator (see :meth:`noise`) and ``pass_on(inputs)`` the layer pass, with
    gradients, of other inputs for the same classes."""

    acts: torch.Tensor
    grads: torch.Tensor | None
    x: torch.Tensor
    logits: torch.Tensor
    classes: list[int]
    forward: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int
    progress: Callable[[int], None] | None = None
    classifier: nn.Linear | None = None
    rerun: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    gradients_everywhere: Callable[[], tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]] | None = None
    hvp: torch.Tensor | None = None
    samples: int = 0
    generator: torch.Generator | None = None
    pass_on: Callable[[torch.Tensor], LayerPass] | None = None

    def noise(self, shape: Sequence[int], std: float) -> torch.Tensor:
        """Gaussian noise N(0, std^2) of ``shape`` from the call's seeded generator, on the input's device."""
        return (torch.randn(tuple(shape), generator=self.generator) * std).to(self.x.device)


@dataclass(frozen=True)
class CamMethod:
    """A registered method: its name, its title in pictures and reports, whether it needs dY_c/dA,
    and the function from :class:`CamInputs` to the low-resolution map before its final ReLU: the
    terms of its sum over channels (B x K x h x w, summed over K unless ``eigen_smooth``), or, for
    the maps that are not such a sum (``channel_terms`` False: the principal components, FullGrad),
    the map itself (B x h x w). ``relu_after_upsampling``: the ReLU is taken on the upsampled map
    (Score-CAM's authors do so), not before; ``class_independent``: the map is the same for every
    class; ``samples``: how many noisy or scaled copies the method draws by default (0: none);
    ``seeded``: the copies are random (``seed`` decides them); ``masks_input``: each channel masks
    the input, one forward pass per channel and copy."""

    name: str
    title: str
    needs_gradients: bool
    compute: Callable[[CamInputs], torch.Tensor]
    relu_after_upsampling: bool = False
    class_independent: bool = False
    target: str = DEFAULT_TARGET
    needs_hessian: bool = False
    #: Where the map comes from, in words, when not the layer alone (FullGrad: the input and every bias).
    source: str = ""
    channel_terms: bool = True
    samples: int = 0
    seeded: bool = False
    masks_input: bool = False

    def where(self, layer: str) -> str:
        """``layer <name>``, or the method's own source where the layer plays no part."""
        return self.source or f"layer {layer}"


#: Every CAM method by name, in the order they are offered.
METHODS: dict[str, CamMethod] = {}


def register_cam_method(name: str, title: str, needs_gradients: bool = True, **facts: Any
                        ) -> Callable[[Callable[[CamInputs], torch.Tensor]], Callable[[CamInputs], torch.Tensor]]:
    """Decorator adding a map function to :data:`METHODS` under ``name``; ``facts``: the other
    fields of :class:`CamMethod`."""
    def register(compute: Callable[[CamInputs], torch.Tensor]) -> Callable[[CamInputs], torch.Tensor]:
        METHODS[name] = CamMethod(name, title, needs_gradients or facts.get("needs_hessian", False), compute,
                                  **facts)
        return compute
    return register


def cam_method(name: str) -> CamMethod:
    """The registered method ``name`` (InputError naming ``method`` if unknown)."""
    check_choice("method", name, METHODS, "CAM method")
    return METHODS[name]


# -- the methods (each returns its channel terms B x K x h x w, or its map B x h x w, before the final ReLU) --
def positions(tensor: torch.Tensor) -> tuple[int, ...]:
    """The dimensions of a map's positions: (2, 3) for B x K x h x w, (2, 3, 4) for a video's or a
    volume's B x K x t x h x w."""
    return tuple(range(2, tensor.dim()))


def resized_linearly(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B x K x h x w -> B x K x H x W bilinearly (B x K x t x h x w -> B x K x T x H x W trilinearly),
    align_corners=False, in fp32."""
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(maps.float(), size=tuple(size), mode=mode, align_corners=False)


def weighted_terms(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """The terms w_k A_k of the map sum_k w_k A_k: weights B x K, acts B x K x h x w -> B x K x h x w
    (a video's B x K x t x h x w likewise)."""
    return weights.reshape(*weights.shape, *[1] * (acts.dim() - 2)) * acts


def weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k per image: weights B x K, acts B x K x h x w -> B x h x w."""
    return weighted_terms(weights, acts).sum(dim=1)


@register_cam_method("gradcam", "Grad-CAM")
def gradcam(i: CamInputs) -> torch.Tensor:
    """w_k = mean_ij g_kij; map = ReLU(sum_k w_k A_k)."""
    return weighted_terms(i.grads.mean(dim=positions(i.acts)), i.acts)


@register_cam_method("gradcam++", "Grad-CAM++")
def gradcam_plus_plus(i: CamInputs) -> torch.Tensor:
    """alpha = g^2 / (2 g^2 + sum_ij A * g^3) (0 where the denominator is 0); w_k = sum_ij alpha ReLU(g)."""
    return weighted_terms(plus_plus_weights(i.grads, i.grads.pow(2), i.grads.pow(3), i.acts), i.acts)


def plus_plus_weights(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s weights from the first three derivatives of exp(Y_c) over exp(Y_c) (g, g^2, g^3):
    ``alpha = d2 / (2 d2 + sum_ij A * d3)`` (0 where the denominator is 0), ``w_k = sum_ij alpha ReLU(d1)``."""
    denominator = 2 * d2 + acts.sum(dim=positions(acts), keepdim=True) * d3
    alpha = torch.where(denominator != 0, d2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    return (alpha * torch.relu(d1)).sum(dim=positions(acts))


@register_cam_method("xgradcam", "XGrad-CAM")
def xgradcam(i: CamInputs) -> torch.Tensor:
    """w_k = sum_ij (A_kij / sum_ij A_kij) g_kij (0 for a channel summing to 0)."""
    total = i.acts.sum(dim=positions(i.acts), keepdim=True)
    share = torch.where(total != 0, i.acts / torch.where(total != 0, total, 1.0), 0.0)
    return weighted_terms((share * i.grads).sum(dim=positions(i.acts)), i.acts)


@register_cam_method("layercam", "Layer-CAM")
def layercam(i: CamInputs) -> torch.Tensor:
    """map = ReLU(sum_k ReLU(g_k) * A_k), element-wise."""
    return torch.relu(i.grads) * i.acts


@register_cam_method("hirescam", "HiResCAM")
def hirescam(i: CamInputs) -> torch.Tensor:
    """map = ReLU(sum_k g_k * A_k), element-wise."""
    return i.grads * i.acts


@register_cam_method("scorecam", "Score-CAM", needs_gradients=False, relu_after_upsampling=True, masks_input=True)
def scorecam(i: CamInputs) -> torch.Tensor:
    """The authors' definition (haofanwang/Score-CAM): each non-constant channel, upsampled to the
    input size and min-max normalized, masks the input; its weight is the softmax probability of
    the class for the masked input (constant channels weigh 0); map = ReLU(sum_k w_k up(A_k)), the
    ReLU taken after upsampling. ``batch_size`` masked inputs per forward pass; ``progress`` is told
    of each pass."""
    size = i.x.shape[2:]
    maps = []
    for image, image_acts, cls in zip(i.x, i.acts, i.classes):
        flat = image_acts.flatten(1)
        varying = torch.nonzero(flat.max(dim=1).values > flat.min(dim=1).values).flatten()
        weights = torch.zeros(len(image_acts), dtype=torch.float32, device=image_acts.device)
        for start in range(0, varying.numel(), i.batch_size):
            channels = varying[start:start + i.batch_size]
            masks = resized_linearly(image_acts[channels, None], size)
            masked = image[None] * minmax(masks[:, 0]).to(i.x.dtype)[:, None]
            weights[channels] = i.forward(masked).softmax(dim=1)[:, cls]
            if i.progress is not None:
                i.progress(len(channels))
        maps.append(weighted_terms(weights[None], image_acts[None])[0])
    return torch.stack(maps)


def first_component(matrix: torch.Tensor, sign: torch.Tensor | None = None, kernel: bool = False) -> torch.Tensor:
    """The projection of a (hw x K) matrix, centred per column, on its first principal component
    (hw values; zeros where the matrix is constant). With ``kernel``, the first component of kernel
    PCA with scikit-learn's defaults for ``KernelPCA(kernel="sigmoid")``: ``k(x, y) = tanh(<x, y> / K
    + 1)``, the kernel matrix double-centred, the projection ``sqrt(lambda_1) v_1``. The sign of a
    component is arbitrary: with ``sign`` (hw values) it is chosen so that the projection correlates
    positively with ``sign`` (Eigen-CAM's rule); without, left as computed."""
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    if not torch.any(centred != 0):
        return torch.zeros(matrix.shape[0], dtype=torch.float32, device=matrix.device)
    if kernel:
        gram = torch.tanh(centred.double() @ centred.double().T / matrix.shape[1] + 1.0)
        n = gram.shape[0]
        ones = torch.full((n, n), 1.0 / n, dtype=gram.dtype, device=gram.device)
        gram = gram - ones @ gram - gram @ ones + ones @ gram @ ones
        values, vectors = torch.linalg.eigh(gram)
        projection = (vectors[:, -1] * values[-1].clamp(min=0).sqrt()).float()
    else:
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = centred @ vh[0]
    if sign is not None and torch.dot(projection, sign - sign.mean()) < 0:
        projection = -projection
    return projection


def _per_image(values: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``project`` applied to each image's (hw x K) matrix of ``values`` (B x K x h x w) -> B x h x w
    (a video's B x K x t x h x w: its (thw x K) matrix -> B x t x h x w)."""
    return torch.stack([project(v.flatten(1).T).reshape(v.shape[1:]) for v in values])


@register_cam_method("eigencam", "Eigen-CAM", needs_gradients=False, class_independent=True, channel_terms=False)
def eigencam(i: CamInputs) -> torch.Tensor:
    """Per image, project the centred (hw x K) activations on their first principal component; the
    sign makes the map correlate positively with sum_k A_k; then ReLU. The class plays no part."""
    return _per_image(i.acts, lambda m: first_component(m, sign=m.sum(dim=1)))


@register_cam_method("gradcam-elementwise", "Grad-CAM Element-wise")
def gradcam_elementwise(i: CamInputs) -> torch.Tensor:
    """map = ReLU(sum_k ReLU(g_k * A_k)), element-wise (pytorch-grad-cam's ``GradCAMElementWise``)."""
    return torch.relu(i.grads * i.acts)


@register_cam_method("eigengradcam", "Eigen-Grad-CAM", channel_terms=False)
def eigengradcam(i: CamInputs) -> torch.Tensor:
    """The first principal component of the (hw x K) matrix g * A, signed by Eigen-CAM's rule (the
    map correlates positively with sum_k g_k A_k); then ReLU. pytorch-grad-cam's ``EigenGradCAM``
    leaves the sign to the SVD routine."""
    return _per_image(i.grads * i.acts, lambda m: first_component(m, sign=m.sum(dim=1)))


@register_cam_method("segeigencam", "Seg-Eigen-CAM", channel_terms=False)
def segeigencam(i: CamInputs) -> torch.Tensor:
    """The first principal component of |g| * A, flipped where its most negative value is larger in
    magnitude than its largest (Chung & Ying 2025, Eq. 13; pytorch-grad-cam's ``SegEigenCAM``); then ReLU."""
    def project(matrix: torch.Tensor) -> torch.Tensor:
        projection = first_component(matrix)
        return -projection if projection.min().abs() > projection.max().abs() else projection
    return _per_image(i.grads.abs() * i.acts, project)


@register_cam_method("kpcacam", "KPCA-CAM", needs_gradients=False, class_independent=True, channel_terms=False)
def kpcacam(i: CamInputs) -> torch.Tensor:
    """The first component of kernel PCA (sigmoid kernel, scikit-learn's defaults; see
    :func:`first_component`) of the centred (hw x K) activations, signed by Eigen-CAM's rule; then
    ReLU (pytorch-grad-cam's ``KPCA_CAM``). The class plays no part."""
    return _per_image(i.acts, lambda m: first_component(m, sign=m.sum(dim=1), kernel=True))


@register_cam_method("fem", "FEM", needs_gradients=False, class_independent=True)
def fem(i: CamInputs) -> torch.Tensor:
    """Feature Explanation Method (Fuad et al. 2020; pytorch-grad-cam's ``FEM``, k = 2): w_k = the
    share of positions where A_k exceeds its mean plus 2 standard deviations (population std);
    map = ReLU(sum_k w_k A_k). The class plays no part."""
    mean = i.acts.mean(dim=positions(i.acts), keepdim=True)
    std = i.acts.std(dim=positions(i.acts), keepdim=True, unbiased=False)
    weights = (i.acts > mean + FEM_K * std).float().mean(dim=positions(i.acts))
    return weighted_terms(weights, i.acts)


@register_cam_method("cam", "CAM")
def class_activation_map(i: CamInputs) -> torch.Tensor:
    """CAM (Zhou et al. 2016): w_k = the weight of class c for channel k in the one Linear layer that
    follows global average pooling of the layer; map = ReLU(sum_k w_k A_k). Refused (InputError)
    unless the logits are exactly that Linear layer applied to the spatial means of A."""
    if not feeds_gap_linear(i.acts, i.logits, i.classifier):
        raise _not_gap_linear(i.acts.shape[1])
    return weighted_terms(i.classifier.weight.float()[i.classes], i.acts)


def feeds_gap_linear(acts: torch.Tensor, logits: torch.Tensor, linear: nn.Linear | None) -> bool:
    """Whether the ``logits`` are ``linear`` (the model's last Linear layer) applied to the spatial
    means of the layer's activations ``acts`` (to float precision): global average pooling and one
    Linear layer follow the layer."""
    means = acts.mean(dim=positions(acts))
    if linear is None or linear.in_features != means.shape[1] or linear.out_features != logits.shape[1]:
        return False
    with torch.no_grad():
        predicted = F.linear(means, linear.weight.float(), None if linear.bias is None else linear.bias.float())
    return torch.allclose(predicted, logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max()) + 1e-5)


@register_cam_method("ablationcam", "Ablation-CAM", needs_gradients=False)
def ablationcam(i: CamInputs) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): w_k = (Y_c - Y_c^k) / |Y_c|, Y_c^k the class score with
    channel k of the layer set to zero; map = ReLU(sum_k w_k A_k). The ablated copies go through
    the network from the layer on, :data:`ABLATION_BATCH` at a time (the layers before it run once
    per batch, on the one image). pytorch-grad-cam's ``AblationCAM`` divides by Y_c (every sign
    flips when Y_c < 0) and ablates to (min - 1e7) where the layer has negative values: convscope
    keeps the paper's zero and the sign of the score's change. Where global average pooling and one
    Linear layer follow the layer (:func:`feeds_gap_linear`), zeroing channel k lowers Y_c by exactly
    ``w_ck mean(A_k)``: no copy has to run."""
    if feeds_gap_linear(i.acts, i.logits, i.classifier):
        drops = i.classifier.weight.float()[i.classes] * i.acts.mean(dim=positions(i.acts))
        scores = i.logits.gather(1, torch.tensor(i.classes, device=i.logits.device)[:, None]).abs()
        weights = torch.where(scores > 0, drops / torch.where(scores > 0, scores, 1.0), drops)
        return weighted_terms(weights, i.acts)
    maps = []
    for image, acts, cls, scores in zip(i.x, i.acts, i.classes, i.logits):
        channels = acts.shape[0]
        drops = torch.empty(channels, dtype=torch.float32, device=acts.device)
        for start in range(0, channels, ABLATION_BATCH):
            ablated = torch.arange(start, min(channels, start + ABLATION_BATCH), device=acts.device)
            keep = torch.ones(len(ablated), channels, 1, 1, dtype=acts.dtype, device=acts.device)
            keep[torch.arange(len(ablated), device=acts.device), ablated] = 0
            copies = acts[None] * keep  # one pass over memory: each copy with its channel zeroed
            drops[ablated] = scores[cls] - i.rerun(image[None], copies)[:, cls]
            if i.progress is not None:
                i.progress(len(ablated))
        score = scores[cls].abs()
        weights = drops / score if score > 0 else drops
        maps.append(weighted_terms(weights[None], acts[None])[0])
    return torch.stack(maps)


@register_cam_method("fullgrad", "FullGrad", needs_gradients=False, source="the input and every bias",
                     channel_terms=False)
def fullgrad(i: CamInputs) -> torch.Tensor:
    """FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam's ``FullGrad`` and the authors' code
    compute it, at the input's resolution (the layer plays no part): the sum of ``|x * dY_c/dx|`` for
    each input channel and, for every conv and BatchNorm with a bias b, ``sum_k |b_k * dY_c/dO_k|``
    (O the layer's output), each map scaled to [0, 1] on its own (:func:`minmax_channels`) and
    upsampled bilinearly to the input. Upsampling is linear, so each layer's channels are summed
    before it."""
    size = i.x.shape[2:]
    input_grad, biases = i.gradients_everywhere()
    total = minmax_channels((input_grad * i.x.float()).abs()).sum(dim=1)
    for bias, grad in biases.values():
        terms = minmax_channels((weighted_terms(bias[None], grad)).abs()).sum(dim=1)
        total = total + resized_linearly(terms[:, None], size)[:, 0]
    return total


def minmax_channels(maps: torch.Tensor, eps: float = FULLGRAD_EPS) -> torch.Tensor:
    """Each channel of B x K x h x w scaled as the peers scale a map (FullGrad's terms, the Score-CAM
    family's masks, maps before fusing): ``(m - min) / (max - min + eps)`` (a constant channel
    becomes zero)."""
    shifted = maps - maps.amin(dim=positions(maps), keepdim=True)
    return shifted / (shifted.amax(dim=positions(maps), keepdim=True) + eps)


@register_cam_method("finercam", "FinerCAM", target="finer")
def finercam(i: CamInputs) -> torch.Tensor:
    """FinerCAM (pytorch-grad-cam's ``FinerCAM`` over Grad-CAM): Grad-CAM of the target ``finer`` --
    the class score against the probability-weighted scores of the 3 classes nearest it (see
    :func:`convscope.techniques.targets.finer_score`), so the map shows what sets the class apart
    from the ones it is most easily confused with."""
    return weighted_terms(i.grads.mean(dim=positions(i.acts)), i.acts)


@register_cam_method("shapleycam", "ShapleyCAM", needs_hessian=True)
def shapleycam(i: CamInputs) -> torch.Tensor:
    """ShapleyCAM (Cai 2025; pytorch-grad-cam's ``ShapleyCAM``): w_k = mean_ij (g - H A / 2)_kij, H the
    Hessian of Y_c at the layer (its product with A from a double backward); map = ReLU(sum_k w_k
    A_k). Where the network after the layer is piecewise linear and the target a logit, H A = 0 and
    the map is Grad-CAM's (``evaluate`` shows them as one row)."""
    return weighted_terms((i.grads - 0.5 * i.hvp).mean(dim=positions(i.acts)), i.acts)


@register_cam_method("smoothgradcam++", "Smooth Grad-CAM++", samples=SAMPLED_CAM_METHODS["smoothgradcam++"],
                     seeded=True)
def smooth_gradcam_plus_plus(i: CamInputs) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza et al. 2019; torchcam's ``SmoothGradCAMpp``): Grad-CAM++ with each
    derivative the mean over ``samples`` copies of the input with Gaussian noise (std
    :data:`SMOOTHGRADCAMPP_STD`): ``d_p = mean_m g_m^p``, ``alpha = d2 / (2 d2 + sum_ij A * d3)``,
    ``w_k = sum_ij alpha ReLU(d1)``, map = ReLU(sum_k w_k A_k) with A the image's own activations.
    torchcam takes ``ReLU`` of the last copy's gradient alone, the map from the last copy's
    activations, and ``sum_ij A d3`` where the paper has ``sum_ij A`` times ``d3``."""
    d1 = d2 = d3 = torch.zeros_like(i.acts)
    for _ in range(i.samples):
        g = i.pass_on(i.x + i.noise(i.x.shape, SMOOTHGRADCAMPP_STD).to(i.x.dtype)).grads
        d1, d2, d3 = d1 + g, d2 + g.pow(2), d3 + g.pow(3)
        if i.progress is not None:
            i.progress(1)
    return weighted_terms(plus_plus_weights(d1 / i.samples, d2 / i.samples, d3 / i.samples, i.acts), i.acts)


@register_cam_method("sscam", "SS-CAM", needs_gradients=False, samples=SAMPLED_CAM_METHODS["sscam"], seeded=True,
                     masks_input=True)
def sscam(i: CamInputs) -> torch.Tensor:
    """SS-CAM (Wang et al. 2020; torchcam's ``SSCAM``): each channel, min-max normalized at the
    layer's size and upsampled to the input's, plus Gaussian noise (std :data:`SSCAM_STD`, one
    draw per copy and channel, at the input's size), masks the input; ``w = softmax_k`` of the mean
    over ``samples`` copies of the class score's increase over the image's; map = ReLU(sum_k w_k A_k)."""
    return _score_increases(i, lambda masks, _: masks + i.noise(masks.shape, SSCAM_STD))


@register_cam_method("iscam", "IS-CAM", needs_gradients=False, samples=SAMPLED_CAM_METHODS["iscam"], masks_input=True)
def iscam(i: CamInputs) -> torch.Tensor:
    """IS-CAM (Naidu et al. 2020; torchcam's ``ISCAM``): as SS-CAM without noise, the masked input
    scaled by ``s / samples`` for s = 1..samples, the integral from the black image to the masked
    one; ``w = softmax_k`` of the mean increase. torchcam accumulates the factors (``coeff +=
    s / N``), scaling the last copy by (N + 1) / 2, past the image itself (see :func:`iscam_factor`)."""
    return _score_increases(i, lambda masks, copy: masks * iscam_factor(copy, i.samples), random=False)


def iscam_factor(copy: int, samples: int) -> float:
    """IS-CAM's factor for copy ``copy`` (0-based) of ``samples``: (copy + 1) / samples."""
    return (copy + 1) / samples


def _score_increases(i: CamInputs, masks_of_copy: Callable[[torch.Tensor, int], torch.Tensor],
                     random: bool = True) -> torch.Tensor:
    """torchcam's Score-CAM family: each channel min-max normalized at the layer's size (eps 1e-8)
    and upsampled to the input; for each of ``samples`` copies, ``masks_of_copy(masks, copy)`` masks
    the input, ``batch_size`` masked inputs a pass; the weights are the softmax over channels of the
    mean increase of the class score over the image's own; returns the terms w_k A_k. Without
    ``random`` noise, a constant channel's mask is zero in every copy: the black image's score,
    computed once, stands for all of them."""
    size = i.x.shape[2:]
    low = minmax_channels(i.acts, TORCHCAM_EPS)
    increases = torch.zeros(i.acts.shape[:2], dtype=torch.float32, device=i.acts.device)
    for row, (image, cls) in enumerate(zip(i.x, i.classes)):
        baseline = i.logits[row, cls]
        channels = torch.arange(low.shape[1], device=low.device)
        if not random:
            constant = low[row].flatten(1).amax(dim=1) == 0
            if bool(constant.any()):
                increases[row, constant] = i.forward(torch.zeros_like(image[None]))[0, cls] - baseline
                channels = channels[~constant]
        for copy in range(i.samples):
            for start in range(0, len(channels), i.batch_size):
                chunk = channels[start:start + i.batch_size]
                masks = resized_linearly(low[row, chunk, None], size)
                masked = image[None] * masks_of_copy(masks, copy).to(i.x.dtype)
                increases[row, chunk] += (i.forward(masked)[:, cls] - baseline) / i.samples
                if i.progress is not None:
                    i.progress(len(chunk))
    return weighted_terms(torch.softmax(increases, dim=1), i.acts)


def _not_gap_linear(channels: int) -> InputError:
    return InputError(f"method cam: the layer ({channels} channels) does not feed global average pooling and one "
                      "Linear layer, which CAM's weights come from; use gradcam (equal to CAM where it applies)",
                      parameter="method")


# -- normalization -------------------------------------------------------------------------------------
def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalization to [0, 1]; all-zero stays zero, constant positive becomes ones."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    spread = high - low
    normalized = torch.where(spread > 0, (flat - low) / torch.where(spread > 0, spread, 1.0),
                             (high > 0).to(flat.dtype).expand_as(flat))
    return normalized.view_as(maps)


def upsample(maps: torch.Tensor, size: Sequence[int], relu_after: bool = False) -> torch.Tensor:
    """B x h x w -> B x H x W, bilinear with align_corners=False (a video's B x t x h x w -> B x T x H x W,
    trilinear), then ReLU with ``relu_after``, then min-max per map."""
    resized = resized_linearly(maps[:, None], size)[:, 0]
    return minmax(torch.relu(resized) if relu_after else resized)


# -- running the model -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CamSettings:
    """A map's settings, checked by :func:`cam_settings`: the layer, the method, the precision;
    ``aug_smooth`` (the mean over :data:`AUGMENTATIONS`), ``eigen_smooth`` (the first principal
    component of the map's channel terms instead of their sum), the ``seed`` and number of
    ``samples`` of a sampled method, and ``fuse_with``: more layers whose maps are fused with the
    layer's, by ``fuse`` (:data:`~convscope.catalog.FUSE_MODES`, see :func:`fuse_maps`)."""

    layer: str
    method: CamMethod
    precision: str = MAPS_PRECISION
    aug_smooth: bool = False
    eigen_smooth: bool = False
    seed: int = 0
    samples: int | None = None
    fuse_with: tuple[str, ...] = ()
    fuse: str = FUSE_MODES[0]

    @property
    def copies(self) -> int:
        """The copies a sampled method draws: ``samples``, or the method's default (0 for the others)."""
        return self.method.samples if self.samples is None else self.samples

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer whose map makes the result: the layer, then those it is fused with."""
        return (self.layer, *self.fuse_with)

    def passes_per_image(self, model: Model) -> tuple[int, str] | None:
        """Where a method runs the model once per channel or copy: the passes one map costs (at
        most: Score-CAM and IS-CAM skip constant channels) and, in words, how they add up; else None."""
        method = self.method
        if method.masks_input:
            channels = sum(model.layer(name).shape[0] for name in self.layers)
            copies = max(1, self.copies)
            how = f"{copies} {'copy' if copies == 1 else 'copies'} x {channels:,} channels" if self.copies \
                else f"{channels:,} channels"
            return copies * channels, f"{how} of masked inputs"
        if method.samples:
            per_layer = f" x {len(self.layers)} layers" if self.fuse_with else ""
            return self.copies * len(self.layers), f"{self.copies} noisy copies{per_layer}, each with a backward pass"
        return None


#: ``aug_smooth``'s augmentations, as pytorch-grad-cam's: each (horizontal flip, factor the model
#: input is multiplied by).
AUGMENTATIONS = tuple((flip, factor) for flip in (False, True) for factor in (1.0, 0.9, 1.1))


def cam_settings(model: Model, layer: str | Sequence[str] | None = None, method: str = DEFAULT_METHOD,
                 precision: str = MAPS_PRECISION, aug_smooth: bool = False, *, eigen_smooth: bool = False,
                 seed: int = 0, samples: int | None = None, fuse: str | None = None) -> CamSettings:
    """The layer (default: the last feature map before global pooling) or several layers to fuse,
    the method and its options, each checked here, once, where the user's values enter."""
    chosen = cam_method(method)
    names = [layer] if layer is None or isinstance(layer, str) else list(layer)
    if not names:
        raise InputError("layer: no layer given", parameter="layer")
    check_fuse(fuse, len(names))
    check_samples(method, samples)
    layers = [cam_layer(model, name) for name in names]
    repeated = sorted({name for name in layers if layers.count(name) > 1})
    if repeated:
        raise InputError(f"layer {repeated[0]}: given twice", parameter="layer")
    if len(layers) > 1 and chosen.source:
        raise InputError(f"method {chosen.name}: its map comes from {chosen.source}, not from a layer, so there "
                         "is nothing to fuse; give one layer", parameter="method")
    if eigen_smooth and not chosen.channel_terms:
        raise InputError(f"eigen_smooth: {chosen.title}'s map is not a sum over channels, so it has no terms to "
                         "take the principal component of", parameter="eigen_smooth")
    return CamSettings(layers[0], chosen, check_precision(precision, model.device), bool(aug_smooth),
                       bool(eigen_smooth), int(seed), None if samples is None else int(samples),
                       tuple(layers[1:]), FUSE_MODES[0] if fuse is None else fuse)


def compute_cam(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
                classes: int | str | Sequence[int | str] | None = None, layer: str | Sequence[str] | None = None,
                method: str = DEFAULT_METHOD, precision: str = MAPS_PRECISION,
                scorecam_batch: int | None = None, progress: Callable[[int], None] | None = None,
                watch: Mapping[str, Callable[[torch.Tensor], None]] | None = None,
                aug_smooth: bool = False, **options: Any) -> CamResult:
    """Class activation maps with everything around them (see :class:`CamResult`). ``aug_smooth``:
    each map the mean of the maps of the image flipped or not and multiplied by 0.9, 1 and 1.1
    (:data:`AUGMENTATIONS`, each map put back in place and min-max normalized, then the mean
    normalized again), for the classes of the image as it is. ``options``: ``eigen_smooth``,
    ``seed``, ``samples`` and ``fuse`` (with several ``layer`` values), see :func:`cam_settings`.
    ``scorecam_batch``: masked inputs per forward pass of the methods that mask the input (default
    by device, :data:`SCORECAM_BATCH`); ``progress`` is called with the number of masked inputs (or
    noisy copies) after each of their passes; ``watch`` (layer name -> function) hands the functions
    those layers' outputs in the pass that makes the maps.

    Everything is resolved before any hook is registered (the layer, the class labels); a layer the
    input never reaches raises :class:`~convscope.errors.LayerError`, whatever the method.
    """
    model = as_model(model, x)
    return cam_maps(model, as_input(model, x), cam_settings(model, layer, method, precision, aug_smooth, **options),
                    classes, scorecam_batch, progress, watch)


def cam_maps(model: Model, x: torch.Tensor, settings: CamSettings,
             classes: int | str | Sequence[int | str] | None = None, scorecam_batch: int | None = None,
             progress: Callable[[int], None] | None = None,
             watch: Mapping[str, Callable[[torch.Tensor], None]] | None = None) -> CamResult:
    """:func:`compute_cam` with settings already checked by :func:`cam_settings` (the plans, the
    evaluation and dataset runs check once, then make many maps)."""
    if settings.aug_smooth:
        return _augmentation_smoothed(model, x, settings, classes, scorecam_batch, progress, watch)
    if settings.fuse_with:
        return _fused(model, x, settings, classes, scorecam_batch, progress, watch)
    method = settings.method
    scorecam_batch = default_scorecam_batch(model.device) if scorecam_batch is None else scorecam_batch
    check_at_least("scorecam_batch", scorecam_batch, 1)
    x, fixed, _ = batch_for_classes(model, x, classes)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with computing_in(model.device, precision):
            return model.scores(prepare_input(inputs)).float()

    with evaluating(model.module):
        precision, reason = choose_precision(
            settings.precision, model.module, model.device, ("cam", settings.layer, method.needs_gradients,
                                                             tuple(x.shape)),
            lambda option: layer_pass(model, x, settings.layer, option, fixed, method.needs_gradients,
                                      target=method.target, hessian=method.needs_hessian))
        found = layer_pass(model, x, settings.layer, precision, fixed, method.needs_gradients, watch, method.target,
                           method.needs_hessian)
        acts, logits, chosen = found.acts, found.logits, found.classes
        with torch.no_grad():
            terms = method.compute(CamInputs(
                acts, found.grads, x, logits, chosen, forward, scorecam_batch, progress, last_linear(model.module),
                lambda image, replacement: replaced_pass(model, image, settings.layer, replacement, precision),
                lambda: full_gradients(model, x, chosen, precision), found.hvp, settings.copies,
                torch.Generator().manual_seed(settings.seed),
                lambda inputs: layer_pass(model, inputs, settings.layer, precision, chosen, True,
                                          target=method.target)))
            raw = map_of_terms(terms, settings.eigen_smooth, method.channel_terms)
    low_res = torch.relu(raw).float()
    maps = upsample(raw if method.relu_after_upsampling else low_res, x.shape[2:],
                    relu_after=method.relu_after_upsampling)
    return CamResult(maps, low_res, chosen, settings.layer, method.name, logits, precision, reason)


def map_of_terms(terms: torch.Tensor, eigen_smooth: bool = False, channel_terms: bool = True) -> torch.Tensor:
    """A method's map before its final ReLU (B x h x w) from what it computed: the sum of its
    channel terms (B x K x h x w) or, with ``eigen_smooth`` (pytorch-grad-cam's option), their first
    principal component, signed to correlate positively with their sum (Eigen-CAM's rule; the peer
    leaves the sign to the SVD routine). A method without ``channel_terms`` computed the map
    (B x h x w) itself: it is returned as it is."""
    if not channel_terms:
        return terms
    if eigen_smooth:
        return _per_image(terms, lambda m: first_component(m, sign=m.sum(dim=1)))
    return terms.sum(dim=1)


def fuse_maps(results: Sequence[CamResult], fuse: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused ``(maps, low_res)`` of one map per layer (each B x h_l x w_l after its ReLU):
    ``mean`` as pytorch-grad-cam fuses its target layers -- each map min-max normalized at its own
    size (:func:`minmax_channels`, pytorch-grad-cam's eps), upsampled to the input, then the mean,
    normalized again (``low_res`` is then at the input's size); ``max`` as torchcam's
    ``LayerCAM.fuse_cams`` -- each map normalized (torchcam's eps), scaled by ``tanh(2 m)`` (Jiang et
    al. 2021, Eq. 9), upsampled to the largest map's size, then the element-wise maximum, which is
    upsampled to the input and normalized like any map."""
    check_choice("fuse", fuse, FUSE_MODES)
    if fuse == "mean":
        fused = minmax(torch.stack([_resized(_scaled(r.low_res, FULLGRAD_EPS), size) for r in results]).mean(dim=0))
        return fused, fused
    largest = tuple(max(sizes) for sizes in zip(*(r.low_res.shape[1:] for r in results)))
    fused = torch.stack([_resized(torch.tanh(2 * _scaled(r.low_res, TORCHCAM_EPS)), largest)
                         for r in results]).amax(dim=0)
    return upsample(fused, size), fused


def _scaled(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """Each map (B x h x w) as the peers scale it before fusing (:func:`minmax_channels`)."""
    return minmax_channels(maps[:, None], eps)[:, 0]


def _resized(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B x h x w -> B x H x W, linearly with align_corners=False (unchanged where the size is)."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    return resized_linearly(maps[:, None], size)[:, 0]


def _fused(model: Model, x: torch.Tensor, settings: CamSettings,
           classes: int | str | Sequence[int | str] | None, scorecam_batch: int | None,
           progress: Callable[[int], None] | None,
           watch: Mapping[str, Callable[[torch.Tensor], None]] | None) -> CamResult:
    """Several layers: a map per layer (one pass each; the first fixes the classes), then
    :func:`fuse_maps`. The result's layer names them all, joined by `` + ``."""
    results = []
    for layer in settings.layers:
        one = replace(settings, layer=layer, fuse_with=())
        results.append(cam_maps(model, x, one, classes if not results else results[0].classes, scorecam_batch,
                                progress, watch if not results else None))
    first = results[0]
    maps, low_res = fuse_maps(results, settings.fuse, x.shape[2:])
    return CamResult(maps, low_res, first.classes, " + ".join(settings.layers), first.method, first.logits,
                     first.precision, first.precision_reason)


def _augmentation_smoothed(model: Model, x: torch.Tensor, settings: CamSettings,
                           classes: int | str | Sequence[int | str] | None, scorecam_batch: int | None,
                           progress: Callable[[int], None] | None,
                           watch: Mapping[str, Callable[[torch.Tensor], None]] | None) -> CamResult:
    """``aug_smooth``: the first augmentation is the image as it is, which fixes the classes and the
    logits; every map is flipped back and normalized, then averaged and normalized again."""
    plain = replace(settings, aug_smooth=False)
    results = []
    for flip, factor in AUGMENTATIONS:
        augmented = (x.flip(-1) if flip else x) * factor
        result = cam_maps(model, augmented, plain, classes if not results else results[0].classes, scorecam_batch,
                          progress, watch if not results else None)
        if flip:
            result.maps, result.low_res = result.maps.flip(-1), result.low_res.flip(-1)
        results.append(result)
    first = results[0]
    maps = minmax(torch.stack([r.maps for r in results]).mean(dim=0))
    low_res = minmax(torch.stack([minmax(r.low_res) for r in results]).mean(dim=0))
    return CamResult(maps, low_res, first.classes, first.layer, first.method, first.logits, first.precision,
                     first.precision_reason)


def cam(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
        classes: int | str | Sequence[int | str] | None = None, layer: str | Sequence[str] | None = None,
        method: str = DEFAULT_METHOD, precision: str = MAPS_PRECISION, **options: Any) -> torch.Tensor:
    """Class activation maps, B x H x W in [0, 1] at the input size.

    ``classes``: one class (index or label) for every image, a list with one per image, for a
    single image a list of several classes (one map each), or None for each image's top-1
    prediction; a list of another length is an error. ``layer``: default the last spatial layer before the
    global pooling. ``method``: one of :data:`METHODS`. ``precision``: ``fp32`` (TF32 off), ``tf32``,
    ``bf16`` (autocast with channels_last input; the maps are computed in fp32) or ``auto`` (the
    fastest of them measured on this work, see :mod:`convscope.precision`).
    ``model`` may be a plain module: its input size is then the tensor's. ``layer`` may name several
    layers, whose maps are fused; ``options``: ``aug_smooth``, ``eigen_smooth``, ``seed``, ``samples``,
    ``fuse`` (see :func:`compute_cam`).
    """
    return compute_cam(model, x, classes, layer, method, precision, **options).maps
