"""`ferry.experimental`, as `modal.experimental` has it. Helpers that Ferry's machinery
supports work; each of the others raises NotImplementedError naming itself and why.

| helper | on Ferry |
| --- | --- |
| `stop_fetching_inputs()` | works: the container takes no more inputs, finishes its running ones, runs @exit |
| `get_local_input_concurrency()` | works: the inputs this container may run at once |
| `set_local_input_concurrency(n)` | not supported: a container's concurrency is fixed when it starts |
| `update_autoscaler(obj, ...)` | works: `obj.update_autoscaler(...)` |
| `list_deployed_apps()` | works: the deployed apps of the server (administrators) |
| `clustered()`, `get_cluster_info()` | not supported: no multi-node clusters |
| `raw_dockerfile_image()`, `raw_registry_image()` | not supported: images always get Ferry's Python set up |
| `image_delete()` | not supported: use `ferry image rm` |
"""

from __future__ import annotations

from typing import Any

from ._running import container as _container


def stop_fetching_inputs() -> None:
    """Inside a container: take no more inputs after those running now. The control plane
    sends the container nothing more (waiting inputs go to other containers), and the
    container exits (running @exit) once its running inputs finish."""
    _container().stop_fetching_inputs()  # type: ignore[attr-defined]


def get_local_input_concurrency() -> int:
    """Inside a container: how many inputs it runs at once (`@concurrent(max_inputs=)`, or
    `max_batch_size` for a batched function; 1 otherwise)."""
    config = _container().config  # type: ignore[attr-defined]
    return int(config.get("max_batch_size") or config.get("max_inputs") or 1)


def set_local_input_concurrency(concurrency: int) -> None:
    raise NotImplementedError(
        "modal.experimental.set_local_input_concurrency() is not supported by Ferry: a container's "
        "concurrency is fixed when it starts (@concurrent(max_inputs=...)).")


def update_autoscaler(obj: Any, *, min_containers: int | None = None, max_containers: int | None = None,
                      buffer_containers: int | None = None, scaledown_window: int | None = None) -> None:
    """Change the autoscaler settings of a running or deployed Function (as
    `Function.update_autoscaler`)."""
    if not hasattr(obj, "update_autoscaler"):
        raise NotImplementedError(
            f"modal.experimental.update_autoscaler() on a {type(obj).__name__} is not supported by Ferry; "
            "pass a Function.")
    obj.update_autoscaler(min_containers=min_containers, max_containers=max_containers,
                          buffer_containers=buffer_containers, scaledown_window=scaledown_window)


def list_deployed_apps(environment_name: str = "", client: Any = None) -> list[dict[str, Any]]:
    """The deployed apps of the server: `[{app_id, name, ...}]`, as `ferry app list` shows them."""
    if client is not None or environment_name:
        raise NotImplementedError(
            "modal.experimental.list_deployed_apps(client=..., environment_name=...) is not supported by "
            "Ferry: it has no environments and uses the configured server.")
    from ._client import Client
    from ._sync import run_sync

    async def fetch() -> list[dict[str, Any]]:
        client = await Client.from_env()
        rows = await client.request("app.list")
        return [row for row in rows if row.get("state") == "deployed"]

    return run_sync(fetch())


def _unsupported(name: str, why: str) -> Any:
    def helper(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"modal.experimental.{name}() is not supported by Ferry: {why}.")

    helper.__name__ = helper.__qualname__ = name
    helper.__doc__ = f"Not supported by Ferry: {why}."
    return helper


clustered = _unsupported("clustered", "Ferry does not run multi-node clusters of containers")
get_cluster_info = _unsupported("get_cluster_info", "Ferry does not run multi-node clusters of containers")
raw_dockerfile_image = _unsupported(
    "raw_dockerfile_image", "images always get Ferry's Python set up; use Image.from_dockerfile()")
raw_registry_image = _unsupported(
    "raw_registry_image", "images always get Ferry's Python set up; use Image.from_registry()")
image_delete = _unsupported("image_delete", "remove cached images with `ferry image rm`")

__all__ = [
    "clustered",
    "get_cluster_info",
    "get_local_input_concurrency",
    "image_delete",
    "list_deployed_apps",
    "raw_dockerfile_image",
    "raw_registry_image",
    "set_local_input_concurrency",
    "stop_fetching_inputs",
    "update_autoscaler",
]
