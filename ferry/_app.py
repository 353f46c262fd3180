"""`App`: the unit of deployment, bundling functions, classes and local entrypoints."""

from __future__ import annotations

import inspect
import secrets as _tokens
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ._client import Client, print_log
from ._cls import Cls, check_class_web_methods
from ._function import Function
from ._image import Image
from ._mount import Mount, collect, source_root
from ._partial import BATCHED, CONCURRENT, WEB, PartialFunction, check_batching
from ._resources import _check_image, check_schedulable, function_config, reject_schedule
from ._secret import check_secrets
from ._volume import check_volumes
from ._web import one_container_for_web_server
from ._serialization import serialize
from ._sync import run_sync, synced
from ._unsupported import dashboard_url, unsupported
from .exception import ExecutionError, InvalidError

_FUNCTION_OPTIONS = (
    "image", "gpu", "cpu", "memory", "timeout", "retries", "secrets", "volumes", "schedule",
    "min_containers", "max_containers", "buffer_containers", "scaledown_window", "keep_warm",
    "concurrency_limit", "container_idle_timeout", "allow_concurrent_inputs", "block_network",
    "enable_memory_snapshot",
)


class LocalEntrypoint:
    """A function run on your machine by `ferry run`; its parameters become CLI options."""

    def __init__(self, raw_f: Callable[..., Any], app: "App") -> None:
        self.raw_f = raw_f
        self.app = app
        self.__name__ = raw_f.__name__
        self.__doc__ = raw_f.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)


