"""`python -m ferry.server [--host H] [--port P] [--fallback-port]`: run the control plane."""

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
    args = parser.parse_args()
    try:
        run(host=args.host, port=args.port, fallback_port=args.fallback_port)
    except (Error, NotImplementedError) as exc:
        # one line, which `ferry server start` / `ferry run` show as the reason it did not start
        print(FAILURE_PREFIX + " ".join(str(exc).split()), file=sys.stderr, flush=True)
        raise SystemExit(1) from None


main()
