"""Validation of the options of `@app.function()` / `@app.cls()` and of the marking
decorators: bad values raise InvalidError with a message that says how to fix them, options
whose machinery is not built raise NotImplementedError naming the option, and old spellings
warn with a DeprecationWarning that points at the user's line. No server is needed."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest

import ferry
from ferry.exception import InvalidError


@pytest.fixture
def app() -> ferry.App:
    """A fresh app per test, so registrations never collide."""
    return ferry.App("test-app-options")


def _line_after() -> int:
    """The line number just after the caller's line."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def _one_deprecation(record: list[warnings.WarningMessage]) -> warnings.WarningMessage:
    found = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert len(found) == 1, [str(w.message) for w in record]
    return found[0]


def _square(x: int) -> int:
    return x * x


# ------------------------------------------------------------------ numeric options


@pytest.mark.parametrize("decorator", ["function", "cls"])
@pytest.mark.parametrize("timeout", [0, -5, 24 * 60 * 60 + 1])
def test_timeout_out_of_range_is_invalid(decorator, timeout, app):
    with pytest.raises(InvalidError, match=r"timeout=.*from 1 to 86400"):
        getattr(app, decorator)(timeout=timeout)


@pytest.mark.parametrize("timeout", ["10", True, [10], 1j])
def test_timeout_of_wrong_type_is_invalid(timeout, app):
    with pytest.raises(InvalidError, match="timeout="):
        app.function(timeout=timeout)


def test_valid_timeout_is_stored_in_the_config(app):
    function = app.function(timeout=30)(_square)
    assert function.definition(None, __name__)["config"]["timeout"] == 30


@pytest.mark.parametrize("retries", ["3", 2.5, True])
def test_retries_of_wrong_type_is_invalid(retries, app):
    with pytest.raises(InvalidError, match=r"retries=.*ferry\.Retries"):
        app.function(retries=retries)


@pytest.mark.parametrize("retries", [-1, 11])
def test_retries_out_of_range_is_invalid(retries, app):
    with pytest.raises(InvalidError, match="from 0 to 10"):
        app.function(retries=retries)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_retries": 11}, "max_retries"),
    ({"max_retries": 2, "backoff_coefficient": 0.5}, "backoff_coefficient"),
    ({"max_retries": 2, "initial_delay": 61.0}, "initial_delay"),
    ({"max_retries": 2, "max_delay": 0.5}, "max_delay"),
])
def test_retries_object_validates_its_fields(kwargs, match):
    with pytest.raises(InvalidError, match=match):
        ferry.Retries(**kwargs)


def test_retries_count_becomes_a_fixed_interval_policy(app):
    function = app.function(retries=3)(_square)
    retries = function.definition(None, __name__)["config"]["retries"]
    assert retries["max_retries"] == 3
    assert retries["backoff_coefficient"] == 1.0


def test_min_containers_above_max_containers_is_invalid(app):
    with pytest.raises(InvalidError, match=r"min_containers \(5\) cannot exceed max_containers \(2\)"):
        app.function(min_containers=5, max_containers=2)


@pytest.mark.parametrize("option, value", [
    ("min_containers", -1),
    ("max_containers", 0),
    ("min_containers", 1.5),
    ("max_containers", "3"),
])
def test_container_counts_must_be_ints_in_range(option, value, app):
    with pytest.raises(InvalidError, match=f"{option}="):
        app.function(**{option: value})


def test_negative_buffer_containers_is_invalid(app):
    with pytest.raises(InvalidError, match="buffer_containers="):
        app.function(buffer_containers=-1)


@pytest.mark.parametrize("window", [1, 1.9, 1201, "60"])
def test_scaledown_window_outside_2_to_1200_seconds_is_invalid(window, app):
    with pytest.raises(InvalidError, match=r"scaledown_window=.*from 2 to 1200"):
        app.function(scaledown_window=window)


def test_autoscaler_options_are_stored_in_the_config(app):
    function = app.function(min_containers=1, max_containers=4, buffer_containers=2,
                            scaledown_window=60)(_square)
    config = function.definition(None, __name__)["config"]
    assert (config["min_containers"], config["max_containers"], config["buffer_containers"],
            config["scaledown_window"]) == (1, 4, 2, 60)


@pytest.mark.parametrize("cpu", [0, 0.1, 65, "2", True])
def test_cpu_out_of_range_or_wrong_type_is_invalid(cpu, app):
    with pytest.raises(InvalidError, match=r"cpu=.*from 0\.125 to 64"):
        app.function(cpu=cpu)


