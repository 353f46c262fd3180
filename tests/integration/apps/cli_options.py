"""`ferry run` targets for the CLI tests: an entrypoint with int/bool options, a function and
a class method that can be called directly with `FILE::NAME`."""

import ferry

app = ferry.App("cli-options")


@app.function()
def repeat(word: str, n: int) -> str:
    return " ".join([word] * n)


@app.function()
def triple(x: int) -> int:
    return 3 * x


@app.cls()
class Greeter:
    @ferry.method()
    def greet(self, name: str = "you") -> str:
        return f"greetings, {name}"


@app.local_entrypoint()
def main(n: int = 2, loud: bool = False):
    text = repeat.remote("echo", n)
    print(f"result: {text.upper() if loud else text}")
