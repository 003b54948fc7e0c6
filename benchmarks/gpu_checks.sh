#!/usr/bin/env bash
# The CUDA checks, as one script for a machine with a GPU (CI has none): the test suite's CUDA tests
# and the Grad-CAM benchmark on VGG19 and ResNet50 (batch 64, target <= 1.15x the floor in the
# precision auto chooses), then the default model's whole atlas on the GPU against its floor
# (benchmarks/atlas_scale.py). Run from the repository root with the test venv: bash benchmarks/gpu_checks.sh
set -u
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())" || exit 1
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
"$PY" benchmarks/cam_vgg19.py --device cuda --model vgg19 --batch 64 --repeat 10
"$PY" benchmarks/cam_vgg19.py --device cuda --model torchvision:resnet50 --batch 64 --repeat 10
"$PY" benchmarks/atlas_scale.py --device cuda --images 5000
