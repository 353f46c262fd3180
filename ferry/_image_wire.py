"""Resolving an Image recipe into the definition the server builds (`Image._wire`).

    {"steps": [{"kind", "args", "force", "label"}, ...],   build steps, base first
     "mounts": [{"kind", "remote_path", "files", "digest"}],  add_local_* mounted at start
     "key": chained hash of the resolved steps,
     "recipe": the recipe's identity as written (for `Image.imports()` in containers),
     "client_python": "3.11"}

Local files become manifests of blob hashes (the blobs are uploaded with the definition);
`run_function` becomes a blob holding the pickled `(function, args, kwargs)`. The server
recomputes every layer key from this; `key` identifies the image in messages and listings.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._image_files import (
    Manifest, collect_dir, collect_file, collect_python_source, pyproject_dependencies,
    read_file_blob,
)
from .exception import InvalidError, SerializationError

if TYPE_CHECKING:
    from ._image import Image, LocalMount, Step, WireImage


def step_key(parent: str, kind: str, args: dict[str, Any]) -> str:
    """The cache key of a step: hash of its resolved definition and its parent's key."""
    blob = json.dumps({"parent": parent, "kind": kind, "args": args}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def resolve(image: "Image", *, force_all: bool = False) -> "WireImage":
    from ._image import WireImage, local_python_version

    blobs: dict[str, bytes] = {}
    steps: list[dict[str, Any]] = []
    for step in image._steps:
        for kind, args, label in _resolve_step(step, blobs):
            steps.append({"kind": kind, "args": args, "force": bool(step.force or force_all), "label": label})
    if not steps or steps[0]["kind"] not in ("debian_slim", "from_registry"):
        raise InvalidError("An image starts with Image.debian_slim(), Image.from_registry() or "
                           "Image.from_dockerfile().")
    _check_run_function_python(steps)
    key = ""
    for resolved in steps:
        key = step_key(key, resolved["kind"], resolved["args"])
    mounts = [_resolve_mount(m, blobs) for m in image._mounts]
    definition = {"steps": steps, "mounts": mounts, "key": key, "recipe": image._recipe_id(),
                  "client_python": local_python_version()}
    return WireImage(definition, blobs)


def _resolve_step(step: "Step", blobs: dict[str, bytes]) -> list[tuple[str, dict[str, Any], str]]:
    kind, args = step.kind, dict(step.args)
    if kind == "dockerfile":
        return _dockerfile(args, blobs)
    if "secrets" in args:
        from ._secret import secret_references

        args["secrets"] = secret_references(args["secrets"]) or []
    args.pop("gpu", None)
    if kind == "debian_slim":
        version = args["python_version"]
        return [(kind, args, f"debian_slim(python_version={version or 'local'})")]
    if kind == "from_registry":
        return [(kind, args, f"from_registry {args['ref']}")]
    if kind in ("pip_install", "uv_pip_install"):
        packages = list(args["packages"])
        pyproject = args.pop("pyproject", None)
        groups = args.pop("optional_dependencies", [])
        label = f"{kind} {' '.join(packages)}"
        if pyproject is not None:
            packages += pyproject_dependencies(Path(pyproject).expanduser(), groups)
            label = f"{kind} from {pyproject}"
        args["packages"] = packages
        requirements = []
        for path in args.get("requirements") or []:
            digest, data = read_file_blob(Path(path).expanduser(), f"{kind} requirements")
            blobs[digest] = data
            requirements.append(digest)
            label = f"{kind} -r {path}"
        args["requirements"] = requirements
        return [(kind, args, label)]
    if kind == "apt_install":
        return [(kind, args, f"apt_install {' '.join(args['packages'])}")]
    if kind == "env":
        return [(kind, args, "env " + " ".join(f"{k}=…" for k in args["vars"]))]
    if kind == "workdir":
        return [(kind, args, f"workdir {args['path']}")]
    if kind == "run_commands":
        return [(kind, args, "run_commands " + "; ".join(args["commands"]))]
    if kind == "run_function":
        return [_run_function(args, blobs)]
    if kind == "copy":
        manifest = _manifest(args["source"], args["local"], args["remote_path"], args["ignore"])
        blobs.update(manifest.blobs)
        resolved = {"kind": args["source"], "remote_path": args["remote_path"], "files": manifest.files}
        label = f"add_local_{args['source']} {' '.join(args['local'])} -> {args['remote_path']} (copy)"
        return [("copy", resolved, label)]
    if kind == "dockerfile_cmd":
        return [(kind, args, f"{args['instruction']} {args['value']}")]
    raise InvalidError(f"Unknown image step {kind!r}.")


def _manifest(source: str, local: list[str], remote_path: str, ignore: Any) -> Manifest:
    if source == "dir":
        return collect_dir(Path(local[0]).expanduser(), ignore)
    if source == "file":
        return collect_file(Path(local[0]).expanduser(), Path(remote_path).name)
    return collect_python_source(local, ignore)


def _resolve_mount(mount: "LocalMount", blobs: dict[str, bytes]) -> dict[str, Any]:
    manifest = _manifest(mount.kind, list(mount.local), mount.remote_path, mount.ignore)
    blobs.update(manifest.blobs)
    return {"kind": mount.kind, "remote_path": mount.remote_path, "files": manifest.files,
            "digest": manifest.digest}


def _dockerfile(args: dict[str, Any], blobs: dict[str, bytes]) -> list[tuple[str, dict[str, Any], str]]:
    from ._dockerfile import image_from_dockerfile

    path = Path(args["path"]).expanduser()
    context = Path(args["context_dir"]).expanduser() if args["context_dir"] else path.parent
    image = image_from_dockerfile(path, context, args["build_args"], args["ignore"])
    resolved = []
    for step in image._steps:
        resolved.extend(_resolve_step(step, blobs))
    return resolved


def _user_module(module_name: str) -> Any:
    """The function's module when it is the user's code (pickled by value), else None."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if module is None or module_name == "__main__" or not file:
        return None
    path = Path(file).resolve()
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "purelib", "platlib")}
    if any(path.is_relative_to(p) for p in installed) or module_name.split(".")[0] == "ferry":
        return None
    return module


def _run_function(args: dict[str, Any], blobs: dict[str, bytes]) -> tuple[str, dict[str, Any], str]:
    import cloudpickle

    function = args["function"]
    name = f"{function.__module__}.{function.__qualname__}"
    module = _user_module(function.__module__)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        data = cloudpickle.dumps((function, tuple(args["args"]), dict(args["kwargs"])))
    except Exception as exc:
        raise SerializationError(
            f"Image.run_function({name}) could not be pickled: {exc}. The function travels by value "
            "with the globals it uses; keep it self-contained (import inside it)."
        ) from None
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)
    digest = hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    resolved = {"function": digest, "name": name, "timeout": args["timeout"], "secrets": args["secrets"]}
    if args.get("volumes"):  # references, resolved to volume ids by the server before building
        resolved["volumes"] = args["volumes"]
    return "run_function", resolved, f"run_function {name}"


def _check_run_function_python(steps: list[dict[str, Any]]) -> None:
    from ._image import local_python_version

    base = steps[0]
    version = base["args"].get("python_version") if base["kind"] == "debian_slim" else None
    here = local_python_version()
    if version and version != here and any(s["kind"] == "run_function" for s in steps):
        raise InvalidError(
            f"Image.run_function() pickles the function with Python {here}, but the image runs "
            f"Python {version}. Use debian_slim(python_version=\"{here}\") or run the build code "
            "with run_commands(\"python -c ...\")."
        )