@pytest.mark.parametrize("memory, match", [
    (0, "memory="),
    (1.5, "memory="),
    ("1Gi", "memory="),
    ((1024, 512), r"limit >= request"),
    ((1, 2, 3), r"\(request, limit\) tuple"),
])
def test_memory_out_of_range_or_wrong_form_is_invalid(memory, match, app):
    with pytest.raises(InvalidError, match=match):
        app.function(memory=memory)


@pytest.mark.parametrize("memory, stored", [(1024, 1024), ((512, 2048), 2048)])
def test_cpu_and_memory_limits_are_stored_in_the_config(memory, stored, app):
    config = app.function(cpu=2, memory=memory)(_square).definition(None, __name__)["config"]
    assert (config["cpu"], config["memory"]) == (2, stored)


@pytest.mark.parametrize("decorator", ["function", "cls"])
def test_block_network_is_stored_in_the_config_only_when_true(decorator, app):
    class Model:
        @ferry.method()
        def f(self) -> None: ...

    target = _square if decorator == "function" else Model
    blocked = getattr(app, decorator)(block_network=True)(target)
    config = blocked.definition(None, __name__)["config"] if decorator == "function" else blocked._config
    assert config["block_network"] is True
    other = ferry.App("test-app-options-other")
    plain = getattr(other, decorator)(block_network=False)(target)
    config = plain.definition(None, __name__)["config"] if decorator == "function" else plain._config
    assert "block_network" not in config


@pytest.mark.parametrize("value", [1, "yes", None])
def test_block_network_must_be_a_bool(value, app):
    with pytest.raises(InvalidError, match=r"block_network= takes True or False"):
        app.function(block_network=value)


# ------------------------------------------------------------------ misuse of the decorators


@pytest.mark.parametrize("decorator", ["function", "cls"])
def test_unknown_option_is_invalid_and_lists_the_known_ones(decorator, app):
    with pytest.raises(InvalidError) as info:
        getattr(app, decorator)(gpus="H100")
    message = str(info.value)
    assert "gpus" in message
    assert "Known options" in message
    for known in ("timeout", "retries", "min_containers", "scaledown_window", "gpu"):
        assert known in message


def test_app_function_without_parentheses_is_invalid(app):
    with pytest.raises(InvalidError, match=r"@app\.function\(\) with parentheses"):
        @app.function
        def bare(x: int) -> int:
            return x


def test_app_cls_without_parentheses_is_invalid(app):
    with pytest.raises(InvalidError, match=r"@app\.cls\(\) with parentheses"):
        @app.cls
        class Bare:
            pass


def test_app_local_entrypoint_without_parentheses_is_invalid(app):
    with pytest.raises(InvalidError, match="parentheses"):
        @app.local_entrypoint
        def main() -> None:
            pass


def test_app_function_on_a_class_points_to_app_cls(app):
    with pytest.raises(InvalidError, match=r"@app\.cls\(\)"):
        @app.function()
        class Model:
            pass


def test_app_cls_on_a_function_points_to_app_function(app):
    with pytest.raises(InvalidError, match=r"@app\.function\(\)"):
        app.cls()(_square)


def test_app_function_applied_twice_is_invalid(app):
    function = app.function()(_square)
    with pytest.raises(InvalidError, match="twice"):
        app.function()(function)


def test_app_function_on_a_method_mark_is_invalid(app):
    with pytest.raises(InvalidError, match=r"@app\.cls\(\)"):
        app.function()(ferry.method()(_square))


@pytest.mark.parametrize("mark", ["method", "enter", "exit"])
def test_method_marks_without_parentheses_are_invalid(mark):
    with pytest.raises(InvalidError, match="parentheses"):
        getattr(ferry, mark)(_square)


def test_app_name_must_be_a_non_empty_string():
    with pytest.raises(InvalidError, match="non-empty string"):
        ferry.App("  ")


# ------------------------------------------------------------------ built machinery


@pytest.mark.parametrize("decorator", ["function", "cls"])
def test_gpu_requests_are_stored_parsed(decorator, app):
    """gpu= is placed by the server (tests/integration/test_gpus.py)."""
    target = getattr(app, decorator)(gpu=["h100:2", "A10G"])
    obj = target(_square) if decorator == "function" else target(type("Model", (), {"m": ferry.method()(lambda self: 1)}))
    assert obj._config["gpu"] == {"options": [{"type": "H100", "count": 2}, {"type": "A10", "count": 1}]}


