"""A class serving web endpoints of every kind next to a @method (test_web_classes.py)."""

from __future__ import annotations

import os

import ferry

app = ferry.App("test-web-classes")


@app.cls(max_containers=1)
class Model:
    greeting: str = ferry.parameter(default="hello")

    @ferry.enter()
    def load(self) -> None:
        self.loaded_by = os.getpid()
        self.requests = 0

    @ferry.fastapi_endpoint()
    def predict(self, x: int = 1) -> dict:
        self.requests += 1
        return {"greeting": self.greeting, "double": 2 * x, "loaded_by": self.loaded_by,
                "requests": self.requests}

    @ferry.fastapi_endpoint(method="POST", label="test-web-classes-echo")
    def echo(self, body: dict) -> dict:
        return {"echo": body, "loaded_by": self.loaded_by}

    @ferry.asgi_app()
    def api(self):
        from fastapi import FastAPI

        web = FastAPI()
        loaded_by = self.loaded_by

        @web.get("/status")
        def status() -> dict:
            return {"status": "ready", "loaded_by": loaded_by}

        return web

    @ferry.wsgi_app()
    def legacy(self):
        loaded_by = self.loaded_by

        def wsgi(environ, start_response):
            start_response("200 OK", [("content-type", "text/plain")])
            return [f"wsgi {environ['PATH_INFO']} {loaded_by}".encode()]

        return wsgi

    @ferry.method()
    def pid(self) -> int:
        return self.loaded_by


deployed = ferry.App("test-web-classes-deployed")


@deployed.cls()
class Greeter:
    @ferry.fastapi_endpoint()
    def hello(self, name: str = "world") -> str:
        return f"hello {name}"
