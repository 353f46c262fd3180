"""An entrypoint that ends with SystemExit, as scripts do (`ferry run ... --how one|zero|none|three|msg`)."""

import sys
import ferry

app = ferry.App("sysexit")


@app.function()
def f() -> int:
    return 1


@app.local_entrypoint()
def main(how: str = "one"):
    f.remote()
    codes = {"one": 1, "zero": 0, "none": None, "three": 3, "msg": "something went wrong"}
    raise SystemExit(codes[how])
