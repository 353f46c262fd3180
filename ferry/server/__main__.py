"""`python -m ferry.server [--host H] [--port P] [--fallback-port]`: run the control plane."""

from __future__ import annotations

import argparse
import sys

from ..exception import Error
from .server import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ferry.server")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--fallback-port", action="store_true",
                        help="if the port is taken, listen on a free one instead")
    args = parser.parse_args()
    try:
        run(host=args.host, port=args.port, fallback_port=args.fallback_port)
    except (Error, NotImplementedError) as exc:
        print(f"ferry server: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


main()
