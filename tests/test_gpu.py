"""Tests of `gpu=` parsing (`ferry._gpu`) and the deprecated helpers in `ferry.gpu`."""

from __future__ import annotations

import json
import warnings
from typing import Callable

import pytest

import ferry.gpu
from ferry._gpu import (
    ANY,
    GPU_TYPES,
    MAX_COUNTS,
    GPUOption,
    GPURequest,
    canonical_type,
    parse_gpu,
)
from ferry.exception import InvalidError


def _one(type_: str, count: int = 1) -> GPURequest:
    return GPURequest((GPUOption(type_, count),))


# --- valid forms -------------------------------------------------------------------------------


def test_none_is_no_gpu() -> None:
    assert parse_gpu(None) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("T4", _one("T4")),
        ("t4", _one("T4")),
        ("L4:2", _one("L4", 2)),
        ("A10", _one("A10")),
        ("A10G", _one("A10")),
        ("a10g:4", _one("A10", 4)),
        ("l40s:8", _one("L40S", 8)),
        ("A100", _one("A100")),
        ("A100-40GB", _one("A100-40GB")),
        ("a100-80gb:2", _one("A100-80GB", 2)),
        ("H100", _one("H100")),
        ("h100:8", _one("H100", 8)),
        ("H200:1", _one("H200")),
        ("B200:3", _one("B200", 3)),
        ("any", _one(ANY)),
        ("ANY:8", _one(ANY, 8)),
        (" H100 : 2 ", _one("H100", 2)),
    ],
)
def test_string_forms(spec: str, expected: GPURequest) -> None:
    assert parse_gpu(spec) == expected


def test_every_type_parses_up_to_its_max() -> None:
    for gpu_type in GPU_TYPES:
        limit = MAX_COUNTS[gpu_type]
        request = parse_gpu(f"{gpu_type}:{limit}")
        assert request == _one(gpu_type, limit)
    assert MAX_COUNTS["A10"] == 4
    assert all(MAX_COUNTS[t] == 8 for t in GPU_TYPES if t != "A10")


def test_fallback_list_keeps_preference_order() -> None:
    request = parse_gpu(["h100:8", "A100-80GB:8", "a10g", "any"])
    assert request is not None
    assert request.options == (
        GPUOption("H100", 8),
        GPUOption("A100-80GB", 8),
        GPUOption("A10", 1),
        GPUOption(ANY, 1),
    )


def test_fallback_tuple_and_duplicates() -> None:
    assert parse_gpu(("H100", "h100", "A10G", "A10")) == GPURequest(
        (GPUOption("H100"), GPUOption("A10"))
    )


def test_request_passes_through() -> None:
    request = _one("H100", 2)
    assert parse_gpu(request) is request


def test_str() -> None:
    assert str(parse_gpu("h100:8")) == "H100:8"
    assert str(parse_gpu("H100")) == "H100"
    assert str(parse_gpu(["H100", "A100", "any"])) == "H100 | A100 | any"
    assert str(parse_gpu(["A100-80GB:2", "any:2"])) == "A100-80GB:2 | any:2"


def test_dict_round_trip() -> None:
    request = parse_gpu(["H100:8", "A100", "any:2"])
    assert request is not None
    data = request.to_dict()
    assert data == {
        "options": [
            {"type": "H100", "count": 8},
            {"type": "A100", "count": 1},
            {"type": "any", "count": 2},
        ]
    }
    assert GPURequest.from_dict(json.loads(json.dumps(data))) == request


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"options": "H100"},
        {"options": [{"count": 1}]},
        {"options": ["H100"]},
        {"options": []},
        {"options": [{"type": "X100", "count": 1}]},
        {"options": [{"type": "H100", "count": 9}]},
    ],
)
def test_from_dict_rejects_bad_data(data: dict[str, object]) -> None:
    with pytest.raises(InvalidError):
        GPURequest.from_dict(data)


def test_option_canonicalises_and_validates() -> None:
    assert GPUOption("h100", 2) == GPUOption("H100", 2)
    assert GPUOption("a10g").type == "A10"
    assert str(GPUOption("any", 3)) == "any:3"
    with pytest.raises(InvalidError, match="X100"):
        GPUOption("X100")
    with pytest.raises(InvalidError, match="count 0"):
        GPUOption("H100", 0)


def test_request_needs_options() -> None:
    with pytest.raises(InvalidError, match="at least one option"):
        GPURequest(())
    with pytest.raises(InvalidError, match="must be GPUOption"):
        GPURequest(("H100",))  # type: ignore[arg-type]


