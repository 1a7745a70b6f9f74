"""The `scrape` and `scrape_batch` functions: Playwright on real pages, durable steps,
a guarded network.

Importing the package registers the functions (`functions.registry.BUILTIN_MODULES`).
"""

from functions.scrape.batch import scrape_batch
from functions.scrape.scrape import scrape

__all__ = ["scrape", "scrape_batch"]
