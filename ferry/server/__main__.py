"""`python -m ferry.server [--host H] [--port P] [--fallback-port] [--ray-address HOST:PORT]`:
run the control plane."""

from __future__ import annotations

import argparse
import sys

from .._local_server import FAILURE_PREFIX
from ..exception import Error
from .server import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ferry.server")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--fallback-port", action="store_true",
                        help="if the default port is taken, listen on a free one instead")
    parser.add_argument("--ray-address", default=None,
                        help="place containers on the Ray cluster at HOST:PORT (the ray runtime)")
    args = parser.parse_args()
    try:
        run(host=args.host, port=args.port, fallback_port=args.fallback_port, ray_address=args.ray_address)
    except (Error, NotImplementedError) as exc:
        # one line, which `ferry server start` / `ferry run` show as the reason it did not start
        print(FAILURE_PREFIX + " ".join(str(exc).split()), file=sys.stderr, flush=True)
        raise SystemExit(1) from None


main()
