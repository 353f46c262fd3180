"""The guide's first example: `ferry run examples/hello_world.py`."""

import ferry as modal

app = modal.App("hello-world")


@app.function()
def hello(name: str) -> str:
    print(f"Saying hello to {name} from a container")
    return f"Hello {name}!"


@app.local_entrypoint()
def main(who: str = "World"):
    result = hello.remote(who)
    print(result)
