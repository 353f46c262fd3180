"""The guide's "Simple Function Endpoints": functions served over HTTP with FastAPI.

    ferry serve examples/web_fastapi.py      # prints each endpoint's URL; edit and save to reload

    curl -X POST 'http://web-fastapi-square-dev.localhost:7789/?x=12'
    curl -X POST http://web-fastapi-square-dev.localhost:7789/ -H 'Content-Type: application/json' -d '{"x": 12}'
    curl 'http://web-fastapi-get-data-dev.localhost:7789/?user_id=123'
    curl http://127.0.0.1:7789/_/web-fastapi-square-dev/docs     # (path-based URL, any client)

`ferry deploy examples/web_fastapi.py` serves them without the `-dev` suffix until
`ferry app stop web-fastapi`. The `whoami` endpoint needs a proxy auth token:
`ferry token create`, then send its Ferry-Key and Ferry-Secret headers.
"""

import fastapi

import ferry as modal

app = modal.App("web-fastapi")
# the container needs FastAPI (with the process runtime and no image, the server's Python has it)
image = modal.Image.debian_slim().pip_install("fastapi[standard]")


@app.function(image=image)
@modal.fastapi_endpoint(method="POST", docs=True)
def square(x: int):
    """Accessible via POST request"""
    return {"square": x**2}


@app.function(image=image)
@modal.fastapi_endpoint(method="GET")
async def get_data(user_id: str):
    """Query params: ?user_id=123"""
    return {"user_id": user_id, "data": "..."}


@app.function(image=image)
@modal.fastapi_endpoint(requires_proxy_auth=True)
def whoami(request: fastapi.Request):
    """Only reachable with a valid proxy auth token; the request itself is available too."""
    return {"authenticated": True, "user_agent": request.headers.get("user-agent")}
