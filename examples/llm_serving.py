"""The guide's LLM serving pattern, small enough for a CPU: a class loads a model from a
volume in @enter, serves many requests at once with @concurrent, and a FastAPI endpoint
calls it.

No model hub is reachable from here, so the "model" is a tiny character-bigram language model
that `prepare_model` trains from a built-in text and saves to the volume, the way a real
deployment would download weights into its cache volume once. On a GPU machine, set
LLM_GPU=L40S (or "any") to place the class on a GPU.

    ferry run examples/llm_serving.py            # train, then generate from the entrypoint
    ferry deploy examples/llm_serving.py         # and POST {"prompt": "the "} to generate_api
"""

import json
import os
import random

import modal

app = modal.App("production-llm-server")

MODEL_DIR = "/models"
MODEL_FILE = f"{MODEL_DIR}/bigram.json"
volume = modal.Volume.from_name("llm-models", create_if_missing=True)
image = modal.Image.debian_slim().pip_install("fastapi[standard]")

CORPUS = (
    "the ferry carries code across the water to machines you own. the ferry is small and "
    "quick, and the water is calm. code runs where the data lives, and the results come back "
    "across the water on the same ferry. "
) * 20


@app.function(volumes={MODEL_DIR: volume})
def prepare_model() -> int:
    """Train the stand-in model and save it to the volume (a real app would download weights)."""
    counts: dict[str, dict[str, int]] = {}
    for current, following in zip(CORPUS, CORPUS[1:]):
        counts.setdefault(current, {}).setdefault(following, 0)
        counts[current][following] += 1
    os.makedirs(MODEL_DIR, exist_ok=True)
    with open(MODEL_FILE, "w") as handle:
        json.dump(counts, handle)
    volume.commit()  # persist the "weights" for every later container
    return len(counts)


@app.cls(image=image, volumes={MODEL_DIR: volume}, scaledown_window=300,
         gpu=os.environ.get("LLM_GPU") or None)
@modal.concurrent(max_inputs=20)  # handle 20 concurrent requests per container
class ModelServer:
    @modal.enter()
    def load_model(self):
        """Load the model once per container, from the volume."""
        volume.reload()
        with open(MODEL_FILE) as handle:
            self.table = json.load(handle)
        print(f"Loaded a model of {len(self.table)} states from {MODEL_FILE}")

    @modal.method()
    def generate(self, prompt: str, max_tokens: int = 40, seed: int = 0) -> str:
        """Continue `prompt` one character at a time."""
        rng = random.Random(seed)
        text = prompt
        for _ in range(max_tokens):
            options = self.table.get(text[-1]) if text else None
            if not options:
                break
            chars, weights = zip(*options.items())
            text += rng.choices(chars, weights=weights)[0]
        return text


@app.function(image=image)
@modal.fastapi_endpoint(method="POST")
def generate_api(prompt: str, max_tokens: int = 40):
    """HTTP API for text generation."""
    server = ModelServer()
    return {"result": server.generate.remote(prompt, max_tokens)}


@app.local_entrypoint()
def test(prompt: str = "the "):
    """Train (once) and generate."""
    print(f"model states: {prepare_model.remote()}")
    server = ModelServer()
    print(server.generate.remote(prompt))
