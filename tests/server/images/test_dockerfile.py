"""Reading Dockerfiles into Image steps (no server: the steps are compared as resolved)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ferry
from ferry._dockerfile import expand, instructions
from ferry.exception import InvalidError


def _steps(tmp_path: Path, text: str, **kwargs) -> list[tuple[str, dict]]:
    (tmp_path / "Dockerfile").write_text(text)
    image = ferry.Image.from_dockerfile(tmp_path / "Dockerfile", **kwargs)
    return [(s["kind"], s["args"]) for s in image._wire().definition["steps"]]


def test_instructions_join_continuations_and_drop_comments() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM a\n\nRUN echo one \\\n  # a comment\n  && echo two\nenv A=1\n"
    assert instructions(text) == [(2, "FROM", "a"), (4, "RUN", "echo one && echo two"), (7, "ENV", "A=1")]


def test_variables_expand_like_docker() -> None:
    values = {"A": "x", "EMPTY": ""}
    assert expand("$A/${A}/${B:-dflt}/${A:+alt}/${EMPTY:+alt}/\\$A", values) == "x/x/dflt/alt//$A"


def test_supported_instructions_become_steps(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.ini").write_text("[a]\n")
    text = """
        ARG BASE=oci:/images/base
        FROM $BASE AS build
        ARG MODE=dev
        ENV HOME_DIR=/srv NAME="my app"
        ENV LEGACY value with spaces
        WORKDIR ${HOME_DIR}
        WORKDIR app
        COPY app.py ./
        COPY conf /etc/conf
        RUN ["echo", "$MODE"]
        RUN echo $MODE > mode.txt
        CMD ["python3", "app.py"]
        ENTRYPOINT python3
    """
    steps = _steps(tmp_path, text, build_args={"MODE": "prod"})
    kinds = [k for k, _ in steps]
    assert kinds == ["from_registry", "env", "env", "workdir", "workdir", "copy", "copy",
                     "run_commands", "run_commands", "dockerfile_cmd", "dockerfile_cmd"]
    assert steps[0][1] == {"ref": "oci:/images/base"}
    assert steps[1][1] == {"vars": {"HOME_DIR": "/srv", "NAME": "my app"}}
    assert steps[2][1] == {"vars": {"LEGACY": "value with spaces"}}
    assert steps[3][1]["path"] == "/srv" and steps[4][1]["path"] == "/srv/app"
    assert steps[5][1]["remote_path"] == "/srv/app/app.py" and list(steps[5][1]["files"]) == ["app.py"]
    assert steps[6][1]["remote_path"] == "/etc/conf" and list(steps[6][1]["files"]) == ["a.ini"]
    assert steps[7][1]["commands"] == ["export MODE=prod; echo '$MODE'"]
    assert steps[8][1]["commands"] == ["export MODE=prod; echo $MODE > mode.txt"]
    assert steps[9][1] == {"instruction": "CMD", "value": ["python3", "app.py"]}


@pytest.mark.parametrize("text, words", [
    ("FROM a\nEXPOSE 80\n", "Dockerfile:2: the Dockerfile instruction EXPOSE is not supported"),
    ("FROM a\nUSER nobody\n", "instruction USER is not supported"),
    ("FROM a\nADD x /x\n", "instruction ADD is not supported"),
    ("FROM a\nFROM b\n", "multi-stage"),
    ("FROM scratch\n", "not scratch"),
    ("RUN echo\n", "before FROM"),
    ("FROM a\nCOPY --from=build /a /b\n", "COPY --from=build is not supported"),
    ("FROM a\nCOPY missing.txt /x\n", "'missing.txt' not found in the build context"),
])
def test_unsupported_or_wrong_instructions_fail_clearly(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InvalidError) as info:
        _steps(tmp_path, text)
    assert words in str(info.value)


def test_dockerfile_is_read_when_the_app_is_published_not_when_defined(tmp_path: Path) -> None:
    image = ferry.Image.from_dockerfile(tmp_path / "Missing")  # fine: containers re-import code
    with pytest.raises(InvalidError, match="is not a file"):
        image._wire()
