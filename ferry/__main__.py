"""`python -m ferry`: the same as the `ferry` command."""

from .cli import main

main()
