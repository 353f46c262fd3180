"""The guide's "Container Images" section: an image defined in code, built layer by layer.

    ferry run examples/image_example.py                       # builds, then runs main()
    ferry run examples/image_example.py                       # again: every layer is cached
    ferry image build examples/image_example.py::image        # prebuild it ("pre-built base image")
    ferry image list                                          # what is cached, and disk use

With the sandbox runtime (the default where Linux namespaces work) the function runs in a
Debian root filesystem with these packages, isolated from the host. The process runtime runs
it in a venv instead, and refuses the steps that need an image filesystem (apt packages must
then be installed on the host; see docs/architecture.md).
"""

from pathlib import Path

import ferry as modal

HERE = Path(__file__).resolve().parent


def write_banner():
    """Runs once, at build time, inside the image (like downloading model weights would)."""
    Path("/opt/banner.txt").write_text("built by run_function\n")


image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("jq")                                  # system packages
    .uv_pip_install("humanize==4.9.0")                  # Python packages, with uv
    .pip_install("tabulate==0.9.0")                     # ... or with pip
    .env({"GREETING": "Hello from the image"})          # environment variables
    .run_commands("mkdir -p /cache", "echo ready > /cache/status")
    .run_function(write_banner)
    .add_local_file(HERE / "hello_world.py", remote_path="/app/hello_world.py")  # mounted at start
)
app = modal.App("image-example", image=image)

with image.imports():  # only installed in the image: ignored here if missing
    import humanize


@app.function()
def describe(size: int) -> str:
    import subprocess

    from tabulate import tabulate

    rows = [
        ["greeting", __import__("os").environ["GREETING"]],
        ["jq", subprocess.run(["jq", "--version"], capture_output=True, text=True).stdout.strip()],
        ["size", humanize.naturalsize(size)],
        ["banner", Path("/opt/banner.txt").read_text().strip()],
        ["cache", Path("/cache/status").read_text().strip()],
        ["mounted", f"{len(Path('/app/hello_world.py').read_text().splitlines())} lines"],
    ]
    return tabulate(rows)


@app.local_entrypoint()
def main(size: int = 123_456_789):
    print(describe.remote(size))
