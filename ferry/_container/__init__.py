"""Code that runs inside containers (see runner.py)."""
