"""The error taxonomy of accel-node.

Every error a user can cause has a message that says what to do; the CLI maps
:class:`UsageError` subclasses to exit code 2 and every other :class:`AccelNodeError` to 1.
"""

from __future__ import annotations


class AccelNodeError(Exception):
    """Base class of every error accel-node raises on purpose."""


class UsageError(AccelNodeError):
    """The user asked for something malformed (bad config, bad arguments)."""


class ConfigError(UsageError):
    """The configuration is invalid; ``problems`` lists ``(key, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {key}: {message}" for key, message in problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")


class HomeError(AccelNodeError):
    """The node home is missing, unreadable or inconsistent."""


class HomeLockedError(HomeError):
    """Another daemon is running on the same node home."""


class DaemonNotRunningError(AccelNodeError):
    """No daemon is running for the node home the CLI was pointed at."""


class ApiError(AccelNodeError):
    """The control API answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class StoreError(AccelNodeError):
    """The SQLite store could not be opened or migrated."""
