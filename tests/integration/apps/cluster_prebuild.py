"""Apps whose images the nodes of a Ray cluster build when the app starts, and whose node
caches are bounded (tests/integration/test_cluster_images.py): their containers run in venvs
without pytest, so they live here."""

from __future__ import annotations

import os
import sys
from typing import Any

import ferry

ahead = ferry.App("test-cluster-ahead")
ahead_image = ferry.Image.debian_slim().pip_install("six==1.16.0").env({"BUILT": "ahead"})
t4_image = ferry.Image.debian_slim().pip_install("six==1.16.0").env({"BUILT": "ahead, for a T4"})


def _seen() -> dict[str, Any]:
    import six

    return {"prefix": sys.prefix, "cache": os.environ.get("FERRY_NODE_CACHE"), "six": six.__version__,
            "built": os.environ.get("BUILT"), "image": os.environ.get("IMAGE")}


@ahead.function(image=ahead_image)
def where_ahead() -> dict[str, Any]:
    return _seen()


@ahead.function(image=t4_image, gpu="T4")
def where_on_t4() -> dict[str, Any]:
    return _seen()


cli_image = ferry.Image.debian_slim().pip_install("six==1.16.0").env({"BUILT": "by ferry image build"})

failing = ferry.App("test-cluster-ahead-failing")


@failing.function(image=ferry.Image.debian_slim().pip_install("six", extra_options="--no-index"))
def never_built() -> int:
    return 1


evicting = ferry.App("test-cluster-evicting")


@evicting.function(image=ferry.Image.debian_slim().pip_install("six==1.16.0").env({"IMAGE": "a"}))
def use_a() -> dict[str, Any]:
    return _seen()


@evicting.function(image=ferry.Image.debian_slim().pip_install("six==1.16.0").env({"IMAGE": "b"}),
                   scaledown_window=600)
def use_b() -> dict[str, Any]:
    return _seen()
