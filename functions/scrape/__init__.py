"""The `scrape` function: Playwright on real pages, durable steps, a guarded network.

Importing the package registers the function (`functions.registry.BUILTIN_MODULES`).
"""

from functions.scrape.scrape import scrape

__all__ = ["scrape"]
