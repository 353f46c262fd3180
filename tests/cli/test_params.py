"""`ferry.cli.params.parse_args`: a local entrypoint's signature becomes command-line options
(`def main(who: str, n: int = 1)` -> `--who TEXT [--n INTEGER]`)."""

from __future__ import annotations

from typing import Optional

import pytest

from ferry.cli.params import parse_args
from ferry.exception import InvalidError


def main(who: str, count: int = 1, ratio: float = 0.5, loud: bool = False,
         max_items: Optional[int] = None, note=None) -> None:
    """Greet someone."""


def quiet_by_default(loud: bool = True) -> None:
    pass


def no_params() -> None:
    pass


def test_options_are_parsed_to_their_types():
    args = parse_args(main, ["--who", "ann", "--count", "3", "--ratio", "2.5", "--loud",
                             "--max-items", "4", "--note", "hi"], "main")
    assert args == {"who": "ann", "count": 3, "ratio": 2.5, "loud": True, "max_items": 4,
                    "note": "hi"}
    assert type(args["count"]) is int and type(args["ratio"]) is float


def test_defaults_apply_when_options_are_omitted():
    assert parse_args(main, ["--who", "ann"], "main") == {
        "who": "ann", "count": 1, "ratio": 0.5, "loud": False, "max_items": None, "note": None,
    }


def test_underscores_become_dashes():
    assert parse_args(main, ["--who", "a", "--max-items", "7"], "main")["max_items"] == 7
    with pytest.raises(InvalidError, match="--max_items"):
        parse_args(main, ["--who", "a", "--max_items", "7"], "main")


def test_bool_parameters_are_on_off_flags():
    assert parse_args(main, ["--who", "a", "--loud"], "main")["loud"] is True
    assert parse_args(main, ["--who", "a", "--no-loud"], "main")["loud"] is False
    assert parse_args(quiet_by_default, [], "q") == {"loud": True}
    assert parse_args(quiet_by_default, ["--no-loud"], "q") == {"loud": False}


def test_optional_int_takes_an_int_or_stays_none():
    assert parse_args(main, ["--who", "a"], "main")["max_items"] is None
    assert parse_args(main, ["--who", "a", "--max-items", "12"], "main")["max_items"] == 12
    with pytest.raises(InvalidError, match="'--max-items': 'many' is not a valid integer"):
        parse_args(main, ["--who", "a", "--max-items", "many"], "main")


def test_missing_required_option_is_invalid():
    with pytest.raises(InvalidError, match="Missing option '--who'"):
        parse_args(main, [], "main")


@pytest.mark.parametrize("argv, message", [
    (["--who", "a", "--count", "three"], "Invalid value for '--count': 'three' is not a valid integer."),
    (["--who", "a", "--ratio", "half"], "Invalid value for '--ratio': 'half' is not a valid float."),
])
def test_bad_value_is_invalid_with_clicks_message(argv, message):
    with pytest.raises(InvalidError) as info:
        parse_args(main, argv, "main")
    assert str(info.value) == message


def test_unknown_option_is_invalid():
    with pytest.raises(InvalidError, match="No such option '--bogus'"):
        parse_args(main, ["--who", "a", "--bogus"], "main")


def test_unsupported_annotation_is_invalid():
    def takes_list(items: list) -> None:
        pass

    with pytest.raises(InvalidError, match="'items'.*str, int, float or bool"):
        parse_args(takes_list, ["--items", "x"], "takes-list")


def test_help_returns_none_and_prints_the_options(capsys):
    assert parse_args(main, ["--help"], "main") is None
    out = capsys.readouterr().out
    assert "Usage: main" in out
    assert "Greet someone." in out
    for option in ("--who", "--count", "--ratio", "--loud / --no-loud", "--max-items"):
        assert option in out


def test_help_of_a_function_without_parameters_returns_none():
    assert parse_args(no_params, ["--help"], "noop") is None
    assert parse_args(no_params, [], "noop") == {}


def test_self_and_star_args_are_not_options():
    def entry(self, who: str = "x", *args: int, **kwargs: int) -> None:
        pass

    assert parse_args(entry, [], "entry") == {"who": "x"}


def pep604(limit: int | None = None, name: str | None = None, ratio: "float | None" = 1.5,
           strict: Optional[bool] = None, label: "Optional[str]" = None) -> None:
    pass


def test_pep604_and_optional_parameters():
    assert parse_args(pep604, [], "p") == {"limit": None, "name": None, "ratio": 1.5, "strict": None,
                                           "label": None}
    got = parse_args(pep604, ["--limit", "3", "--name", "x", "--ratio", "2", "--strict", "true",
                              "--label", "y"], "p")
    assert got == {"limit": 3, "name": "x", "ratio": 2.0, "strict": True, "label": "y"}
    with pytest.raises(InvalidError, match="'--limit': 'x' is not a valid integer"):
        parse_args(pep604, ["--limit", "x"], "p")


def test_string_annotations_resolve_when_type_hints_cannot():
    def broken(n: "int | None" = None, missing: "Unknown" = None) -> None:  # noqa: F821
        pass

    with pytest.raises(InvalidError, match="missing"):
        parse_args(broken, ["--n", "2"], "b")

    def fine(n: "int | None" = None, m: "Optional[float]" = None) -> None:
        pass

    fine.__annotations__["x"] = "Undefined"  # makes get_type_hints fail; params still parse
    assert parse_args(fine, ["--n", "2", "--m", "0.5"], "f") == {"n": 2, "m": 0.5}