@pytest.mark.parametrize("decorator", ["function", "cls"])
def test_volumes_are_accepted_at_app_and_function_level(decorator):
    """volumes= is built (tests/test_volume.py, tests/integration/test_volumes.py)."""
    app = ferry.App("test-app-options-volumes", volumes={"/data": ferry.Volume.from_name("v")})
    getattr(app, decorator)(volumes={"/models": ferry.Volume.from_name("m")})


@pytest.mark.parametrize("decorator", ["function", "cls"])
def test_secrets_are_accepted_at_app_and_function_level(decorator):
    """secrets= is built (tests/test_secret.py, tests/integration/test_secrets.py)."""
    app = ferry.App("test-app-options-secrets", secrets=[ferry.Secret.from_dict({"A": "b"})])
    getattr(app, decorator)(secrets=[ferry.Secret.from_name("s")])


def test_image_with_build_steps_is_accepted(app):
    image = ferry.Image.debian_slim().pip_install("numpy").apt_install("curl")
    app.function(image=image)(_square)
    ferry.App("test-app-options-image", image=image)


def test_plain_debian_slim_image_is_accepted(app):
    function = app.function(image=ferry.Image.debian_slim())(_square)
    assert function.definition(None, __name__)["kind"] == "function"


def test_image_of_wrong_type_is_invalid(app):
    with pytest.raises(InvalidError, match=r"image= takes a ferry\.Image"):
        app.function(image="python:3.11")


def test_python_version_that_is_not_a_version_is_invalid():
    # which versions exist depends on the server's runtime: it lists them when building
    # (tests/integration/test_images_build.py)
    with pytest.raises(InvalidError, match="not a Python version"):
        ferry.Image.debian_slim(python_version="three")


@pytest.mark.parametrize("gpu", ["A10X", "H1OO", "h100:99", 100])
def test_wrong_gpu_is_invalid_listing_the_valid_types(gpu, app):
    with pytest.raises(InvalidError, match="Valid types: .*H100"):
        app.function(gpu=gpu)


def test_wrong_cron_string_is_invalid_at_construction():
    with pytest.raises(InvalidError, match=r"Invalid cron string '0 8 \* \*'.*5 fields"):
        ferry.Cron("0 8 * *")
    with pytest.raises(InvalidError, match="minute field"):
        ferry.Cron("61 * * * *")


def test_schedule_of_wrong_type_is_invalid_before_not_implemented(app):
    with pytest.raises(InvalidError, match=r"schedule= takes ferry\.Period\(\.\.\.\) or ferry\.Cron"):
        app.function(schedule="0 8 * * 1")


# ------------------------------------------------------------------ deprecated spellings


@pytest.mark.parametrize("old, new, value, config_key", [
    ("keep_warm", "min_containers", 1, "min_containers"),
    ("concurrency_limit", "max_containers", 3, "max_containers"),
    ("container_idle_timeout", "scaledown_window", 60, "scaledown_window"),
    ("allow_concurrent_inputs", "ferry.concurrent", 4, "max_inputs"),
])
def test_deprecated_function_options_warn_at_the_callers_line(old, new, value, config_key, app):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line_after()
        decorator = app.function(**{old: value})
    warning = _one_deprecation(record)
    assert warning.filename == __file__
    assert warning.lineno == line
    assert old in str(warning.message) and new in str(warning.message)
    assert decorator(_square).definition(None, __name__)["config"][config_key] == value


def test_deprecated_cls_option_warns_at_the_callers_line(app):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line_after()
        app.cls(keep_warm=1)
    warning = _one_deprecation(record)
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert "min_containers" in str(warning.message)


def test_deprecated_option_in_function_with_options_warns_at_the_callers_line(app):
    function = app.function()(_square)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line_after()
        function.with_options(concurrency_limit=2)
    warning = _one_deprecation(record)
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert "max_containers" in str(warning.message)


