"""Functions the API breadth tests run on the sandbox runtime (containers import this module,
so it imports nothing the image lacks)."""

from __future__ import annotations

import os

import ferry
import ferry.experimental

app = ferry.App("test-api-breadth-sandbox")
VARIANT_IMAGE = ferry.Image.debian_slim().env({"BREADTH_IMAGE": "variant"})


@app.function()
def ids() -> tuple[str | None, str | None, bool]:
    return ferry.current_function_call_id(), ferry.current_input_id(), ferry.is_local()


@app.function()
def image_env() -> str | None:
    return os.environ.get("BREADTH_IMAGE")


@app.function()
def stops_fetching() -> str:
    ferry.experimental.stop_fetching_inputs()
    return os.environ["FERRY_CONTAINER_ID"]
