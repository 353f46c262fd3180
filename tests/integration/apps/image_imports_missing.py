"""An image whose `imports()` block names a package it does not have: locally the ImportError
is ignored, in the image's own container it is raised (tests/integration/test_images_build.py)."""

import ferry

image = ferry.Image.debian_slim(python_version="3.11").env({"PURPOSE": "missing import"})
with image.imports():
    import package_that_exists_nowhere  # noqa: F401

app = ferry.App("test-images-imports-missing", image=image)


@app.function()
def unreachable() -> int:
    return 1
