"""The ASGI app for an external server: `hypercorn --config infra/hypercorn.toml stream.asgi:app`.

Configured from `STEPLOG_*` environment variables, like `steplog serve`, and logging
the same lines in the same format (`STEPLOG_LOG_FORMAT`).
"""

from __future__ import annotations

from stream.app import create_app
from stream.logs import configure
from stream.middleware import idle_close, protocol_errors, request_heads
from stream.settings import Settings

settings = Settings.from_env()
configure(settings.log_level, settings.log_format)
app = create_app(settings)
# Hypercorn's CLI imports this module in each worker before serving.
idle_close.install()
protocol_errors.install()
request_heads.install(settings, app.extensions["steplog.metrics"])
