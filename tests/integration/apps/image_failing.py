"""Images for the build failure and cache tests (tests/integration/test_images_build.py)."""

import ferry

base = ferry.Image.debian_slim(python_version="3.11").pip_install("idna==3.6")  # as image_steps.base

failing = base.run_commands("echo before the failure", "echo step output; echo boom >&2; exit 3")
app = ferry.App("test-images-failing", image=failing)


@app.function()
def never_runs() -> int:
    return 1


def variant(version: str) -> ferry.Image:
    """Same steps but the third, whose command differs."""
    return base.run_commands(f"echo {version} > /version.txt").env({"AFTER": "yes"})
