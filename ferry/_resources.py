"""Validation of the options of `@app.function` / `@app.cls` into a plain, storable config.

Every option the guide shows is accepted and checked here. Options whose machinery is not
built yet raise NotImplementedError naming the option; old spellings warn and are translated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .exception import InvalidError, deprecation_warning

MAX_TIMEOUT = 24 * 60 * 60


@dataclass(frozen=True)
class Retries:
    """How failed inputs are retried: delay = initial_delay * backoff_coefficient**(n-1),
    capped at max_delay, for up to `max_retries` retries."""

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 10:
            raise InvalidError(f"Retries(max_retries=...) must be an int from 0 to 10, got {self.max_retries!r}.")
        for field_name in ("backoff_coefficient", "initial_delay", "max_delay"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidError(f"Retries({field_name}=...) must be a number, got {value!r}.")
        if not 1.0 <= self.backoff_coefficient <= 10.0:
            raise InvalidError(f"Retries(backoff_coefficient=...) must be from 1.0 to 10.0, got {self.backoff_coefficient!r}.")
        if not 0.0 <= self.initial_delay <= 60.0:
            raise InvalidError(f"Retries(initial_delay=...) must be from 0 to 60 seconds, got {self.initial_delay!r}.")
        if not 1.0 <= self.max_delay <= 60.0:
            raise InvalidError(f"Retries(max_delay=...) must be from 1 to 60 seconds, got {self.max_delay!r}.")

    def to_dict(self) -> dict[str, float]:
        return {"max_retries": self.max_retries, "backoff_coefficient": self.backoff_coefficient,
                "initial_delay": self.initial_delay, "max_delay": self.max_delay}


def _retries(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, Retries):
        return value.to_dict()
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(f"retries= takes an int or ferry.Retries(...), got {value!r}.")
    # a bare count retries at a fixed one-second interval, as on the reference platform
    return Retries(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0).to_dict()


def _number(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> Any:
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an int" if integer else "a number"
        raise InvalidError(f"{name}= must be {kind} from {low:g} to {high:g}, got {value!r}.")
    return value


def _memory(value: Any) -> int | None:
    """`memory=` in MiB, or a `(request, limit)` tuple of which the limit is enforced."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidError(f"memory= takes MiB or a (request, limit) tuple, got {value!r}.")
        request, limit = (_number("memory", v, 1, 1024 * 1024, integer=True) for v in value)
        if limit < request:
            raise InvalidError(f"memory=(request, limit) needs limit >= request, got {value!r}.")
        return limit
    return _number("memory", value, 1, 1024 * 1024, integer=True)


