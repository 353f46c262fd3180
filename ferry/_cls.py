"""Classes served by containers: `@app.cls()`, `parameter()`, and handles on instances.

`Model(size=3)` on the client creates no object: it names a pool of containers whose
instance was built with `size=3`, @enter run once; `.predict.remote(x)` sends inputs there.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

from ._client import Client
from ._function import Invocable, request_variant
from ._partial import BATCHED, CONCURRENT, ENTER, METHOD, WEB, PartialFunction, enter_methods
from ._serialization import serialize_args
from ._sync import run_sync, synced
from ._unsupported import dashboard_url
from .exception import ExecutionError, InvalidError

if TYPE_CHECKING:
    from ._app import App

_MISSING = object()
PARAMETER_TYPES = (str, int, bool, bytes, float)


class _Parameter:
    def __init__(self, default: Any) -> None:
        self.default = default

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def parameter(*, default: Any = _MISSING, init: bool = True) -> Any:
    """Declare a class parameter: `size: int = ferry.parameter(default=3)`."""
    if not init:
        raise NotImplementedError("parameter(init=False) is not supported by Ferry.")
    return _Parameter(default)


def class_parameters(user_cls: type) -> dict[str, tuple[Any, _Parameter]]:
    """The `parameter()` fields of a class: name -> (annotated type, declaration)."""
    found: dict[str, tuple[Any, _Parameter]] = {}
    for klass in reversed(user_cls.__mro__):
        annotations = vars(klass).get("__annotations__", {})
        for name, value in vars(klass).items():
            if isinstance(value, _Parameter):
                annotation = annotations.get(name, Any)
                if isinstance(annotation, str):
                    names = {"str": str, "int": int, "bool": bool, "bytes": bytes, "float": float}
                    if annotation not in names:
                        raise InvalidError(
                            f"Parameter {user_cls.__name__}.{name} has type {annotation!r}; class "
                            f"parameters must be one of str, int, bool, bytes, float."
                        )
                    annotation = names[annotation]
                if annotation is not Any and annotation not in PARAMETER_TYPES:
                    raise InvalidError(
                        f"Parameter {user_cls.__name__}.{name} has type {annotation!r}; class "
                        f"parameters must be one of str, int, bool, bytes, float."
                    )
                found[name] = (annotation, value)
    return found


def check_parameters(user_cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate constructor keywords against the class's parameters; fill defaults."""
    params = class_parameters(user_cls)
    unknown = set(kwargs) - set(params)
    if unknown:
        names = ", ".join(sorted(params)) or "none"
        raise InvalidError(f"{user_cls.__name__}() got unknown parameter(s) {', '.join(sorted(unknown))}; "
                           f"its parameters are: {names}.")
    values: dict[str, Any] = {}
    for name, (annotation, declaration) in params.items():
        if name in kwargs:
            value = kwargs[name]
            if annotation is not Any and not isinstance(value, annotation):
                raise InvalidError(f"{user_cls.__name__}({name}=...) must be {annotation.__name__}, "
                                   f"got {type(value).__name__}.")
            values[name] = value
        elif declaration.required:
            raise InvalidError(f"{user_cls.__name__}() is missing the required parameter {name!r}.")
        else:
            values[name] = declaration.default
    return values


def bind_parameters(user_cls: type, kwargs: dict[str, Any]) -> Any:
    """Build the user's instance inside a container: parameters set, __init__ not called
    unless the class defines its own (and takes the keywords)."""
    if "__init__" in vars(user_cls) and not class_parameters(user_cls):
        return user_cls(**kwargs)
    instance = user_cls.__new__(user_cls)
    for name, value in check_parameters(user_cls, kwargs).items():
        setattr(instance, name, value)
    return instance


def methods_of(user_cls: type) -> dict[str, PartialFunction]:
    """The remotely callable methods of a class: marked `@method`, or only `@batched` or
    `@concurrent` (each of which makes a method of its own, as on the reference platform)."""
    found: dict[str, PartialFunction] = {}
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, PartialFunction) and _is_method(value):
                found[name] = value
    return found


def web_methods_of(user_cls: type) -> dict[str, dict[str, Any]]:
    """The web endpoints of a class: method name -> its web description (see _web.py)."""
    found: dict[str, dict[str, Any]] = {}
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, PartialFunction) and WEB in value.flags:
                found[name] = value.params["web"]
    return found


