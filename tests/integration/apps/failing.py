"""A function that raises, to see how `ferry run` reports a remote error."""

import ferry

app = ferry.App("cli-failing")


def check(value: int) -> None:
    raise ValueError(f"bad value {value}")


@app.function()
def explode() -> None:
    check(42)
