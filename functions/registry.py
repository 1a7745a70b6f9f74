"""The function registry: `@function("name", params=Model)` makes a function triggerable.

A function takes `(ctx, params)` and returns a JSON-serialisable result. It may
be `async def` (runs on the event loop) or a plain `def` (runs in a thread
from the default pool, with a synchronous `Context` bridged to the loop).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from storage.errors import SteplogError

F = TypeVar("F", bound=Callable[..., Any])


class UnknownFunction(SteplogError):
    """No function is registered under this name."""

    status = 404
    title = "Unknown function"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    fn: Callable[..., Any]
    params: type[BaseModel]
    is_async: bool
    max_attempts: int
    timeout: float | None
    description: str
    steps: tuple[str, ...] = ()


_registry: dict[str, FunctionSpec] = {}


def function(
    name: str,
    *,
    params: type[BaseModel],
    max_attempts: int = 3,
    timeout: float | None = None,
    steps: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Register `fn` under `name`, its params validated by the pydantic model `params`.

    `timeout` is the run's time limit in seconds (a `run_timeout_s` param, when
    the model has one, overrides it); `max_attempts` bounds retries; `steps`
    names the steps the function normally takes, so a view can show them pending.
    """

    def register(fn: F) -> F:
        if name in _registry and _registry[name].fn is not fn:
            raise SteplogError(f"function {name!r} is registered twice")
        _registry[name] = FunctionSpec(
            name=name,
            fn=fn,
            params=params,
            is_async=inspect.iscoroutinefunction(fn),
            max_attempts=max_attempts,
            timeout=timeout,
            description=inspect.getdoc(fn) or "",
            steps=steps,
        )
        return fn

    return register


def get(name: str) -> FunctionSpec:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownFunction(f"no function named {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(_registry)


BUILTIN_MODULES = ("functions.ticker", "functions.scrape")


def load(modules: Iterable[str] = ()) -> list[str]:
    """Import the built-in functions and any user modules (`STEPLOG_FUNCTIONS`)."""
    for module in (*BUILTIN_MODULES, *modules):
        if module:
            importlib.import_module(module)
    return names()
