"""The guide's "FastAPI Endpoints": a whole ASGI app, with a lifespan, a streaming response
and a WebSocket.

    ferry serve examples/web_asgi.py

    curl http://web-asgi-fastapi-app-dev.localhost:7789/
    curl -X POST http://web-asgi-fastapi-app-dev.localhost:7789/predict -H 'Content-Type: application/json' -d '{"values": [1, 2, 3]}'
    curl -N http://web-asgi-fastapi-app-dev.localhost:7789/countdown      # streams one line a second
    python -m websockets ws://127.0.0.1:7789/_/web-asgi-fastapi-app-dev/echo
"""

import asyncio
from contextlib import asynccontextmanager

import ferry as modal

app = modal.App("web-asgi")
image = modal.Image.debian_slim().pip_install("fastapi[standard]")

with image.imports():
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import StreamingResponse


def create_app() -> "FastAPI":
    @asynccontextmanager
    async def lifespan(api: FastAPI):
        print("lifespan startup: once per container, before its first request")
        yield {"scale": 2.0}  # state loaded once per container (a model, a pool): request.state.scale
        print("lifespan shutdown: when the container stops")

    web_app = FastAPI(lifespan=lifespan)

    @web_app.get("/")
    def root():
        return {"message": "Hello from Ferry!"}

    @web_app.post("/predict")
    def predict(data: dict, request: Request):
        return {"prediction": sum(data["values"]) * request.state.scale}

    @web_app.get("/countdown")
    async def countdown():
        async def lines():
            for n in range(5, 0, -1):
                yield f"{n}...\n"
                await asyncio.sleep(1)
            yield "liftoff!\n"

        return StreamingResponse(lines(), media_type="text/plain")

    @web_app.websocket("/echo")
    async def echo(websocket: WebSocket):
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo: {text}")

    return web_app


@app.function(image=image)
@modal.concurrent(max_inputs=100)  # one container serves many requests at once
@modal.asgi_app()
def fastapi_app():
    return create_app()
