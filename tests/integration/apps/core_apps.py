"""The central features in one app, for tests/integration/test_both_runtimes.py: calls, a class
with parameters and @enter/@exit, failures, retries, timeouts, a volume, a secret, a web
endpoint, @batched, @concurrent and a schedule. Its containers run on both runtimes: without
pytest (the sandbox's default image has none) and sharing no file with the host (what a
container tells the test goes through its return value, a Dict, a Queue or a Volume)."""

from __future__ import annotations

import os
import threading
import time

import ferry

app = ferry.App("test-both-runtimes")
volume = ferry.Volume.from_name("test-both-runtimes", create_if_missing=True)
MEETING = threading.Barrier(4)  # per container: passed only by four inputs running at once


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def add(a: int, b: int = 0) -> int:
    return a + b


@app.function()
def count_to(n: int):
    for i in range(n):
        yield i


@app.cls()
class Greeter:
    greeting: str = ferry.parameter(default="hello")
    exits: str = ferry.parameter(default="")  # a Queue's id: @exit reports there

    @ferry.enter()
    def setup(self) -> None:
        self.entered_in = os.getpid()
        self.calls = 0

    @ferry.method()
    def greet(self, name: str) -> dict:
        self.calls += 1
        return {"text": f"{self.greeting}, {name}", "entered_in": self.entered_in, "pid": os.getpid(),
                "calls": self.calls}

    @ferry.exit()
    def teardown(self) -> None:
        if self.exits:
            ferry.Queue.from_id(self.exits).put({"exited": os.getpid(), "calls": self.calls})


@app.function()
def fail(message: str) -> None:
    raise LookupError(message)


@app.function(retries=ferry.Retries(max_retries=2, backoff_coefficient=1.0, initial_delay=0.1))
def flaky(attempts: str) -> int:
    """Fails twice, then succeeds; `attempts` is a Dict's id that counts the attempts."""
    counter = ferry.Dict.from_id(attempts)
    attempt = counter.get("n", 0) + 1
    counter["n"] = attempt
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@app.function(timeout=1)
def oversleep(woke: str) -> None:
    """Sleeps past its 1 s timeout; `woke` is a Dict's id, set only if the sleep returned."""
    time.sleep(30)
    ferry.Dict.from_id(woke)["woke"] = True


@app.function(volumes={"/data": volume})
def write_file(name: str, text: str) -> list[str]:
    with open(f"/data/{name}", "w") as handle:
        handle.write(text)
    volume.commit()
    return sorted(os.listdir("/data"))


@app.function(volumes={"/data": volume})
def read_file(name: str) -> str:
    volume.reload()
    with open(f"/data/{name}") as handle:
        return handle.read()


@app.function(secrets=[ferry.Secret.from_dict({"CORE_TOKEN": "from-a-secret"})])
def token() -> str | None:
    return os.environ.get("CORE_TOKEN")


@app.function()
@ferry.fastapi_endpoint()
def hello(name: str = "world") -> dict:
    return {"hello": name, "pid": os.getpid()}


@app.function()
@ferry.batched(max_batch_size=4, wait_ms=200)
def doubled(xs: list[int]) -> list[tuple[int, int]]:
    return [(2 * x, len(xs)) for x in xs]


@app.function(max_containers=1)
@ferry.concurrent(max_inputs=4)
def meet(timeout: float) -> dict:
    """Wait until four inputs are here at the same time (BrokenBarrierError if they never are)."""
    return {"pid": os.getpid(), "arrived": MEETING.wait(timeout)}


@app.function(max_containers=2)
def capped(seconds: float) -> str:
    """Takes `seconds`, so that a map of many wants more containers than it may have."""
    time.sleep(seconds)
    return os.environ["FERRY_CONTAINER_ID"]


scheduled = ferry.App("test-both-runtimes-schedule")


@scheduled.function(schedule=ferry.Period(seconds=1))
def tick() -> None:
    """Each run puts its start time on the named queue the test created."""
    ferry.Queue.from_name("test-both-runtimes-ticks").put(time.time())
