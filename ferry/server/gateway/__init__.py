"""The web gateway: serves web endpoints (see gateway.py, routes.py, exchange.py, tokens.py)."""

from .gateway import Gateway
from .routes import endpoint_label

__all__ = ["Gateway", "endpoint_label"]