class App:
    """A named collection of functions and classes: `app = ferry.App("my-app")`."""

    def __init__(self, name: str | None = None, *, image: Any = None, secrets: Any = None,
                 volumes: Any = None, include_source: bool | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidError(f"App name must be a non-empty string, got {name!r}.")
        _check_image(image)
        function_config(secrets=secrets, volumes=volumes)
        self._secrets = check_secrets(secrets)  # injected before each function's own secrets
        self._volumes = check_volumes(volumes)  # mounted on every function (a function's own win per path)
        if include_source is False:
            raise NotImplementedError("include_source=False is not supported by Ferry yet.")
        self.name = name
        self._image = image
        self._functions: dict[str, Function] = {}
        self._classes: dict[str, Cls] = {}
        self._entrypoints: dict[str, LocalEntrypoint] = {}
        self._app_id: str | None = None
        self._client: Client | None = None
        self._web_endpoints: dict[str, dict[str, str]] = {}  # tag -> url, path_url (once published)

    def __repr__(self) -> str:
        return f"<ferry.App {self.name!r}>"

    @property
    def app_id(self) -> str | None:
        return self._app_id

    @property
    def image(self) -> Image | None:
        """The default image of this app's functions and classes. Assigning it changes the
        image of those defined afterwards (those already defined keep theirs)."""
        return self._image

    @image.setter
    def image(self, value: Image | None) -> None:
        _check_image(value)
        self._image = value

    def include(self, other_app: "App", inherit_tags: bool = True) -> "App":
        """Make the functions and classes of `other_app` part of this app: they run, deploy and
        are called with it. Returns this app."""
        if not isinstance(other_app, App):
            raise InvalidError(f"App.include() takes a ferry.App, got {type(other_app).__name__}.")
        if other_app is self:
            raise InvalidError("An app cannot include itself.")
        for tag, function in other_app._functions.items():
            self._register(tag, function, self._functions)
        for tag, cls in other_app._classes.items():
            self._register(tag, cls, self._classes)
        return self

    @property
    def description(self) -> str | None:
        """The app's name (Ferry keeps no separate description)."""
        return self.name

    @property
    def registered_web_endpoints(self) -> list[str]:
        """Tags of this app's web endpoint functions, and `Cls.method` for those of its classes."""
        return [*(tag for tag, function in self._functions.items() if function._extra.get("web")),
                *(f"{tag}.{method}" for tag, cls in self._classes.items() for method in cls._web_methods)]

    def get_dashboard_url(self) -> str:
        """The dashboard page of this app while it runs (or once deployed)."""
        if self._app_id is None:
            raise ExecutionError(f"App {self.name!r} is not running: it has no dashboard page yet.")
        return run_sync(dashboard_url(f"/apps/{self._app_id}"))

    def stop(self) -> None:
        """Stop this running app (as `ferry app stop` does); its containers end."""
        run_sync(self._stop())

    async def _lookup(name: str, *, client: Any = None, environment_name: str | None = None,  # type: ignore[misc]
                      create_if_missing: bool = False) -> "App":
        if client is not None or environment_name is not None:
            raise NotImplementedError("App.lookup(client=, environment_name=) is not supported by Ferry yet.")
        if not isinstance(name, str) or not name.strip():
            raise InvalidError(f"App name must be a non-empty string, got {name!r}.")
        connection = await Client.from_env()
        found = await connection.request("app.lookup", name=name, create_if_missing=create_if_missing)
        app = App(name)
        app._app_id = found["app_id"]
        return app

    lookup = synced(_lookup)
    lookup.__doc__ = """`App.lookup(name, create_if_missing=False)`: the running or deployed app `name`,
e.g. as `app=` of `Sandbox.create`; with `create_if_missing`, an empty deployed app is created
when there is none (not from inside a container). Raises NotFoundError otherwise."""
    get_tags = unsupported("App.get_tags", "apps have no tags")
    set_tags = unsupported("App.set_tags", "apps have no tags")
    info = unsupported("App.info", "use `ferry app show NAME --json`")
    logs = unsupported("App.logs", "use `ferry app logs NAME`")
    stats = unsupported("App.stats", "use `ferry app show NAME` or the dashboard")
    sandboxes = unsupported("App.sandboxes", "list an app's sandboxes with Sandbox.list(app_id=app.app_id)")
    server = unsupported("App.server", "@app.server is not built; use @web_server on a function")

    @property
    def registered_functions(self) -> dict[str, Function]:
        return dict(self._functions)

    @property
    def registered_classes(self) -> dict[str, Cls]:
        return dict(self._classes)

    @property
    def registered_entrypoints(self) -> dict[str, LocalEntrypoint]:
        return dict(self._entrypoints)

    # -- decorators -----------------------------------------------------------------------
    def function(self, _warn_parentheses: Any = None, *, serialized: bool = False,
                 name: str | None = None, is_generator: bool | None = None,
                 **options: Any) -> Callable[[Any], Function]:
        """Turn a function into a serverless Function of this app. Options: see the docs."""
        _check_options("function", _warn_parentheses, options)
        options.setdefault("image", self._image)
        self._add_app_secrets(options)
        self._add_app_volumes(options)
        config = function_config(**options)

        def decorator(f: Any) -> Function:
            if isinstance(f, Function):
                raise InvalidError("@app.function() was applied twice to the same function.")
            raw, marks = _unwrap(f, "function")
            if inspect.isclass(raw):
                raise InvalidError(f"{raw.__name__} is a class: decorate it with @app.cls() instead.")
            function_conf = dict(config)
            if "max_inputs" in marks:
                function_conf["max_inputs"] = marks["max_inputs"]
                function_conf["target_inputs"] = marks.get("target_inputs")
            if "max_batch_size" in marks:
                function_conf["max_batch_size"] = marks["max_batch_size"]
                function_conf["wait_ms"] = marks["wait_ms"]
                check_batching(f"Function {raw.__name__}", function_conf.get("max_inputs"))
            tag = name or raw.__name__
            if "schedule" in function_conf:
                check_schedulable(raw, tag)
            extra: dict[str, Any] = {}
            if serialized or "<locals>" in raw.__qualname__:
                extra["pickled"] = serialize(raw, what=f"function {tag}")
            if "web" in marks:  # a web endpoint (see _web.py): served by the gateway
                if "max_batch_size" in marks:
                    raise InvalidError(f"{tag}: a web endpoint cannot be @batched; HTTP requests are "
                                       "served one input each.")
                extra["web"] = marks["web"]
                if marks["web"]["type"] == "server":  # containers share the host's network: one per port
                    one_container_for_web_server(f"{tag}: a @web_server function", function_conf)
            function = Function(raw, app=self, tag=tag, config=function_conf, definition_extra=extra)
            if is_generator is not None:
                function._is_generator = is_generator
            function._ferry_image = options["image"]
            self._register(tag, function, self._functions)
            return function

        return decorator

    def cls(self, _warn_parentheses: Any = None, *, serialized: bool = False,
            **options: Any) -> Callable[[type], Cls]:
        """Turn a class into a served class: containers build one instance and run its @enter."""
        _check_options("cls", _warn_parentheses, options)
        reject_schedule(options, "@app.cls()")
        options.setdefault("image", self._image)
        self._add_app_secrets(options)
        self._add_app_volumes(options)
        config = function_config(**options)

        def decorator(user_cls: type) -> Cls:
            if not inspect.isclass(user_cls):
                raise InvalidError("@app.cls() decorates a class; use @app.function() for functions.")
            if serialized:
                raise NotImplementedError("@app.cls(serialized=True) is not supported by Ferry yet.")
            from ._cls import class_parameters

            class_parameters(user_cls)  # unsupported parameter types fail here, not at first call
            cls = Cls(user_cls, app=self, tag=user_cls.__name__, config=config)
            if cls._web_methods:
                check_class_web_methods(user_cls, cls._web_methods, cls._config)
            if any(BATCHED in p.flags for p in cls._methods.values()):
                from ._cls import method_concurrency

                concurrency = getattr(user_cls, "_ferry_concurrency", None) or method_concurrency(cls._methods) or {}
                check_batching(f"Class {user_cls.__name__}", concurrency.get("max_inputs") or config.get("max_inputs"),
                               cls._methods)
            if not cls._methods and not cls._web_methods:
                warnings.warn(f"Class {user_cls.__name__} has no @ferry.method(); nothing can be "
                              "called on it remotely.", stacklevel=2)
            cls._ferry_image = options["image"]
            self._register(user_cls.__name__, cls, self._classes)
            return cls

        return decorator

    def local_entrypoint(self, _warn_parentheses: Any = None, *, name: str | None = None) -> Callable[..., LocalEntrypoint]:
        """Mark the function `ferry run` calls on your machine."""
        if _warn_parentheses is not None:
            raise InvalidError("Use @app.local_entrypoint() with parentheses.")

        def decorator(f: Callable[..., Any]) -> LocalEntrypoint:
            entrypoint = LocalEntrypoint(f, self)
            self._entrypoints[name or f.__name__] = entrypoint
            return entrypoint

        return decorator

    def _add_app_volumes(self, options: dict[str, Any]) -> None:
        if self._volumes:
            options["volumes"] = {**self._volumes, **check_volumes(options.get("volumes"))}

    def _add_app_secrets(self, options: dict[str, Any]) -> None:
        """App-level secrets first, then the function's own (later ones override earlier)."""
        if self._secrets:
            options["secrets"] = [*self._secrets, *check_secrets(options.get("secrets"))]

    def _register(self, tag: str, obj: Any, table: dict[str, Any]) -> None:
        if tag in self._functions or tag in self._classes:
            warnings.warn(f"App {self.name!r} already has an object named {tag!r}; the new "
                          "definition replaces it.", stacklevel=3)
        table[tag] = obj

    # -- running --------------------------------------------------------------------------
    def _hydrate(self, app_id: str, objects: dict[str, str]) -> None:
        self._app_id = app_id
        for tag, obj in [*self._functions.items(), *self._classes.items()]:
            if tag in objects:
                obj._hydrate(objects[tag])

    def _definitions(self) -> tuple[list[dict[str, Any]], Mount | None]:
        """Every function's definition, and the source mount they import from."""
        objects: list[tuple[str, Any]] = [*self._functions.items(), *self._classes.items()]
        modules = {getattr(obj._ferry_raw, "__module__", "__main__") for _, obj in objects}
        roots: dict[str, tuple[Path, str]] = {}
        for module_name in modules:
            module = sys.modules.get(module_name)
            located = source_root(module) if module is not None else None
            if located is not None:
                roots[module_name] = located
        mount: Mount | None = None
        if roots:
            root = next(iter(roots.values()))[0]
            entry_files = [Path(sys.modules[m].__file__) for m, (r, _) in roots.items() if r == root]  # type: ignore[arg-type]
            mount = collect(root, entry_files)
        specs = []
        self._image_blobs: dict[str, bytes] = {}
        wires: dict[Any, dict[str, Any]] = {}  # one resolution per Image object

        def wire_of(image: Image) -> dict[str, Any]:
            if id(image) not in wires:
                wire = image._wire()
                wires[id(image)] = wire.definition
                self._image_blobs.update(wire.blobs)
            return wires[id(image)]

        for tag, obj in objects:
            module_name = obj._ferry_raw.__module__
            module = roots.get(module_name, (None, module_name))[1]
            definition = obj.definition(mount.wire() if mount else None, module)
            image = getattr(obj, "_ferry_image", None)
            if image is None:
                image = _BARE_IMAGE.setdefault("bare", Image.debian_slim())
                web_types = {w.get("type") for w in [definition.get("web") or {},
                                                     *(definition.get("web_methods") or {}).values()]}
                if web_types & set(_FASTAPI_WEB_TYPES):
                    # the process runtime's bare image is the server's own Python, which has
                    # FastAPI already; elsewhere the image gains it (see _default_web_image)
                    definition["image_for_process_runtime"] = wire_of(image)
                    image = _BARE_IMAGE.setdefault("web", image.pip_install(*DEFAULT_WEB_PACKAGES))
            definition["image"] = wire_of(image)
            specs.append({"tag": tag, "definition": definition})
        return specs, mount

    async def _publish(self, client: Client, kind: str, name: str, *, show_build: bool = True,
                       detach: bool = False) -> dict[str, Any]:
        specs, mount = self._definitions()
        blobs = {**(mount.contents if mount is not None else {}), **self._image_blobs}
        if blobs:
            missing = await client.request("blob.missing", hashes=list(blobs))
            for digest in missing:
                await client.request("blob.put", data=blobs[digest], hash=digest)
        progress_id = _tokens.token_hex(8)
        display = None
        if show_build:
            from ._image_progress import BuildDisplay  # rich: client side only, not in containers

            display = BuildDisplay()
        if display is not None:
            client.image_handlers[progress_id] = display
        try:
            extra = {"detach": True} if detach else {}
            result = await client.request("app.create", name=name, kind=kind, functions=specs,
                                          progress_id=progress_id, **extra)
        finally:
            client.image_handlers.pop(progress_id, None)
            if display is not None:
                display.close()
        self._hydrate(result["app_id"], result["objects"])
        for warning in result.get("warnings") or []:  # e.g. a GPU no node of a Ray cluster has yet
            print(f"Warning: {warning}", file=sys.stderr, flush=True)
        self._web_endpoints = {tag: {"url": url, "path_url": (result.get("web_path_urls") or {}).get(tag, url)}
                               for tag, url in (result.get("web_urls") or {}).items()}
        for tag, urls in self._web_endpoints.items():  # the path-based form: any HTTP client reaches it
            if tag in self._functions:
                self._functions[tag]._web_url = urls["path_url"]
            elif tag.partition(".")[0] in self._classes:  # "Cls.method": a web endpoint of a class
                self._classes[tag.partition(".")[0]]._web_urls[tag.partition(".")[2]] = urls["path_url"]
        self._client = client
        return result

    async def _start(self, *, show_logs: bool, log_handler: Callable[[dict], None] | None = None,
                     detach: bool = False) -> str:
        client = await Client.from_env()
        for tag, function in self._functions.items():
            if function._config.get("schedule"):
                print(f"Note: {tag} has a schedule; schedules run only for deployed apps "
                      "(ferry deploy).", file=sys.stderr)
        result = await self._publish(client, "ephemeral", self.name or "ephemeral-app", show_build=show_logs,
                                     detach=detach)
        if show_logs:
            if result.get("dashboard_url"):  # (a server older than this client sends none)
                print(f"App {self.name or 'ephemeral-app'} runs on the {result.get('runtime')} runtime. "
                      f"View run at {result['dashboard_url']}", file=sys.stderr, flush=True)
            client.log_handlers[result["app_id"]] = log_handler or print_log
            await client.request("app.subscribe_logs", app_id=result["app_id"])
        if not detach:  # attached again if the connection is lost and comes back (docs/reliability.md)
            client.owned_apps[result["app_id"]] = show_logs
        return result["app_id"]

    async def _stop(self) -> None:
        if self._client is None or self._app_id is None:
            return
        self._client.owned_apps.pop(self._app_id, None)
        try:
            await self._client.request("app.stop", app=self._app_id, reason="app.run() finished")
        finally:
            self._client.log_handlers.pop(self._app_id, None)
            self._app_id = None
            for obj in [*self._functions.values(), *self._classes.values()]:
                obj._hydrate(None)  # calls after the run fail clearly, not with a stale id

    @contextmanager
    def run(self, *, show_logs: bool = True, detach: bool = False) -> Iterator["App"]:
        """Run the app ephemerally for the `with` block: functions can be called inside it.
        With `detach=True` the app keeps running after the block (and after this process
        exits) until `ferry app stop` ends it: what it spawned runs to the end."""
        run_sync(self._start(show_logs=show_logs, detach=detach))
        try:
            yield self
        except BaseException:
            if not detach:
                try:
                    run_sync(self._stop())
                except Exception:  # the original error matters more (e.g. the server died)
                    pass
            raise
        if detach:
            print(f"App {self.name or self._app_id} ({self._app_id}) keeps running (detached); stop it with "
                  f"`ferry app stop {self._app_id}`.", file=sys.stderr)
            return
        run_sync(self._stop())

    async def _deploy(self, name: str | None = None) -> dict[str, Any]:
        app_name = name or self.name
        if not app_name:
            raise InvalidError("Deploying needs a name: ferry.App(\"my-app\") or deploy(name=...).")
        client = await Client.from_env()
        return await self._publish(client, "deployed", app_name)

    def deploy(self, *, name: str | None = None) -> dict[str, Any]:
        """Deploy the app persistently under its name; returns the app id and its objects."""
        return run_sync(self._deploy(name))


_FASTAPI_WEB_TYPES = ("fastapi", "asgi")
DEFAULT_WEB_PACKAGES = ("fastapi[standard]",)


# The image of a function declared without `image=`: Debian with Python, plus FastAPI when
# the function is a FastAPI endpoint, so the guide's endpoint samples run as written.
_BARE_IMAGE: dict[str, Image] = {}


def _check_options(decorator: str, warn_parentheses: Any, options: dict[str, Any]) -> None:
    if warn_parentheses is not None:
        raise InvalidError(f"Use @app.{decorator}() with parentheses. Did you forget them?")
    unknown = set(options) - set(_FUNCTION_OPTIONS)
    if unknown:
        raise InvalidError(f"@app.{decorator}() got unknown option(s): {', '.join(sorted(unknown))}. "
                           f"Known options: {', '.join(_FUNCTION_OPTIONS)}.")


def _unwrap(f: Any, decorator: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The raw function under any Ferry marks, and the marks' parameters."""
    if isinstance(f, PartialFunction):
        if f.flags - {BATCHED, CONCURRENT, WEB}:
            raise InvalidError(f"@app.{decorator}() cannot take a function marked "
                               f"{', '.join(sorted(f.flags))}; those marks belong inside @app.cls().")
        return f.raw_f, dict(f.params)
    if not callable(f):
        raise InvalidError(f"@app.{decorator}() must decorate a function, got {type(f).__name__}.")
    return f, {}
