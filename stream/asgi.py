"""The ASGI app for an external server: `hypercorn --config infra/hypercorn.toml stream.asgi:app`.

Configured from `STEPLOG_*` environment variables, like `steplog serve`.
"""

from __future__ import annotations

from stream.app import create_app
from stream.settings import Settings

app = create_app(Settings.from_env())
