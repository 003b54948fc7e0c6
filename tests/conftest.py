"""Shared fixtures: tiny models built here, the real default model, and a model-state snapshot."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import convscope


class TinyNet(nn.Module):
    """conv(3->4) -> in-place ReLU -> maxpool -> conv(4->6) -> ReLU -> avgpool -> fc(6->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)
        self.bn = nn.BatchNorm2d(6)  # registered after fc, used before it: order is by call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.bn(self.conv2(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


class MarkedNet(nn.Module):
    """Filters built to fail: conv filter 1 is a zero-sum edge kernel with circular padding, so its
    spatial mean is its bias whatever the picture (the ``mean`` objective has no gradient: its
    picture stays flat, while its centre unit can be raised); filter 2 is all zeros (nothing can
    raise it). Filter 0 is an ordinary random filter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular")
        with torch.no_grad():
            self.conv.weight[1] = torch.tensor([[-1.0, -1, -1], [-1, 8, -1], [-1, -1, -1]])
            self.conv.weight[2] = 0.0
            self.conv.bias[2] = 0.0
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.relu(self.conv(x))).flatten(1))


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


@pytest.fixture
def tiny() -> TinyNet:
    return tiny_net()


@pytest.fixture
def tiny_model(tiny) -> convscope.Model:
    return convscope.load_model(tiny, input_size=16, labels=[f"c{i}" for i in range(5)])


@pytest.fixture(scope="session")
def default_model() -> convscope.Model:
    return convscope.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def vgg19_random() -> convscope.Model:
    return convscope.load_model("vgg19", "random")


@dataclass
class ModelState:
    """What a call must leave as it found: modes, requires_grad flags, parameter/buffer values, grads, hooks."""

    training: dict
    requires_grad: dict
    values: dict
    grads: dict

    @classmethod
    def of(cls, module: nn.Module) -> "ModelState":
        return cls(
            training={n: m.training for n, m in module.named_modules()},
            requires_grad={n: p.requires_grad for n, p in module.named_parameters()},
            values={n: t.detach().clone() for n, t in module.state_dict().items()},
            grads={n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()},
        )

    def assert_unchanged(self, module: nn.Module) -> None:
        after = ModelState.of(module)
        assert after.training == self.training
        assert after.requires_grad == self.requires_grad
        assert after.values.keys() == self.values.keys()
        for name, value in self.values.items():
            assert torch.equal(after.values[name], value), f"{name} changed"
        for name, grad in self.grads.items():
            if grad is None:
                assert after.grads[name] is None, f"{name}.grad was filled"
            else:
                assert torch.equal(after.grads[name], grad)
        for name, m in module.named_modules():
            for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                          getattr(m, "_backward_pre_hooks", {})):
                assert not hooks, f"hook left on {name or 'the model'}"


@pytest.fixture
def model_state():
    return ModelState.of


def assert_usage_errors(capsys, command: list[str], cases: list[tuple[list[str], str]]) -> None:
    """Each ``command + argv`` exits with 2 and says one line on stderr containing ``fragment``."""
    from convscope.cli.main import main

    capsys.readouterr()
    for argv, fragment in cases:
        code = main([*command, *argv])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and fragment in err, err
