"""Resolution of model configuration dictionaries against their documented defaults."""

import copy
import json
from collections.abc import Mapping
from typing import Any


def resolve_config(config: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``config`` over ``defaults`` and return a JSON-normalised copy.

    Keys absent from ``defaults`` raise ``ValueError``, as does a ``model_type`` that differs from
    the default one. Tuples become lists, so the result equals what a ``config.json`` round trip
    would give.
    """
    given = dict(config or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown config keys: {unknown}; known keys: {sorted(defaults)}")
    model_type = defaults["model_type"]
    if given.get("model_type", model_type) != model_type:
        raise ValueError(f"model_type must be {model_type!r}, got {given['model_type']!r}")
    resolved = copy.deepcopy(dict(defaults))
    resolved.update(copy.deepcopy(given))
    try:
        return json.loads(json.dumps(resolved))
    except TypeError as error:
        raise ValueError(f"config is not JSON-serialisable: {error}") from error


def require_positive_int(config: Mapping[str, Any], key: str) -> int:
    """Return ``config[key]`` if it is an int >= 1 (bools rejected), else raise ``ValueError``."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config[{key!r}] must be a positive integer, got {value!r}")
    return value


def require_positive_int_list(config: Mapping[str, Any], key: str) -> list[int]:
    """Return ``config[key]`` if it is a non-empty list of ints >= 1, else raise ``ValueError``."""
    value = config[key]
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ValueError(
            f"config[{key!r}] must be a non-empty list of positive integers, got {value!r}"
        )
    return value
