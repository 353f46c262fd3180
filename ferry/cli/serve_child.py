"""One load of the app for `ferry serve`, in a fresh interpreter:

    python -m ferry.cli.serve_child FILE[::APP] OUT

imports FILE, builds the app's function definitions (as `ferry run` would publish them),
uploads its source and image blobs to the server (FERRY_SERVER_URL), and writes
`{name, specs, files}` to OUT (msgpack): `files` are the local paths of the app's source, which
`ferry serve` watches. An import error is printed with its traceback and exits 1: the serving
app keeps its previous version.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import msgpack


def load(ref: str, out: Path) -> None:
    from .._client import Client
    from .._mount import source_root
    from . import loader

    path, app_var = loader.split_ref(ref)
    module = loader.import_file(path)
    app = loader.find_app(module, app_var)
    specs, mount = app._definitions()
    blobs = {**(mount.contents if mount is not None else {}), **getattr(app, "_image_blobs", {})}
    files = {str(Path(path).resolve())}
    if mount is not None:
        located = source_root(module)
        if located is not None:
            files.update(str(located[0] / relpath) for relpath in mount.files)
    if blobs:
        client = Client.from_env_sync()
        missing = client.request_sync("blob.missing", hashes=list(blobs))
        for digest in missing:
            client.request_sync("blob.put", data=blobs[digest], hash=digest)
    out.write_bytes(msgpack.packb({"name": app.name or "ephemeral-app", "specs": specs, "files": sorted(files)},
                                  use_bin_type=True))


def main() -> None:
    ref, out = sys.argv[1], Path(sys.argv[2])
    try:
        load(ref, out)
    except BaseException:  # noqa: BLE001 - whatever the user's file does, report it
        traceback.print_exc()
        sys.stderr.flush()
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
