"""An app whose image needs a venv (tests/integration/test_storage.py builds it on a full disk):
its containers run in that venv, without pytest, so it lives here."""

from __future__ import annotations

import ferry

app = ferry.App("test-storage-full-build", image=ferry.Image.debian_slim().pip_install("six==1.16.0"))


@app.function()
def six_version() -> str:
    import six

    return six.__version__
