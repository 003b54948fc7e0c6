"""Benchmark: feature pictures judged by networks that did not make them.

Class pictures of the default model (EfficientNet-Lite0, ImageNet weights) for ``--classes`` ImageNet
classes spread evenly over the label list, made by every convscope recipe (``accentuate`` from the
``chelsea`` photo), by Lucent 0.1.8's ``render_vis`` with its defaults (``objectives.channel("_fc",
c)``: 512 steps of Adam at 128 px, its standard transforms, pictures upsampled to 224 for the model)
and by Horama 0.3.0's ``maco`` (the authors' code, at convscope's maco steps and size, its other
defaults; the model's normalized range as its ``values_range``), one run, the same seeds. The peers
draw one picture at a time (Lucent's 512 steps at 224 px take 36-53 s a picture here), so they draw
every k-th class (``--peer-classes``, 25, or all of them), and every recipe is measured on those
classes too:

* transferability: each picture classified by EfficientNet-Lite1 and Lite2 (each at its own input
  size): the share whose intended class is in their top-5 and top-1;
* activation: the maker's logit of the class on the picture (at the picture's size);
* robustness: the logit on 32 random jitter/scale/rotation views of the picture relative to the
  picture itself (the mean over views and pictures of the logit, over the mean on the pictures; both
  at the picture's size);
* time per picture (this machine, alone);
* faithfulness: convscope's ``maco`` against Horama's on the first ``--faithful`` classes (same
  steps, size, magnitude), and ``accentuate`` against faccent 1.0.3 on ``--accent-units`` classes
  (same photo, steps, size, regularization layer and faccent's 16 box crops per step, where
  convscope's default takes 4), with faccent's alpha 1 and with convscope's default 0.1.

Writes ``--out``/results.json and the grid ``docs/feature_pictures.png`` (one row per recipe, the same
8 classes). Peers install outside the venv (they pin old packages):
    .venv/bin/pip install --target .peers --no-deps torch-lucent==0.1.8 kornia==0.4.1 horama==0.3.0 \\
        faccent==1.0.3 einops decorator ipywidgets imageio
    .venv/bin/pip install --target .peers ipython    # Lucent imports IPython.display
    PYTHONPATH=.peers .venv/bin/python benchmarks/feature_pictures.py
The peers on all 100 classes (the issue's comparison; Lucent alone takes about 90 minutes here):
    PYTHONPATH=.peers .venv/bin/python benchmarks/feature_pictures.py --peer-classes 100 --recipes lucid \\
        --long-steps 512 --peers lucent,horama
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import convscope
from convscope.catalog import RECIPE_STEPS
from convscope.hooks import evaluating
from convscope.presentation.drawing import picture_grid
from convscope.samples import sample_array
from convscope.techniques import filters as filters_technique
from convscope.techniques.filter_recipes import RECIPES, generators, natural_magnitude, random_transform
from convscope.techniques.filters import optimize_filters, photo_picture
from convscope.techniques.units import LOGITS, accentuation_layer

warnings.filterwarnings("ignore")
#: faccent's box crops per step (its ``nb_transforms``).
FACCENT_VIEWS = 16
ROOT = Path(__file__).resolve().parents[1]


def seen_logits(model: convscope.Model, pictures: torch.Tensor, size: int | None = None,
                batch: int = 25) -> torch.Tensor:
    """The model's logits for pictures (N x 3 x S x S, RGB in [0, 1]) resized to ``size`` (None: its
    input size)."""
    out = []
    shape = model.input_size if size is None else (size, size)
    with evaluating(model.module), torch.no_grad():
        for start in range(0, len(pictures), batch):
            x = F.interpolate(pictures[start:start + batch].float(), size=shape, mode="bilinear",
                              antialias=True, align_corners=False)
            out.append(model.module(model.preprocessing.normalize(x)).float())
    return torch.cat(out)


def judged(judge: convscope.Model, pictures: torch.Tensor, classes: list[int]) -> tuple[float, float, list[int]]:
    """The share of pictures whose intended class is the judge's top-1, and in its top-5; and the
    classes not in its top-5."""
    ranked = seen_logits(judge, pictures).topk(5, dim=1).indices
    target = torch.tensor(classes)[:, None]
    in_top5 = (ranked == target).any(1)
    missed = [c for c, hit in zip(classes, in_top5.tolist()) if not hit]
    return float((ranked[:, :1] == target).any(1).float().mean()), float(in_top5.float().mean()), missed


def robustness(model: convscope.Model, pictures: torch.Tensor, classes: list[int], views: int = 32) -> float:
    """Mean logit over ``views`` random views (Lucid's jitter, scale, rotation) over the mean logit on
    the pictures themselves, each seen at the pictures' size."""
    index, size = torch.arange(len(classes)), pictures.shape[-1]
    plain = seen_logits(model, pictures, size)[index, classes].mean()
    total = 0.0
    for view in range(views):
        gens = generators(50_000 + view, classes, torch.device("cpu"))
        with torch.no_grad():
            moved = random_transform(pictures.float(), gens)
        total += float(seen_logits(model, moved, size)[index, classes].mean())
    return total / views / float(plain)


def lucent_pictures(model: convscope.Model, classes: list[int], size: int) -> torch.Tensor:
    """Lucent's render_vis with its defaults, all classes in one batch (one picture each)."""
    from lucent.optvis import objectives, param, render, transform

    module = copy.deepcopy(model.module).eval()  # Lucent leaves its hooks on the module it is given
    normalize = model.preprocessing.normalize
    torch.manual_seed(0)
    objective = objectives.Objective.sum([objectives.channel("_fc", c, batch=i) for i, c in enumerate(classes)])
    images = render.render_vis(module, objective, param_f=lambda: param.image(size, batch=len(classes)),
                               transforms=[*transform.standard_transforms, normalize], preprocess=False,
                               show_image=False, progress=False)
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float()


def horama_pictures(model: convscope.Model, classes: list[int], size: int, steps: int) -> torch.Tensor:
    """Horama's maco, one class per call (its API), with convscope's magnitude for ``size`` px."""
    import horama.maco_fv as maco_fv

    mean = torch.tensor(model.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(3, 1, 1)
    low, high = float(((0 - mean) / std).min()), float(((1 - mean) / std).max())
    module = copy.deepcopy(model.module).eval().requires_grad_(False)
    pictures = []
    with tempfile.TemporaryDirectory() as folder:
        maco_fv.MACO_SPECTRUM_FILENAME = str(Path(folder) / "spectrum.npy")
        np.save(maco_fv.MACO_SPECTRUM_FILENAME, natural_magnitude(size).numpy())
        for c in classes:
            torch.manual_seed(c)
            image, _ = maco_fv.maco(lambda x, c=c: module(x)[:, c].mean(), total_steps=steps, image_size=size,
                                    model_input_size=size, values_range=(low, high), device="cpu")
            pictures.append((image.detach() * std + mean).clamp(0, 1))
    return torch.stack(pictures)


def faccent_pictures(model: convscope.Model, classes: list[int], photo: torch.Tensor, size: int, steps: int,
                     reg_layer: str, alpha: float) -> torch.Tensor:
    """faccent's render_vis from ``photo`` (3 x S x S), its defaults but the size, steps and layer."""
    from faccent import objectives, param, render, transform

    module = copy.deepcopy(model.module).eval()
    pictures = []
    for c in classes:
        torch.manual_seed(c)
        parameterizer = param.fourier(init_img=photo.clone(), img_size=(size, size), device=torch.device("cpu"))
        transforms = [*transform.standard_box_transforms, transform.resize((size, size)),
                      model.preprocessing.normalize]
        images, *_ = render.render_vis(module, objectives.channel("_fc", c, batch=0), parameterizer=parameterizer,
                                       transforms=transforms, preprocess=False, img_size=(size, size),
                                       model_input_size=(size, size), out_thresholds=(0, steps),
                                       inline_thresholds=[], progress=False,
                                       accent_reg_layer=reg_layer.replace(".", "_"), accent_reg_alpha=alpha)
        pictures.append(images[-1][0])
    return torch.stack(pictures)


def measure(name: str, pictures: torch.Tensor, seconds: float, classes: list[int], maker, judges) -> dict:
    logits = seen_logits(maker, pictures, pictures.shape[-1])[torch.arange(len(classes)), classes]
    row = {"recipe": name, "seconds_per_picture": round(seconds / len(classes), 3),
           "logit": round(float(logits.mean()), 2), "robustness": round(robustness(maker, pictures, classes), 3)}
    for judge_name, judge in judges.items():
        top1, top5, missed = judged(judge, pictures, classes)
        row[f"{judge_name}_top1"], row[f"{judge_name}_top5"] = round(top1, 3), round(top5, 3)
        row[f"{judge_name}_missed_top5"] = missed
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--faithful", type=int, default=16)
    parser.add_argument("--peer-classes", type=int, default=25,
                        help="Lucent and Horama draw every k-th class, this many (one picture at a time is slow)")
    parser.add_argument("--accent-units", type=int, default=4)
    parser.add_argument("--long-steps", type=int, default=256, help="lucid again with this many steps (0: not)")
    parser.add_argument("--peers", default="lucent,horama,faccent",
                        help="the peers to run (Lucent's transfer, Horama's and faccent's faithfulness)")
    parser.add_argument("--skip-peers", action="store_true", help="run no peer (--peers '')")
    parser.add_argument("--recipes", default="lucid,classic,maco,accentuate",
                        help="convscope's recipes to run ('': none, the peers alone)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "feature_pictures"))
    parser.add_argument("--grid", default=str(ROOT / "docs" / "feature_pictures.png"))
    args = parser.parse_args()
    peers = set() if args.skip_peers else {name for name in args.peers.split(",") if name}
    torch.set_grad_enabled(True)
    maker = convscope.load_model("efficientnet_lite0")
    judges = {"lite1": convscope.load_model("efficientnet_lite1"), "lite2": convscope.load_model("efficientnet_lite2")}
    n = args.classes
    classes = [round(i * 999 / (n - 1)) for i in range(n)] if n > 1 else [0]
    photo = photo_picture(sample_array("chelsea"), args.size)
    peer_positions = list(range(0, n, max(1, n // args.peer_classes)))[:args.peer_classes]
    peer_classes = [classes[i] for i in peer_positions]
    grid_classes = peer_classes[:: max(1, len(peer_classes) // 8)][:8]
    rows, peer_rows, shown = [], [], {}

    runs = [(name, {"photo": photo} if name == "accentuate" else {}) for name in args.recipes.split(",") if name]
    if args.long_steps:
        runs.append((f"lucid {args.long_steps} steps", {"method": "lucid", "steps": args.long_steps}))
    made = {}
    for name, options in runs:
        options = {"method": name, **options}
        start = time.perf_counter()
        result = optimize_filters(maker, LOGITS, classes, size=args.size, precision="fp32", **options)
        made[name] = result
        seconds = time.perf_counter() - start
        rows.append(measure(name, result.images, seconds, classes, maker, judges))
        peer_rows.append(measure(name, result.images[peer_positions], seconds * len(peer_classes) / n, peer_classes,
                                 maker, judges))
        shown[name] = result.images[[classes.index(c) for c in grid_classes]]

    faithful = {}
    if "lucent" in peers:
        start = time.perf_counter()
        pictures = lucent_pictures(maker, peer_classes, args.size)
        peer_rows.append(measure("Lucent render_vis (512 steps)", pictures, time.perf_counter() - start, peer_classes,
                                 maker, judges))
        shown["Lucent"] = pictures[[peer_classes.index(c) for c in grid_classes]]

    if "horama" in peers:
        steps = RECIPE_STEPS["maco"]
        start = time.perf_counter()
        pictures = horama_pictures(maker, peer_classes, args.size, steps)
        peer_rows.append(measure(f"Horama maco ({steps} steps)", pictures, time.perf_counter() - start,
                                 peer_classes, maker, judges))
        shown["Horama maco"] = pictures[[peer_classes.index(c) for c in grid_classes]]
        count, size = min(args.faithful, len(peer_classes)), args.size
        first, units = torch.arange(count), peer_classes[:count]
        if "maco" in made:
            ours_pictures = made["maco"].images[peer_positions[:count]]
        else:
            ours_pictures = optimize_filters(maker, LOGITS, units, size=size, method="maco", precision="fp32").images
        ours = seen_logits(maker, ours_pictures, size)[first, units]
        theirs = seen_logits(maker, pictures[:count], size)[first, units]
        faithful["maco_vs_horama"] = {"units": count, "ours_mean": round(float(ours.mean()), 2),
                                      "theirs_mean": round(float(theirs.mean()), 2),
                                      "ours_at_least": int((ours >= theirs).sum())}

    if "faccent" in peers:
        units = grid_classes[:args.accent_units]
        layer = accentuation_layer(maker, LOGITS).module
        steps = RECIPE_STEPS["accentuate"]
        default = RECIPES["accentuate"]
        for alpha in (1.0, filters_technique.ACCENTUATION_ALPHA):
            saved = filters_technique.ACCENTUATION_ALPHA
            filters_technique.ACCENTUATION_ALPHA = alpha
            RECIPES["accentuate"] = dataclasses.replace(default, views=FACCENT_VIEWS)  # faccent's 16 crops
            try:
                ours = optimize_filters(maker, LOGITS, units, size=args.size, method="accentuate", photo=photo,
                                        precision="fp32")
            finally:
                filters_technique.ACCENTUATION_ALPHA = saved
                RECIPES["accentuate"] = default
            start = time.perf_counter()
            theirs = faccent_pictures(maker, units, photo, args.size, steps, layer, alpha)
            faccent_seconds = time.perf_counter() - start
            index = torch.arange(len(units))
            ours_logits = seen_logits(maker, ours.images, args.size)[index, units]
            theirs_logits = seen_logits(maker, theirs, args.size)[index, units]
            faithful[f"accentuate_vs_faccent_alpha_{alpha:g}"] = {
                "units": len(units), "layer": layer, "views": FACCENT_VIEWS,
                "ours_mean": round(float(ours_logits.mean()), 2),
                "theirs_mean": round(float(theirs_logits.mean()), 2),
                "ours_at_least": int((ours_logits >= theirs_logits).sum()),
                "ours_distance_to_photo": round(float((ours.images - photo).abs().mean()), 4),
                "theirs_distance_to_photo": round(float((theirs - photo).abs().mean()), 4),
                "faccent_seconds_per_picture": round(faccent_seconds / len(units), 2)}
            if alpha == 1.0:
                shown["faccent (alpha 1)"] = theirs
    if faithful:
        print(json.dumps(faithful), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"classes": classes, "peer_classes": peer_classes,
                                                  "grid_classes": grid_classes, "size": args.size, "rows": rows,
                                                  "peer_rows": peer_rows, "faithful": faithful}, indent=2))
    labels = [maker.labels[c] for c in grid_classes]
    grid = picture_grid(torch.cat([pictures[:len(grid_classes)] for pictures in shown.values()]),
                        columns=len(grid_classes))
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.grid)
    print("rows:", list(shown), "columns:", labels)


if __name__ == "__main__":
    main()
