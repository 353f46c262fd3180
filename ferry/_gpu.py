"""Parsing and validation of GPU requests, as the `gpu=` parameter of a function accepts them.

Accepted forms:

    gpu=None                          no GPU
    gpu="H100"                        one H100
    gpu="h100:8"                      eight H100s (type names are case-insensitive)
    gpu="A100-80GB:2"                 two 80 GB A100s ("A100" alone means 40 GB or 80 GB)
    gpu="any"                         one GPU of whatever type is free
    gpu=["H100", "A100:2", "any"]     fallbacks, in order of preference; the first available wins
    gpu=ferry.gpu.H100(count=2)       deprecated helper objects (see `ferry.gpu`)

Everything is parsed into a `GPURequest`: a non-empty tuple of `GPUOption(type, count)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from .exception import InvalidError

ANY = "any"
"""The wildcard type: matches a device of every type."""

MAX_COUNTS: Mapping[str, int] = {
    "T4": 8,
    "L4": 8,
    "A10": 4,
    "L40S": 8,
    "A100": 8,
    "A100-40GB": 8,
    "A100-80GB": 8,
    "H100": 8,
    "H200": 8,
    "B200": 8,
    ANY: 8,
}
"""Canonical request types and the most GPUs of that type one container may request."""

ALIASES: Mapping[str, str] = {"A10G": "A10"}
"""Other accepted spellings (upper-cased) and the canonical type they stand for."""

GPU_TYPES: tuple[str, ...] = tuple(MAX_COUNTS)
"""Every canonical request type, in documentation order."""

DEVICE_TYPES: tuple[str, ...] = tuple(t for t in MAX_COUNTS if t not in (ANY, "A100"))
"""The concrete device types a machine's inventory reports (no wildcards)."""


def _valid_types_text() -> str:
    aliases: dict[str, list[str]] = {}
    for alias, canonical in ALIASES.items():
        aliases.setdefault(canonical, []).append(alias)
    parts = ["/".join([t, *aliases.get(t, [])]) + f" (max {n})" for t, n in MAX_COUNTS.items()]
    return "Valid types: " + ", ".join(parts) + "."


def canonical_type(name: str) -> str | None:
    """The canonical spelling of a GPU type name (case-insensitive), or None if unknown."""
    upper = name.strip().upper()
    if upper == ANY.upper():
        return ANY
    upper = ALIASES.get(upper, upper)
    return upper if upper in MAX_COUNTS else None


def _check_type(name: object, context: str) -> str:
    if not isinstance(name, str):
        raise InvalidError(
            f"Invalid GPU type {name!r} ({type(name).__name__}) in {context}: expected a string. "
            + _valid_types_text()
        )
    canonical = canonical_type(name)
    if canonical is None:
        shown = name.strip() or name
        raise InvalidError(f"Invalid GPU type {shown!r} in {context}. " + _valid_types_text())
    return canonical


def _check_count(gpu_type: str, count: object, context: str) -> int:
    limit = MAX_COUNTS[gpu_type]
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidError(
            f"Invalid GPU count {count!r} in {context}: expected an integer from 1 to {limit} "
            f"for {gpu_type}. " + _valid_types_text()
        )
    if count < 1 or count > limit:
        raise InvalidError(
            f"Invalid GPU count {count} in {context}: {gpu_type} allows 1 to {limit} GPUs per "
            "container. " + _valid_types_text()
        )
    return count


@dataclass(frozen=True)
class GPUOption:
    """One acceptable GPU configuration: `count` devices of `type` (a canonical type or "any")."""

    type: str
    count: int = 1

    def __post_init__(self) -> None:
        context = f"GPUOption(type={self.type!r}, count={self.count!r})"
        object.__setattr__(self, "type", _check_type(self.type, context))
        _check_count(self.type, self.count, context)

    def matches(self, device_type: str) -> bool:
        """Whether a device of `device_type` can serve this option ("A100" matches both sizes)."""
        if self.type == ANY:
            return True
        device = canonical_type(device_type)
        if device is None:
            return False
        if self.type == "A100":
            return device in ("A100", "A100-40GB", "A100-80GB")
        return device == self.type

    def __str__(self) -> str:
        return self.type if self.count == 1 else f"{self.type}:{self.count}"


