"""The guide's "Dynamic Batching": callers send single prompts, the function gets lists of them.

    ferry run examples/batched_inference.py

Each call passes one prompt (`.remote`) or one prompt per input (`.map`); the container
collects up to `max_batch_size` of them, waiting at most `wait_ms` for more, runs the function
once on the list and sends each caller its own result. The "model" is a toy word scorer so the
example runs on any CPU; put a real model in `@modal.enter()` of a class the same way.
"""

import ferry as modal

app = modal.App("batched-inference")

POSITIVE = {"good", "great", "love", "fast", "happy", "excellent", "nice"}
NEGATIVE = {"bad", "slow", "hate", "broken", "sad", "terrible", "awful"}


def score(prompt: str) -> float:
    words = [w.strip(".,!?").lower() for w in prompt.split()]
    hits = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return hits / max(1, len(words))


@app.function()
@modal.batched(max_batch_size=32, wait_ms=100)
def batch_inference(prompts: list[str]) -> list[str]:
    """Modal-style dynamic batching: one call of this function serves many callers."""
    print(f"running the model on a batch of {len(prompts)}")
    # Process all prompts together (a GPU model would run them as one tensor batch)
    return [f"{'positive' if score(p) > 0 else 'negative' if score(p) < 0 else 'neutral'} "
            f"(batch of {len(prompts)})" for p in prompts]


@app.local_entrypoint()
def main():
    # Clients call individually, the platform batches automatically
    print(batch_inference.remote("single prompt, and a good one"))

    prompts = [f"review {i}: the service was {'great' if i % 3 else 'terrible'}" for i in range(100)]
    results = list(batch_inference.map(prompts))
    for prompt, result in list(zip(prompts, results))[:3]:
        print(f"{prompt!r} -> {result}")
    sizes = [int(r.split("batch of ")[1].rstrip(")")) for r in results]
    print(f"{len(results)} results from batches of up to {max(sizes)}")
