"""`python -m stream` is `steplog`."""

from stream.cli import main

main()