def test_canonical_type() -> None:
    assert canonical_type("a10g") == "A10"
    assert canonical_type(" Any ") == ANY
    assert canonical_type("a100-40gb") == "A100-40GB"
    assert canonical_type("V100") is None


# --- matching ----------------------------------------------------------------------------------


def test_matches() -> None:
    a100 = GPUOption("A100")
    assert a100.matches("A100-40GB")
    assert a100.matches("A100-80GB")
    assert not a100.matches("H100")
    assert GPUOption("A100-80GB").matches("A100-80GB")
    assert not GPUOption("A100-80GB").matches("A100-40GB")
    assert not GPUOption("A100-40GB").matches("A100-80GB")
    assert GPUOption("H100").matches("H100")
    assert GPUOption("H100").matches("h100")
    assert not GPUOption("H100").matches("H200")
    assert GPUOption("A10G").matches("A10")
    assert not GPUOption("T4").matches("V100-SXM2-16GB")
    for device in ("T4", "L4", "A10", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "B200"):
        assert GPUOption(ANY).matches(device)
    assert GPUOption(ANY).matches("V100-SXM2-16GB")


# --- errors ------------------------------------------------------------------------------------


def _error(spec: object) -> str:
    with pytest.raises(InvalidError) as info:
        parse_gpu(spec)
    return str(info.value)


def _assert_lists_types(message: str) -> None:
    assert "Valid types:" in message
    for gpu_type in GPU_TYPES:
        assert gpu_type in message
    assert "A10/A10G (max 4)" in message
    assert "H100 (max 8)" in message


@pytest.mark.parametrize("spec", ["X100", "h100x", "A100-20GB", "", "  ", "GPU:2"])
def test_unknown_type(spec: str) -> None:
    message = _error(spec)
    assert "Invalid GPU type" in message
    assert repr(spec.split(":")[0].strip() or spec) in message
    _assert_lists_types(message)


def test_unknown_type_in_list() -> None:
    message = _error(["H100", "V100:2"])
    assert "Invalid GPU type 'V100'" in message
    assert "['H100', 'V100:2']" in message
    _assert_lists_types(message)


@pytest.mark.parametrize(
    ("spec", "shown", "limit"),
    [
        ("H100:0", "0", 8),
        ("H100:-1", "-1", 8),
        ("H100:9", "9", 8),
        ("A10:5", "5", 4),
        ("A10G:5", "5", 4),
        ("any:9", "9", 8),
        ("T4:100", "100", 8),
    ],
)
def test_count_out_of_range(spec: str, shown: str, limit: int) -> None:
    message = _error(spec)
    assert f"Invalid GPU count {shown} " in message
    assert f"allows 1 to {limit} GPUs" in message
    assert repr(spec) in message
    _assert_lists_types(message)


@pytest.mark.parametrize("count", ["", "two", "1.5", "2x", "+", "٣"])
def test_count_not_an_integer(count: str) -> None:
    message = _error(f"H100:{count}")
    assert f"Invalid GPU count {count!r}" in message
    assert "expected an integer from 1 to 8 for H100" in message
    _assert_lists_types(message)


def test_comma_separated_string_suggests_list() -> None:
    message = _error("H100,A100")
    assert "pass fallbacks as a list" in message
    assert "'H100,A100'" in message
    _assert_lists_types(message)


def test_empty_list() -> None:
    message = _error([])
    assert "gpu=[]" in message
    assert "empty" in message
    _assert_lists_types(message)


@pytest.mark.parametrize("spec", [3, 2.5, {"H100": 1}, b"H100", True])
def test_wrong_type(spec: object) -> None:
    message = _error(spec)
    assert f"Invalid gpu={spec!r} ({type(spec).__name__})" in message
    _assert_lists_types(message)


@pytest.mark.parametrize("item", [3, None, ["H100"]])
def test_wrong_item_type_in_list(item: object) -> None:
    message = _error(["H100", item])
    assert f"Invalid GPU spec {item!r} ({type(item).__name__})" in message
    _assert_lists_types(message)


@pytest.mark.parametrize("count", [0, 9, -2, 1.0, "2", True])
def test_option_count_errors(count: object) -> None:
    with pytest.raises(InvalidError, match="Invalid GPU count") as info:
        GPUOption("H100", count)  # type: ignore[arg-type]
    assert repr(count) in str(info.value)
    assert "Valid types:" in str(info.value)


def test_option_type_not_a_string() -> None:
    with pytest.raises(InvalidError, match=r"Invalid GPU type 3 \(int\)"):
        GPUOption(3)  # type: ignore[arg-type]


