"""An app with an image the process runtime builds (a venv), for the image build metrics of
tests/integration/test_metrics.py; it runs in that venv, without pytest, so it lives here."""

from __future__ import annotations

import ferry

app = ferry.App("test-metrics-image", image=ferry.Image.debian_slim().pip_install("six==1.16.0"))
broken_image = ferry.Image.debian_slim().pip_install("ferry-package-that-exists-nowhere==1.0",
                                                     extra_options="--no-index")


@app.function()
def six_version() -> str:
    import six

    return six.__version__
