"""The ASGI app bench/web.py measures: served directly by uvicorn, and through Ferry's gateway."""

from fastapi import FastAPI

import ferry

BODY = b'{"message":"hello"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def asgi(scope, receive, send):
    """A minimal JSON endpoint, so the numbers show the serving path rather than a framework."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


fastapi_asgi = FastAPI()


@fastapi_asgi.get("/")
async def root() -> dict:
    return {"message": "hello"}


app = ferry.App("bench-web")


@app.function(min_containers=1, max_containers=1)
@ferry.concurrent(max_inputs=256)
@ferry.asgi_app(label="bench")
def endpoint():
    return asgi


@app.function(min_containers=1, max_containers=1)
@ferry.concurrent(max_inputs=256)
@ferry.asgi_app(label="bench-fastapi")
def fastapi_endpoint():
    return fastapi_asgi