def test_deprecated_option_in_cls_with_options_warns_at_the_callers_line(app):
    class Model:
        @ferry.method()
        def predict(self, x: int) -> int:
            return x

    cls = app.cls()(Model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line_after()
        cls.with_options(keep_warm=2)
    warning = _one_deprecation(record)
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert "min_containers" in str(warning.message)


def test_deprecated_web_endpoint_warns_at_the_callers_line_and_names_fastapi_endpoint():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line_after()
        ferry.web_endpoint(method="POST")
    warning = _one_deprecation(record)
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert "fastapi_endpoint" in str(warning.message)


@pytest.mark.parametrize("old, new", [("keep_warm", "min_containers"),
                                      ("concurrency_limit", "max_containers")])
def test_old_and_new_spelling_together_is_invalid(old, new, app):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(InvalidError, match=f"{new}= or {old}=, not both"):
            app.function(**{old: 1, new: 1})


# ------------------------------------------------------------------ @batched / @concurrent


@pytest.mark.parametrize("kwargs, match", [
    ({"max_batch_size": 0, "wait_ms": 10}, "max_batch_size"),
    ({"max_batch_size": 1001, "wait_ms": 10}, "max_batch_size"),
    ({"max_batch_size": "8", "wait_ms": 10}, "max_batch_size"),
    ({"max_batch_size": 8, "wait_ms": -1}, "wait_ms"),
    ({"max_batch_size": 8, "wait_ms": 10 * 60 * 1000 + 1}, "wait_ms"),
    ({"max_batch_size": 8, "wait_ms": 1.5}, "wait_ms"),
])
def test_batched_validates_its_arguments(kwargs, match):
    with pytest.raises(InvalidError, match=match):
        ferry.batched(**kwargs)


def test_batched_settings_reach_the_function_config(app):
    function = app.function()(ferry.batched(max_batch_size=8, wait_ms=100)(_square))
    config = function.definition(None, __name__)["config"]
    assert (config["max_batch_size"], config["wait_ms"]) == (8, 100)


def test_batched_without_parentheses_is_invalid():
    with pytest.raises(InvalidError, match="parentheses"):
        @ferry.batched
        def batch(xs: list[int]) -> list[int]:
            return xs


@pytest.mark.parametrize("kwargs, match", [
    ({"max_inputs": 0}, "max_inputs"),
    ({"max_inputs": "4"}, "max_inputs"),
    ({"max_inputs": 4, "target_inputs": 5}, "target_inputs"),
    ({"max_inputs": 4, "target_inputs": 0}, "target_inputs"),
])
def test_concurrent_validates_its_arguments(kwargs, match):
    with pytest.raises(InvalidError, match=match):
        ferry.concurrent(**kwargs)


def test_concurrent_settings_reach_the_function_config(app):
    function = app.function()(ferry.concurrent(max_inputs=10, target_inputs=5)(_square))
    config = function.definition(None, __name__)["config"]
    assert (config["max_inputs"], config["target_inputs"]) == (10, 5)


def test_concurrent_without_parentheses_is_invalid():
    with pytest.raises(InvalidError, match="parentheses"):
        @ferry.concurrent
        def handle(x: int) -> int:
            return x


# ------------------------------------------------------------------ schedules


def _nightly() -> str:
    return "done"


def _with_default(limit: int = 10, *rest: Any, **extra: Any) -> int:
    return limit


@pytest.mark.parametrize("schedule", [ferry.Period(minutes=30), ferry.Cron("0 8 * * 1", timezone="Europe/Paris")])
def test_schedule_is_stored_in_the_definition_as_its_dict(schedule, app):
    function = app.function(schedule=schedule)(_nightly)
    stored = function.definition(None, __name__)["config"]["schedule"]
    assert stored == schedule.to_dict()
    assert ferry.Period.from_dict(stored) == schedule


def test_scheduled_function_may_have_parameters_with_defaults(app):
    function = app.function(schedule=ferry.Period(hours=1))(_with_default)
    assert function.definition(None, __name__)["config"]["schedule"] == {"type": "period", "hours": 1}


def test_scheduled_function_with_a_required_parameter_is_invalid(app):
    with pytest.raises(InvalidError, match=r"Scheduled function '_square' has required parameter\(s\) x.*defaults"):
        app.function(schedule=ferry.Period(hours=1))(_square)


def test_class_cannot_take_a_schedule(app):
    with pytest.raises(InvalidError, match=r"@app\.cls\(\) cannot take schedule="):
        app.cls(schedule=ferry.Cron("0 * * * *"))


def test_with_options_cannot_set_a_schedule(app):
    function = app.function()(_nightly)
    with pytest.raises(InvalidError, match=r"with_options\(\) cannot take schedule="):
        function.with_options(schedule=ferry.Period(hours=1))


def test_invalid_schedules_fail_at_construction_before_deploy():
    with pytest.raises(InvalidError, match="positive interval"):
        ferry.Period(seconds=0)
    with pytest.raises(InvalidError, match="non-negative"):
        ferry.Period(minutes=-5)
    with pytest.raises(InvalidError, match="Unknown timezone"):
        ferry.Cron("0 8 * * 1", timezone="Mars/Olympus")
