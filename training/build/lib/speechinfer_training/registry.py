"""Registry of exportable model classes keyed by their ``config.json`` ``model_type``.

Every model twin that ``save_pretrained``/``load_pretrained`` handle registers itself here with
:func:`register_model` and implements :class:`ExportableModel`.
"""

from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class ExportableModel(Protocol):
    """What a model twin provides so it can be exported for, and reloaded from, the engine."""

    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Build an untrained model from a (possibly partial) config."""
        ...

    def export_state_dict(self) -> dict[str, Tensor]:
        """Return exactly the contract tensors, keyed by their contract names."""
        ...

    def load_export_state_dict(self, tensors: Mapping[str, Tensor]) -> None:
        """Load tensors produced by :meth:`export_state_dict`; keys must match exactly."""
        ...


_REGISTRY: dict[str, type[ExportableModel]] = {}

ModelClass = TypeVar("ModelClass", bound=type)


def register_model(model_type: str) -> Callable[[ModelClass], ModelClass]:
    """Class decorator registering a model class under ``model_type``."""

    def decorate(cls: ModelClass) -> ModelClass:
        existing = _REGISTRY.get(model_type)
        if existing is not None and existing is not cls:
            raise ValueError(f"model_type {model_type!r} is already registered to {existing}")
        _REGISTRY[model_type] = cls
        return cls

    return decorate


def model_class(model_type: str) -> type[ExportableModel]:
    """Return the class registered for ``model_type``."""
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise ValueError(
            f"unknown model_type {model_type!r}; registered: {sorted(_REGISTRY)}"
        ) from None


def registered_model_types() -> list[str]:
    """Return the registered model types, sorted."""
    return sorted(_REGISTRY)


def copy_exported_tensors(
    module: nn.Module, tensors: Mapping[str, Tensor], names: set[str]
) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers of the same names.

    ``names`` is the exact set of contract names the module exports; any missing or extra key, or
    a shape mismatch, raises ``ValueError`` before anything is modified. Values are cast to the
    destination dtype.
    """
    missing = sorted(names - set(tensors))
    unexpected = sorted(set(tensors) - names)
    if missing or unexpected:
        raise ValueError(
            f"tensor names differ from the contract: missing {missing}, unexpected {unexpected}"
        )
    targets = dict(module.named_parameters()) | dict(module.named_buffers())
    for name, tensor in tensors.items():
        if targets[name].shape != tensor.shape:
            raise ValueError(
                f"{name}: expected shape {tuple(targets[name].shape)}, got {tuple(tensor.shape)}"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            targets[name].copy_(tensor.to(device=targets[name].device, dtype=targets[name].dtype))