def check_class_web_methods(user_cls: type, web_methods: dict[str, dict[str, Any]], config: dict[str, Any]) -> None:
    """A class serving web endpoints is built with its default parameters (a request carries
    none); a `@web_server` one runs in one container (its port is a port of the machine)."""
    required = [name for name, (_, p) in class_parameters(user_cls).items() if p.required]
    if required:
        raise InvalidError(
            f"Class {user_cls.__name__} has web endpoints ({', '.join(web_methods)}), so its containers "
            f"build it from its default parameters; give {', '.join(required)} a default "
            f"(ferry.parameter(default=...)).")
    batched = [name for name in web_methods if BATCHED in getattr(user_cls, name).flags]
    if batched:
        raise InvalidError(f"{user_cls.__name__}.{batched[0]}: a web endpoint cannot be @batched; "
                           "HTTP requests are served one input each.")
    if any(web["type"] == "server" for web in web_methods.values()):
        from ._web import one_container_for_web_server

        one_container_for_web_server(f"Class {user_cls.__name__}, with a @web_server method,", config)


def _is_method(partial: PartialFunction) -> bool:
    if METHOD in partial.flags:
        return True
    return bool(partial.flags & {BATCHED, CONCURRENT}) and not partial.flags & {ENTER, "exit", WEB}


def method_concurrency(methods: dict[str, PartialFunction]) -> dict[str, Any] | None:
    """`@concurrent(...)` written on a method rather than on the class: the class's setting."""
    for partial in methods.values():
        if CONCURRENT in partial.flags:
            return {"max_inputs": partial.params["max_inputs"], "target_inputs": partial.params.get("target_inputs")}
    return None


class Method(Invocable):
    """`obj.method`: calls go to the containers of the instance `obj` names."""

    def __init__(self, obj: "Obj", name: str, partial: PartialFunction) -> None:
        self._obj = obj
        self._name = name
        raw = partial.raw_f
        declared = partial.params.get("is_generator")
        self._is_generator = bool(declared) if declared is not None else (
            inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw))

    def _describe(self) -> str:
        return f"Method {self._obj._cls._tag}.{self._name}"

    async def _target(self) -> tuple[Client, str, str | None]:
        client, function_id = await self._obj._bound_target()
        return client, function_id, self._name

    def _local_callable(self) -> Callable[..., Any]:
        return getattr(self._obj._local_instance(), self._name)


class WebMethod(Method):
    """`obj.endpoint` for a method with a web decorator: its URL, and `.remote()` as any method."""

    def get_web_url(self) -> str:
        """The endpoint's path-based URL (see `Function.get_web_url`), once its app runs or is
        deployed. It serves the class built with its default parameters."""
        cls = self._obj._cls
        if not self._obj._default_instance():
            raise InvalidError(f"{self._describe()} is served by the class built with its default parameters; "
                               f"call get_web_url() on {cls._tag}() without parameters.")
        if self._name not in cls._web_urls and cls._lookup is not None:
            run_sync(cls._base_target())
        url = cls._web_urls.get(self._name)
        if url is None:
            raise ExecutionError(f"{self._describe()} has no URL yet: its app is not running. Start it with "
                                 "`ferry serve`, `ferry run`, `ferry deploy` or `with app.run():`.")
        return url


