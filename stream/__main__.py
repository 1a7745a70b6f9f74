"""`python -m stream` is `steplog`."""

from stream.cli.main import main

main()
