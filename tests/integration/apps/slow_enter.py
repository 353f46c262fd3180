"""An app whose class takes a measurable time in @enter, for the cold-start profile tests."""

import time

import ferry

app = ferry.App("cold-start-profile")

ENTER_SECONDS = 0.3


@app.cls()
class Model:
    @ferry.enter()
    def load(self) -> None:
        time.sleep(ENTER_SECONDS)
        self.ready = True

    @ferry.method()
    def predict(self, x: int) -> int:
        return x * 2


@app.local_entrypoint()
def main() -> None:
    print("prediction", Model().predict.remote(21))
