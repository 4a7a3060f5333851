"""Logging set-up: readable text by default, one JSON object per line with ``format = "json"``.

Structured fields are passed with ``extra={...}`` and appear as ``key=value`` in text and as keys
in JSON. py-libp2p, multiaddr, zeroconf and hypercorn loggers are held at their own (quieter) level.
Secrets (the API token, private keys) are never passed to a logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

NOISY_LOGGERS = ("libp2p", "multiaddr", "zeroconf", "hypercorn.error", "async_service", "aioquic")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00Z INFO accel_node.node: message key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", fmt: str = "text", libp2p_level: str = "warning") -> None:
    """Send logs to stderr in ``fmt`` ("text" or "json"); idempotent.

    Python warnings raised by libraries (``warnings.warn``) become ``py.warnings`` records, so that
    the daemon's stderr holds only lines of this format.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(libp2p_level.upper())
    logging.captureWarnings(True)
