"""`python -m ferry._container`: the process a runtime starts for each container."""

from .runner import main

main()