def function_config(
    *,
    image: Any = None,
    gpu: Any = None,
    cpu: float | None = None,
    memory: int | None = None,
    timeout: float | None = None,
    retries: Any = None,
    secrets: Any = None,
    volumes: Any = None,
    schedule: Any = None,
    min_containers: int | None = None,
    max_containers: int | None = None,
    buffer_containers: int | None = None,
    scaledown_window: float | None = None,
    keep_warm: int | None = None,
    concurrency_limit: int | None = None,
    container_idle_timeout: float | None = None,
    allow_concurrent_inputs: int | None = None,
    block_network: bool = False,
    enable_memory_snapshot: bool = False,
    stacklevel: int = 4,
) -> dict[str, Any]:
    """Check options and return the function's config (what the control plane stores)."""
    if keep_warm is not None:
        deprecation_warning("keep_warm= is deprecated; use min_containers= instead.", stacklevel=stacklevel)
        if min_containers is not None:
            raise InvalidError("Pass min_containers= or keep_warm=, not both.")
        min_containers = keep_warm
    if concurrency_limit is not None:
        deprecation_warning("concurrency_limit= is deprecated; use max_containers= instead.", stacklevel=stacklevel)
        if max_containers is not None:
            raise InvalidError("Pass max_containers= or concurrency_limit=, not both.")
        max_containers = concurrency_limit
    if container_idle_timeout is not None:
        deprecation_warning("container_idle_timeout= is deprecated; use scaledown_window= instead.",
                            stacklevel=stacklevel)
        scaledown_window = container_idle_timeout
    concurrency = None
    if allow_concurrent_inputs is not None:
        deprecation_warning("allow_concurrent_inputs= is deprecated; decorate with "
                            "@ferry.concurrent(max_inputs=...) instead.", stacklevel=stacklevel)
        concurrency = {"max_inputs": _number("allow_concurrent_inputs", allow_concurrent_inputs, 1, 1000, integer=True),
                       "target_inputs": None}

    config: dict[str, Any] = {
        "timeout": _number("timeout", timeout, 1, MAX_TIMEOUT),
        "retries": _retries(retries),
        "cpu": _number("cpu", cpu, 0.125, 64),
        "memory": _memory(memory),
        "min_containers": _number("min_containers", min_containers, 0, 1000, integer=True),
        "max_containers": _number("max_containers", max_containers, 1, 1000, integer=True),
        "buffer_containers": _number("buffer_containers", buffer_containers, 0, 100, integer=True),
        "scaledown_window": _number("scaledown_window", scaledown_window, 2, 20 * 60),
    }
    if config["min_containers"] and config["max_containers"] and config["min_containers"] > config["max_containers"]:
        raise InvalidError(f"min_containers ({min_containers}) cannot exceed max_containers ({max_containers}).")
    if concurrency:
        config["max_inputs"] = concurrency["max_inputs"]
    if not isinstance(block_network, bool):
        raise InvalidError(f"block_network= takes True or False, got {block_network!r}.")
    if block_network:  # no network but the control plane: needs the sandbox runtime
        config["block_network"] = True
    if not isinstance(enable_memory_snapshot, bool):
        raise InvalidError(f"enable_memory_snapshot= takes True or False, got {enable_memory_snapshot!r}.")
    if enable_memory_snapshot:  # containers start from a snapshot of the imports and snap hooks
        config["enable_memory_snapshot"] = True

    _check_image(image)
    if gpu is not None:
        from ._gpu import parse_gpu

        request = parse_gpu(gpu)  # a wrong name or count fails here, listing the valid ones
        config["gpu"] = request.to_dict() if request is not None else None
    if secrets is not None:
        from ._secret import check_secrets, secret_references

        # references only: the server stores values given by value and keeps just their name
        config["secrets"] = secret_references(check_secrets(secrets))
    if volumes is not None:
        from ._volume import check_volumes, volume_references

        # references only: the server checks (or creates) each volume when the app is published
        config["volumes"] = volume_references(check_volumes(volumes))
    if schedule is not None:
        from ._schedule import Schedule

        if not isinstance(schedule, Schedule):
            raise InvalidError(f"schedule= takes ferry.Period(...) or ferry.Cron(...), got {schedule!r}.")
        config["schedule"] = schedule.to_dict()  # run by the server for deployed apps
    return config


def reject_schedule(options: dict[str, Any], where: str) -> None:
    """Schedules belong to plain functions declared with `@app.function(schedule=...)`."""
    if options.get("schedule") is not None:
        raise InvalidError(
            f"{where} cannot take schedule=: only @app.function(schedule=...) on a function with "
            "no required arguments is scheduled. Move the schedule to such a function, e.g. one "
            "that calls this one with .remote()."
        )


def check_schedulable(raw: Any, tag: str) -> None:
    """A scheduled function is started with no arguments, so it must accept being called so."""
    import inspect

    required = [
        p.name for p in inspect.signature(raw).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if required:
        raise InvalidError(
            f"Scheduled function {tag!r} has required parameter(s) {', '.join(required)}, but "
            "scheduled runs pass no arguments. Give them defaults or remove them."
        )


def _check_image(image: Any) -> None:
    if image is None:
        return
    from ._image import Image

    if not isinstance(image, Image):
        raise InvalidError(f"image= takes a ferry.Image, got {type(image).__name__}.")