class Obj:
    """A handle on an instance of a served class, as created by `Model(size=3)`."""

    def __init__(self, cls: "Cls", params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        self._bound: tuple[str, str] | None = None  # (class pool id, instance pool id)
        self._local: Any = None

    async def _bound_target(self) -> tuple[Client, str]:
        client, function_id = await self._cls._base_target()
        if self._default_instance():  # the class's own pool, which also serves its web endpoints
            return client, function_id
        if self._bound is None or self._bound[0] != function_id:
            result = await client.request("function.bind", function_id=function_id,
                                          params=serialize_args((), self._params))
            self._bound = (function_id, result["function_id"])
        return client, self._bound[1]

    def _default_instance(self) -> bool:
        """Whether this names the instance built from the class's defaults (`Model()`)."""
        user_cls = self._cls._user_cls
        defaults = ({name: p.default for name, (_, p) in class_parameters(user_cls).items()}
                    if user_cls is not None else {})
        return all(defaults.get(name, _MISSING) == value for name, value in self._params.items())

    def _local_instance(self) -> Any:
        user_cls = self._cls._user_cls
        if user_cls is None:
            raise ExecutionError(f"Class {self._cls._tag!r} was looked up by name; it has no local code.")
        if self._local is None:
            instance = bind_parameters(user_cls, self._params)
            for name in [*enter_methods(user_cls, snap=True), *enter_methods(user_cls, snap=False)]:
                getattr(instance, name)()
            self._local = instance
        return self._local

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._cls._lookup is not None and self._cls._function_id is None:
            run_sync(self._cls._base_target())  # learn the methods of a class looked up by name
        methods = self._cls._methods
        if name in self._cls._web_methods:
            partial = methods.get(name) or PartialFunction(_remote_only(name), {WEB}, {})
            return WebMethod(self, name, partial)
        if name not in methods:
            available = ", ".join(sorted(methods)) or "none"
            raise AttributeError(f"{self._cls._tag} has no @method {name!r} (its methods: {available}).")
        return Method(self, name, methods[name])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"<ferry instance {self._cls._tag}({args})>"


class Cls:
    """A class of an app, created by `@app.cls()` or looked up with `Cls.from_name`."""

    def __init__(self, user_cls: type | None, *, app: "App | None", tag: str, config: dict[str, Any]) -> None:
        self._ferry_raw = user_cls
        self._user_cls = user_cls
        self._app = app
        self._tag = tag
        self._config = config
        self._function_id: str | None = None
        self._lookup: tuple[str, str] | None = None
        self._variant_of: tuple[Cls, dict[str, Any], Any] | None = None  # (parent, overrides, image)
        self._variant_cache: tuple[str, str] | None = None  # (parent id, variant id)
        self._methods: dict[str, PartialFunction] = methods_of(user_cls) if user_cls else {}
        self._web_methods: dict[str, dict[str, Any]] = web_methods_of(user_cls) if user_cls else {}
        self._web_urls: dict[str, str] = {}  # method -> path-based URL, once the app is published
        if user_cls is not None:
            self.__doc__ = user_cls.__doc__
            self.__name__ = user_cls.__name__
            self.__qualname__ = user_cls.__qualname__
            self.__module__ = user_cls.__module__

    def __repr__(self) -> str:
        return f"<ferry.Cls {self._tag}>"

    def __call__(self, **kwargs: Any) -> Obj:
        user_cls = self._user_cls
        legacy_init = user_cls is not None and "__init__" in vars(user_cls) and not class_parameters(user_cls)
        if user_cls is None or legacy_init:
            return Obj(self, dict(kwargs))
        return Obj(self, check_parameters(user_cls, kwargs))

    @staticmethod
    def from_name(app_name: str, name: str) -> "Cls":
        """A handle on class `name` of the deployed app `app_name` (looked up on first use)."""
        cls = Cls(None, app=None, tag=name, config={})
        cls._lookup = (app_name, name)
        return cls

    def with_options(self, **options: Any) -> "Cls":
        """A variant of this class with some options changed (timeout, retries, ...)."""
        from ._resources import function_config, reject_schedule

        reject_schedule(options, "with_options()")
        image = options.pop("image", None)
        overrides = {k: v for k, v in function_config(image=image, **options, stacklevel=4).items() if v is not None}
        if any("max_batch_size" in p.params for p in self._methods.values()):
            from ._partial import check_batching

            check_batching(f"Class {self._tag}", overrides.get("max_inputs"))
        variant = Cls(self._user_cls, app=self._app, tag=self._tag, config={**self._config, **overrides})
        variant._methods, variant._web_methods = self._methods, self._web_methods
        variant._variant_of = (self, overrides, image)
        variant._ferry_image = image if image is not None else getattr(self, "_ferry_image", None)
        return variant

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> "Cls":
        """A variant of this class whose containers each run up to `max_inputs` inputs at once."""
        from ._partial import check_batching, concurrent

        concurrent(max_inputs=max_inputs, target_inputs=target_inputs)  # the same checks
        if any("max_batch_size" in p.params for p in self._methods.values()):
            check_batching(f"Class {self._tag}", max_inputs)
        return self._variant({"max_inputs": max_inputs, "target_inputs": target_inputs})

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> "Cls":
        """A variant of a class with a `@batched` method, with another batch size and wait."""
        from ._partial import batched

        batched(max_batch_size=max_batch_size, wait_ms=wait_ms)  # the same checks
        if not any("max_batch_size" in p.params for p in self._methods.values()):
            raise InvalidError(f"Cls {self._tag}.with_batching(): only a class with a @batched method can "
                               "change its batching.")
        return self._variant({"max_batch_size": max_batch_size, "wait_ms": wait_ms})

    def _variant(self, overrides: dict[str, Any]) -> "Cls":
        variant = Cls(self._user_cls, app=self._app, tag=self._tag, config={**self._config, **overrides})
        variant._methods, variant._web_methods = self._methods, self._web_methods
        variant._variant_of = (self, overrides, None)
        return variant

    @property
    def client(self) -> "Client":
        """The client this object talks to the server with (the configured server's)."""
        return Client.from_env_sync()

    @property
    def object_id(self) -> str | None:
        """The id of the class's pool on the server, once its app runs (or it was looked up)."""
        return self._function_id

    def get_dashboard_url(self) -> str:
        """The dashboard page of this class's app."""
        if self._lookup is not None:
            return run_sync(dashboard_url(f"/apps/{self._lookup[0]}"))
        if self._app is None or self._app._app_id is None:
            raise ExecutionError(f"Class {self._tag!r} is not running: its app has no dashboard page yet.")
        return run_sync(dashboard_url(f"/apps/{self._app._app_id}"))

    def _hydrate(self, function_id: str | None) -> None:
        """Bind to the server-side class pool (None: unbind, e.g. when the app run ended)."""
        self._function_id = function_id

    async def _base_target(self) -> tuple[Client, str]:
        client = await Client.from_env()
        if self._variant_of is not None:
            parent, overrides, image = self._variant_of
            _, parent_id = await parent._base_target()
            if self._variant_cache is None or self._variant_cache[0] != parent_id:
                found = await request_variant(client, parent_id, overrides, image)
                self._variant_cache = (parent_id, found["function_id"])
            return client, self._variant_cache[1]
        if self._function_id is None:
            if self._lookup is not None:
                found = await client.request("function.lookup", app=self._lookup[0], tag=self._lookup[1])
                definition = found["definition"]
                if definition.get("kind") != "class":
                    raise InvalidError(f"{self._lookup[1]!r} is a function; use Function.from_name().")
                self._methods = {name: PartialFunction(_remote_only(name), {METHOD}, dict(info))
                                 for name, info in definition.get("methods", {}).items()}
                self._web_methods = dict(definition.get("web_methods") or {})
                self._web_urls = dict(found.get("web_method_urls") or {})
                self._function_id = found["function_id"]
            else:
                raise ExecutionError(
                    f"Class {self._tag!r} is not running: its app has not started. Use it inside "
                    "`with app.run():`, or run the script with `ferry run`."
                )
        return client, self._function_id

    async def _resolve(self) -> None:
        await self._base_target()

    hydrate = synced(_resolve)

    def definition(self, mount: dict[str, Any] | None, module: str) -> dict[str, Any]:
        user_cls = self._user_cls
        assert user_cls is not None
        config = dict(self._config)
        concurrency = getattr(user_cls, "_ferry_concurrency", None) or method_concurrency(self._methods)
        if concurrency:
            config["max_inputs"] = concurrency["max_inputs"]
            config["target_inputs"] = concurrency["target_inputs"]
        batching = [p.params for p in self._methods.values() if "max_batch_size" in p.params]
        if batching:
            config["max_batch_size"] = batching[0]["max_batch_size"]
            config["wait_ms"] = batching[0]["wait_ms"]
        return {
            "kind": "class",
            "module": module,
            "qualname": user_cls.__qualname__,
            "mount": mount,
            "methods": {name: {"is_generator": Method(Obj(self, {}), name, p)._is_generator}
                        for name, p in self._methods.items()},
            **({"web_methods": self._web_methods} if self._web_methods else {}),
            "config": config,
        }


def _remote_only(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ExecutionError(f"Method {name!r} was looked up by name; it has no local code.")

    method.__name__ = name
    return method
