"""The guide's "Model Caching with Volumes": download a model once, load it from a volume after.

    ferry run examples/model_cache.py                   # first run: "downloads", caches in the volume
    ferry run examples/model_cache.py                   # later runs: loads from the volume, no download
    ferry run examples/model_cache.py::download_model   # or fill the cache ahead of time
    ferry volume ls model-cache hub -r                  # what is cached
    ferry volume delete model-cache                     # start over

`HF_HOME` points into the volume, so Hugging Face libraries would keep their downloads there.
To run without network access or extra packages, `hub_download` below stands in for
`huggingface_hub.hf_hub_download`: it lays the "model" out in the same cache layout
(`hub/models--ORG--NAME/blobs/<sha256>` with a `snapshots/<revision>/` symlink to it), and its
"download" is a small file it makes itself, after a pause.
"""

import hashlib
import os
import time
from pathlib import Path

import ferry as modal

app = modal.App("model-cache-example")

MODEL_DIR = "/models"
MODEL_NAME = "ferry-examples/tiny-model"
volume = modal.Volume.from_name("model-cache", create_if_missing=True)


def hub_download(repo_id: str, filename: str, revision: str = "main") -> tuple[str, bool]:
    """The path of `filename` in the Hugging Face cache under $HF_HOME, and whether it was
    already there; "downloads" it otherwise."""
    repo = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision / filename
    if snapshot.exists():
        return str(snapshot), True
    time.sleep(2)  # the slow part the cache saves
    weights = hashlib.sha256(repo_id.encode()).digest() * 32_768  # 1 MiB of "weights"
    blob = repo / "blobs" / hashlib.sha256(weights).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(weights)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    return str(snapshot), False


@app.function(volumes={MODEL_DIR: volume})
def download_model() -> str:
    """Fill the cache ahead of time (e.g. before deploying)."""
    os.environ["HF_HOME"] = MODEL_DIR
    path, cached = hub_download(MODEL_NAME, "model.bin")
    volume.commit()  # persist the download for every later container
    return f"{path} was {'already cached' if cached else 'downloaded'}"


@app.cls(volumes={MODEL_DIR: volume}, scaledown_window=300)
class ModelServer:
    @modal.enter()
    def load_model(self):
        """Load the model once per container; download it only if the volume lacks it."""
        os.environ["HF_HOME"] = MODEL_DIR  # Hugging Face libraries cache under $HF_HOME/hub
        started = time.perf_counter()
        path, cached = hub_download(MODEL_NAME, "model.bin")
        self.weights = Path(path).read_bytes()
        self.source = "the volume cache" if cached else "a download"
        self.load_seconds = time.perf_counter() - started
        volume.commit()  # persist the download (nothing to do when it was cached)

    @modal.method()
    def generate(self, prompt: str) -> str:
        return (f"{prompt} (model of {len(self.weights):,} bytes, loaded from {self.source} "
                f"in {self.load_seconds:.2f} s)")


@app.local_entrypoint()
def main(prompt: str = "Hello from a cached model"):
    print(ModelServer().generate.remote(prompt))
