"""Packaging beyond pyproject.toml: `ferry-modal-alias.pth` goes to the top of site-packages, so
that `python script.py` can `import modal` on Ferry where the real package is absent. Its one
line appends a finder for the name `modal` to the end of `sys.meta_path` at interpreter start
(no import; see ferry/_compat.py). Regular wheels get it from build_py; editable installs
(`pip install -e .`) from the editable wheel's strategy."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "ferry-modal-alias.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


commands = {"build_py": BuildPyWithPth}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # an old setuptools: no PEP 660 editable installs to extend
    editable_wheel = None


class _StrategyWithPth:
    """Wraps the editable wheel's strategy: whatever it writes, plus the .pth file."""

    def __init__(self, inner):
        self.inner = inner

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self.inner(wheel, files, mapping)
        with open(os.path.join(HERE, PTH), "rb") as handle:
            wheel.writestr(PTH, handle.read())


if editable_wheel is not None and hasattr(editable_wheel, "_select_strategy"):
    class EditableWheelWithPth(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithPth(super()._select_strategy(*args, **kwargs))

    commands["editable_wheel"] = EditableWheelWithPth


setup(cmdclass=commands)
