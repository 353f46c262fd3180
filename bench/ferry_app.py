"""The functions bench/run.py calls through Ferry."""

import ferry

app = ferry.App("bench")


@app.function()
def trivial(x: int) -> int:
    return x + 1


@app.function()
def chatty(x: int) -> int:
    print("working on", x)
    return x + 1


@app.function()
def cold(x: int) -> int:
    return x + 1