@dataclass(frozen=True)
class GPURequest:
    """A GPU request: options in order of preference; the first one available is used."""

    options: tuple[GPUOption, ...]

    def __post_init__(self) -> None:
        options = tuple(self.options)
        if not options:
            raise InvalidError("A GPU request needs at least one option. " + _valid_types_text())
        for option in options:
            if not isinstance(option, GPUOption):
                raise InvalidError(f"GPURequest options must be GPUOption, got {option!r}")
        object.__setattr__(self, "options", options)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, read back by `from_dict`."""
        return {"options": [{"type": o.type, "count": o.count} for o in self.options]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GPURequest:
        """Rebuild (and re-validate) a request stored with `to_dict`."""
        raw = data.get("options") if isinstance(data, Mapping) else None
        if not isinstance(raw, (list, tuple)):
            raise InvalidError(
                f"Invalid stored GPU request {data!r}: expected {{'options': [...]}}"
            )
        options: list[GPUOption] = []
        for item in raw:
            if not isinstance(item, Mapping) or "type" not in item:
                raise InvalidError(f"Invalid stored GPU option {item!r} in {data!r}")
            options.append(GPUOption(item["type"], item.get("count", 1)))
        return cls(tuple(options))

    def __str__(self) -> str:
        return " | ".join(str(o) for o in self.options)


class _GPUConfig:
    """Base of the deprecated `ferry.gpu` helper objects; wraps one `GPUOption`."""

    option: GPUOption

    def __repr__(self) -> str:
        return f"{type(self).__name__}(count={self.option.count})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _GPUConfig) and other.option == self.option

    def __hash__(self) -> int:
        return hash(self.option)


GPUSpec = Union[None, str, _GPUConfig, Sequence[Union[str, _GPUConfig]], GPURequest]
"""What `gpu=` accepts."""


_INT = re.compile(r"[+-]?[0-9]+")


def _parse_string(text: str, context: str) -> GPUOption:
    type_text, sep, count_text = text.partition(":")
    if "," in text or "|" in text:
        raise InvalidError(
            f"Invalid GPU spec {text!r} in {context}: pass fallbacks as a list, "
            'e.g. gpu=["H100", "A100"]. ' + _valid_types_text()
        )
    gpu_type = _check_type(type_text, context)
    if not sep:
        return GPUOption(gpu_type, 1)
    count_text = count_text.strip()
    count: object = int(count_text) if _INT.fullmatch(count_text) else count_text
    return GPUOption(gpu_type, _check_count(gpu_type, count, context))


def _parse_item(item: object, context: str) -> GPUOption:
    if isinstance(item, _GPUConfig):
        return item.option
    if isinstance(item, str):
        return _parse_string(item, context)
    raise InvalidError(
        f"Invalid GPU spec {item!r} ({type(item).__name__}) in {context}: expected a string "
        'such as "H100" or "H100:8". ' + _valid_types_text()
    )


def parse_gpu(spec: object) -> GPURequest | None:
    """Parse a `gpu=` argument into a `GPURequest` (None for no GPU); raise InvalidError if bad."""
    if spec is None:
        return None
    if isinstance(spec, GPURequest):
        return spec
    if isinstance(spec, (str, _GPUConfig)):
        return GPURequest((_parse_item(spec, f"gpu={spec!r}"),))
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise InvalidError(
                f"Invalid gpu={spec!r}: the list of fallbacks is empty; pass None for no GPU. "
                + _valid_types_text()
            )
        options: list[GPUOption] = []
        for item in spec:
            option = _parse_item(item, f"gpu={spec!r}")
            if option not in options:
                options.append(option)
        return GPURequest(tuple(options))
    raise InvalidError(
        f"Invalid gpu={spec!r} ({type(spec).__name__}): expected None, a string such as "
        '"H100" or "H100:8", or a list of such strings. ' + _valid_types_text()
    )


__all__ = [
    "ANY",
    "DEVICE_TYPES",
    "GPU_TYPES",
    "GPUOption",
    "GPURequest",
    "GPUSpec",
    "MAX_COUNTS",
    "canonical_type",
    "parse_gpu",
]
