"""Class parameters (`ferry.parameter()`): defaults, required and unknown names, type checks,
unsupported annotations, and the local validation done by `Model(...)` on an `@app.cls()`
class (it only builds a handle, so no server is needed).

This module deliberately does NOT use `from __future__ import annotations`: annotations are
real types here, and string annotations are tested explicitly."""

import typing

import pytest

import ferry
from ferry._cls import Obj, bind_parameters, check_parameters, class_parameters
from ferry.exception import InvalidError

app = ferry.App("test-cls-parameters")


class Settings:
    name: str = ferry.parameter()
    size: int = ferry.parameter(default=3)
    ratio: float = ferry.parameter(default=0.5)
    verbose: bool = ferry.parameter(default=False)
    blob: bytes = ferry.parameter(default=b"")


@app.cls()
class Model:
    size: int = ferry.parameter(default=1)
    label: str = ferry.parameter()

    @ferry.enter()
    def load(self) -> None:
        self.loaded = f"{self.label}:{self.size}"

    @ferry.method()
    def describe(self, suffix: str) -> str:
        return self.loaded + suffix


# ------------------------------------------------------------------ class_parameters


def test_class_parameters_lists_every_parameter_with_its_type():
    params = class_parameters(Settings)
    assert {name: annotation for name, (annotation, _) in params.items()} == {
        "name": str, "size": int, "ratio": float, "verbose": bool, "blob": bytes,
    }
    assert params["name"][1].required
    assert not params["size"][1].required


def test_class_parameters_include_inherited_ones():
    class Child(Settings):
        extra: int = ferry.parameter(default=7)

    assert set(class_parameters(Child)) == {"name", "size", "ratio", "verbose", "blob", "extra"}


def test_plain_class_attributes_are_not_parameters():
    class Plain:
        size: int = 3
        name = "x"

    assert class_parameters(Plain) == {}


@pytest.mark.parametrize("annotation", [list, dict, list[int], typing.Optional[int], object])
def test_unsupported_annotation_is_invalid(annotation):
    Bad = type("Bad", (), {"__annotations__": {"value": annotation}, "value": ferry.parameter()})
    with pytest.raises(InvalidError) as info:
        class_parameters(Bad)
    message = str(info.value)
    assert "Bad.value" in message
    assert "str, int, bool, bytes, float" in message


def test_string_annotations_are_resolved():
    class Deferred:
        size: "int" = ferry.parameter(default=1)

    assert class_parameters(Deferred)["size"][0] is int
    with pytest.raises(InvalidError, match="must be int"):
        check_parameters(Deferred, {"size": "big"})


@pytest.mark.parametrize("annotation", ["list[int]", "dict", "Optional[int]"])
def test_unsupported_string_annotation_is_invalid(annotation):
    # what every annotation looks like under `from __future__ import annotations`
    Bad = type("Bad", (), {"__annotations__": {"value": annotation}, "value": ferry.parameter()})
    with pytest.raises(InvalidError, match="str, int, bool, bytes, float"):
        class_parameters(Bad)


def test_parameter_init_false_is_not_implemented():
    with pytest.raises(NotImplementedError, match="init=False"):
        ferry.parameter(init=False)


# ------------------------------------------------------------------ check_parameters


def test_defaults_fill_missing_optional_parameters():
    assert check_parameters(Settings, {"name": "a"}) == {
        "name": "a", "size": 3, "ratio": 0.5, "verbose": False, "blob": b"",
    }


def test_given_values_override_defaults():
    values = check_parameters(Settings, {"name": "a", "size": 9, "ratio": 2.0, "verbose": True,
                                         "blob": b"\x00"})
    assert values == {"name": "a", "size": 9, "ratio": 2.0, "verbose": True, "blob": b"\x00"}


def test_missing_required_parameter_is_invalid():
    with pytest.raises(InvalidError, match=r"missing the required parameter 'name'"):
        check_parameters(Settings, {"size": 2})


def test_unknown_parameter_is_invalid_and_lists_the_known_ones():
    with pytest.raises(InvalidError) as info:
        check_parameters(Settings, {"name": "a", "colour": "red"})
    message = str(info.value)
    assert "colour" in message
    assert "blob, name, ratio, size, verbose" in message


@pytest.mark.parametrize("name, value, expected", [
    ("size", "3", "int"),
    ("name", 3, "str"),
    ("ratio", "0.5", "float"),
    ("verbose", "yes", "bool"),
    ("blob", "text", "bytes"),
])
def test_value_of_wrong_type_is_invalid(name, value, expected):
    kwargs = {"name": "a", name: value}
    with pytest.raises(InvalidError, match=rf"Settings\({name}=\.\.\.\) must be {expected}, got {type(value).__name__}"):
        check_parameters(Settings, kwargs)


def test_unannotated_parameter_accepts_any_value():
    class Loose:
        anything = ferry.parameter(default=None)

    assert check_parameters(Loose, {"anything": [1, 2]}) == {"anything": [1, 2]}


# ------------------------------------------------------------------ bind_parameters


def test_bind_parameters_sets_attributes_without_calling_init():
    class WithInit:
        size: int = ferry.parameter(default=2)

        def __init__(self) -> None:
            raise AssertionError("__init__ must not run for a class with parameters")

    instance = bind_parameters(WithInit, {"size": 5})
    assert isinstance(instance, WithInit)
    assert instance.size == 5


def test_bind_parameters_fills_defaults_and_validates():
    instance = bind_parameters(Settings, {"name": "n"})
    assert (instance.name, instance.size, instance.verbose) == ("n", 3, False)
    with pytest.raises(InvalidError, match="must be int"):
        bind_parameters(Settings, {"name": "n", "size": "3"})
    with pytest.raises(InvalidError, match="missing the required parameter"):
        bind_parameters(Settings, {})


def test_bind_parameters_calls_a_legacy_init_with_the_keywords():
    class Legacy:
        def __init__(self, size: int) -> None:
            self.size = size * 2

    assert bind_parameters(Legacy, {"size": 4}).size == 8


# ------------------------------------------------------------------ Cls.__call__


def test_calling_the_class_returns_a_handle_with_validated_parameters():
    obj = Model(label="x")
    assert isinstance(obj, Obj)
    assert obj._params == {"size": 1, "label": "x"}
    assert "Model(size=1, label='x')" in repr(obj)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "missing the required parameter 'label'"),
    ({"label": "x", "colour": "red"}, "unknown parameter"),
    ({"label": "x", "size": "big"}, r"Model\(size=\.\.\.\) must be int, got str"),
])
def test_calling_the_class_validates_parameters_locally(kwargs, match):
    with pytest.raises(InvalidError, match=match):
        Model(**kwargs)


def test_handle_exposes_only_declared_methods():
    obj = Model(label="x")
    with pytest.raises(AttributeError, match=r"no @method 'predict' \(its methods: describe\)"):
        obj.predict


def test_method_local_builds_the_instance_with_parameters_and_runs_enter():
    obj = Model(label="gpt", size=7)
    assert obj.describe.local("!") == "gpt:7!"


def test_unsupported_annotation_is_rejected_when_the_class_is_decorated():
    class BadModel:
        tags: list = ferry.parameter(default=None)

        @ferry.method()
        def run(self) -> None:
            pass

    with pytest.raises(InvalidError, match="BadModel.tags"):
        ferry.App("test-cls-parameters-bad").cls()(BadModel)
