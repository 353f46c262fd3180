"""A guide-style script written against `import modal`; `ferry run` runs it unchanged."""

import modal

app = modal.App("cli-modal-alias")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x} in a container")
    return x * x


@app.local_entrypoint()
def main(x: int = 7):
    print(f"square is {square.remote(x)}")
