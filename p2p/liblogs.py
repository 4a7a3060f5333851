"""py-libp2p's log output, routed through the application's logging like every other library's.

At import, py-libp2p 0.8 configures its ``libp2p`` logger from ``LIBP2P_DEBUG``; when that is unset
(always, for a daemon) it clears the logger's handlers and turns propagation off. A logger that
neither has handlers nor propagates falls back to :data:`logging.lastResort`, which writes the bare
message to stderr: with three peers, dozens of unformatted lines a second that no ``[log]`` setting
reaches, between the daemon's own structured lines. (py-libp2p's modules contain no ``print`` calls
on their normal paths, only in docstrings and debug helpers; the logger is the whole problem.)

:func:`route_libp2p_logs` undoes that: the ``libp2p`` logger propagates again, so its records go to
the handlers and formatter the application installed, at the level it chose for ``libp2p`` (modules
that pin a level of their own, as ``libp2p.network.auto_connector`` pins INFO, are unpinned so that
one level governs them all). It also
demotes the one warning that is not a problem at all: "Failed to read DHT message from stream"
raised with ``StreamEOF``, which is how py-libp2p's DHT handler learns that the asking peer closed
its stream after one request (every query does; the handler mistakes the clean end for a failed
read). That becomes a DEBUG record; other read failures stay warnings.

``p2p.host`` and ``p2p.dht`` call it at import, so any program that builds a host gets it; it is
idempotent and leaves py-libp2p's own set-up alone when ``LIBP2P_DEBUG`` asks for it.
"""

from __future__ import annotations

import logging
import os

import libp2p  # noqa: F401 - its import runs py-libp2p's logging set-up, which this undoes
from libp2p.network.stream.exceptions import StreamEOF

LIBP2P_LOGGER = "libp2p"
DHT_LOGGER = "libp2p.kad_dht.kad_dht"
_CLEAN_EOF_MESSAGE = "Failed to read DHT message from stream: %s"


class _DemoteCleanStreamEnd(logging.Filter):
    """Turns the DHT handler's warning about a peer's clean end of stream into a DEBUG record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.msg == _CLEAN_EOF_MESSAGE
            and isinstance(record.args, tuple)
            and len(record.args) == 1
            and isinstance(record.args[0], StreamEOF)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_FILTER = _DemoteCleanStreamEnd()


def route_libp2p_logs() -> None:
    """Let py-libp2p's records reach the application's handlers (see the module docstring)."""
    dht_logger = logging.getLogger(DHT_LOGGER)
    if _FILTER not in dht_logger.filters:
        dht_logger.addFilter(_FILTER)
    if os.environ.get("LIBP2P_DEBUG"):
        return  # py-libp2p's own debug logging was asked for: its handlers, its files
    logging.getLogger(LIBP2P_LOGGER).propagate = True
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(LIBP2P_LOGGER + ".") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)
