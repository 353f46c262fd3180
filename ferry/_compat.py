"""`import modal` for code written for the guide: an alias of `ferry` when the real `modal`
package is not installed. Installed by the CLI and inside containers, never on import."""

from __future__ import annotations

import importlib.util
import sys

ALIASED_SUBMODULES = ("exception", "gpu")


def install_modal_alias() -> bool:
    """Make `import modal` (and `modal.exception`, `modal.gpu`) resolve to Ferry.
    Returns False, changing nothing, when a real `modal` package is importable."""
    import ferry

    current = sys.modules.get("modal")
    if current is not None:
        return current is ferry
    if importlib.util.find_spec("modal") is not None:
        return False

    sys.modules["modal"] = ferry
    for name in ALIASED_SUBMODULES:
        sys.modules[f"modal.{name}"] = importlib.import_module(f"ferry.{name}")
    return True
