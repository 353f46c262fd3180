"""An app the CLI tests deploy with `ferry deploy --name ...`."""

import ferry

app = ferry.App("cli-deployable")


@app.function()
def shout(token: str) -> str:
    print(f"shouting {token}")
    return token.upper()


@app.function()
def whisper(token: str) -> str:
    return token.lower()
