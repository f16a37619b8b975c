"""Model zoo: the efficient CNN families this plugin compiles, built by name.

    >>> from tvm_ecnn import models
    >>> net = models.get("shiftresnet20")                      # random init, CIFAR-10
    >>> net = models.get("fenet1_0", num_classes=100)
    >>> net = models.get("squeezenet1_1", weights="sq11.pt")    # a user's state dict, strict
    >>> models.default_input_shape("shiftresnet20")
    (1, 3, 32, 32)

Family modules are imported on first use, so listing names does not import the shift ops.
No pretrained weights ship with the package; ``weights=`` loads your own.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["get", "names", "default_input_shape", "load_weights"]

IMAGENET_SHAPE = (1, 3, 224, 224)
CIFAR_SHAPE = (1, 3, 32, 32)


class _Entry(NamedTuple):
    module: str  # family module under tvm_ecnn.models
    builder: str
    input_shape: tuple[int, int, int, int]


_REGISTRY: dict[str, _Entry] = {
    "squeezenet1_0": _Entry("squeezenet", "squeezenet1_0", IMAGENET_SHAPE),
    "squeezenet1_1": _Entry("squeezenet", "squeezenet1_1", IMAGENET_SHAPE),
    "shiftresnet20": _Entry("shiftresnet", "shiftresnet20", CIFAR_SHAPE),
    "shiftresnet56": _Entry("shiftresnet", "shiftresnet56", CIFAR_SHAPE),
    "asresnet_w32": _Entry("asresnet", "asresnet_w32", IMAGENET_SHAPE),
    "asresnet_w50": _Entry("asresnet", "asresnet_w50", IMAGENET_SHAPE),
    "asresnet_w68": _Entry("asresnet", "asresnet_w68", IMAGENET_SHAPE),
    "fenet1_0": _Entry("fenet", "fenet1_0", IMAGENET_SHAPE),
    "fenet1_37": _Entry("fenet", "fenet1_37", IMAGENET_SHAPE),
    "mobilenet_v2": _Entry("mobilenetv2", "mobilenet_v2", IMAGENET_SHAPE),
    "mobilenet_v2_se": _Entry("mobilenetv2", "mobilenet_v2_se", IMAGENET_SHAPE),
}


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}") from None


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    """NCHW shape the model was designed for (batch 1): 224x224 ImageNet, 32x32 CIFAR."""
    return _entry(name).input_shape


def get(name: str, *, weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        **kwargs: Any) -> nn.Module:
    """Build model ``name`` (``num_classes``, ``in_channels`` and family options as kwargs).

    ``weights`` is a state dict or a path to one saved with ``torch.save``; it is loaded strictly
    after construction, so it must match the architecture built from ``kwargs``.
    """
    entry = _entry(name)
    builder = getattr(importlib.import_module(f"{__name__}.{entry.module}"), entry.builder)
    model = builder(**kwargs)
    if weights is not None:
        load_weights(model, weights, name=name)
    return model


def _unwrap(checkpoint: Any) -> Mapping[str, torch.Tensor]:
    """Accept a bare state dict, a training checkpoint ``{"state_dict": ...}`` / ``{"model": ...}``,
    and DataParallel's ``module.`` prefixes."""
    if isinstance(checkpoint, nn.Module):
        checkpoint = checkpoint.state_dict()
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"weights must be a state dict (a mapping of tensors), got {type(checkpoint).__name__}")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module."):]: v for k, v in checkpoint.items()}
    return checkpoint


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor],
                 name: str | None = None) -> nn.Module:
    """Strictly load ``weights`` (a state dict or a path to one) into ``model``.

    A mismatch raises ``ValueError`` naming the missing, unexpected and mis-shaped keys, which is
    usually a wrong model name or a different ``num_classes``.
    """
    source = "state dict"
    if isinstance(weights, (str, os.PathLike)):
        source = os.fspath(weights)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"weights file not found: {source}")
        weights = torch.load(source, map_location="cpu", weights_only=True)
    state = _unwrap(weights)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items()
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mis_shaped:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f", ... ({len(items)} total)" if len(items) > 8 else "")
        problems = [f"{label}: {show(items)}" for label, items in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mis_shaped))
                    if items]
        target = f"model {name!r}" if name else type(model).__name__
        raise ValueError(f"weights from {source} do not match {target}:\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True)
    return model