# --- deprecated helper objects -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "old", "new", "expected"),
    [
        (lambda: ferry.gpu.T4(), "ferry.gpu.T4()", "T4", _one("T4")),
        (lambda: ferry.gpu.L4(count=2), "ferry.gpu.L4(count=2)", "L4:2", _one("L4", 2)),
        (lambda: ferry.gpu.A10G(count=4), "ferry.gpu.A10G(count=4)", "A10:4", _one("A10", 4)),
        (lambda: ferry.gpu.L40S(), "ferry.gpu.L40S()", "L40S", _one("L40S")),
        (lambda: ferry.gpu.A100(), "ferry.gpu.A100()", "A100-40GB", _one("A100-40GB")),
        (
            lambda: ferry.gpu.A100(size="40GB"),
            'ferry.gpu.A100(size="40GB")',
            "A100-40GB",
            _one("A100-40GB"),
        ),
        (
            lambda: ferry.gpu.A100(size="80GB", count=2),
            'ferry.gpu.A100(size="80GB", count=2)',
            "A100-80GB:2",
            _one("A100-80GB", 2),
        ),
        (lambda: ferry.gpu.H100(count=4), "ferry.gpu.H100(count=4)", "H100:4", _one("H100", 4)),
        (lambda: ferry.gpu.H200(), "ferry.gpu.H200()", "H200", _one("H200")),
        (lambda: ferry.gpu.B200(count=8), "ferry.gpu.B200(count=8)", "B200:8", _one("B200", 8)),
        (lambda: ferry.gpu.Any(), "ferry.gpu.Any()", "any", _one(ANY)),
        (lambda: ferry.gpu.any(count=2), "ferry.gpu.any(count=2)", "any:2", _one(ANY, 2)),
    ],
)
def test_deprecated_objects(
    make: Callable[[], object], old: str, new: str, expected: GPURequest
) -> None:
    with pytest.warns(DeprecationWarning) as record:
        obj = make()
    assert len(record) == 1
    warning = record[0]
    assert str(warning.message) == f'{old} is deprecated; pass gpu="{new}" instead'
    assert warning.filename == __file__
    assert parse_gpu(obj) == expected
    assert parse_gpu(new) == expected


def test_deprecated_warning_points_at_the_calling_line() -> None:
    with pytest.warns(DeprecationWarning) as record:
        ferry.gpu.H100(count=4)
        line = record[0].lineno if record else -1
    assert line == test_deprecated_warning_points_at_the_calling_line.__code__.co_firstlineno + 2
    assert record[0].filename == __file__
    assert str(record[0].message) == (
        'ferry.gpu.H100(count=4) is deprecated; pass gpu="H100:4" instead'
    )


def test_deprecated_any_function_points_at_the_calling_line() -> None:
    with pytest.warns(DeprecationWarning) as record:
        ferry.gpu.any()
    assert record[0].filename == __file__
    assert record[0].lineno == (
        test_deprecated_any_function_points_at_the_calling_line.__code__.co_firstlineno + 2
    )


def test_deprecated_objects_in_a_fallback_list() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = [ferry.gpu.H100(count=2), "A100", ferry.gpu.any()]
    assert str(parse_gpu(spec)) == "H100:2 | A100 | any"


def test_deprecated_objects_compare_and_repr() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        first, second, other = ferry.gpu.H100(count=2), ferry.gpu.H100(count=2), ferry.gpu.T4()
    assert first == second
    assert hash(first) == hash(second)
    assert first != other
    assert repr(first) == "H100(count=2)"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: ferry.gpu.H100(count=0), "Invalid GPU count 0 in ferry.gpu.H100(count=0)"),
        (lambda: ferry.gpu.A10G(count=5), "A10 allows 1 to 4 GPUs"),
        (lambda: ferry.gpu.T4(count=1.5), "Invalid GPU count 1.5"),  # type: ignore[arg-type]
        (lambda: ferry.gpu.any(count=9), "Invalid GPU count 9 in ferry.gpu.any(count=9)"),
        (lambda: ferry.gpu.A100(size="20GB"), "Invalid A100 size '20GB'"),
        (lambda: ferry.gpu.A100(size=80), "Invalid A100 size 80"),  # type: ignore[arg-type]
    ],
)
def test_deprecated_object_errors(make: Callable[[], object], fragment: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(InvalidError) as info:
            make()
    assert fragment in str(info.value)


def test_deprecated_count_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        ferry.gpu.H100(2)  # type: ignore[call-arg]
