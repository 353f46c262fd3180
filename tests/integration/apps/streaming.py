"""A function whose two prints are 3 s apart, to see logs stream while it runs."""

import sys
import time

import ferry

app = ferry.App("cli-streaming")


@app.function()
def slow_talker() -> str:
    print("first")
    sys.stdout.flush()
    time.sleep(3)
    print("second")
    return "finished"
