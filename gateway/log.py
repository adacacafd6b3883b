"""The gateway's loggers: twisted.logger, filtered by the configured ``log_level``."""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def get_logger(namespace: str) -> Logger:
    """A logger whose events pass the gateway's level filter."""
    return Logger(namespace=namespace, observer=_observer)


def set_log_level(name: str) -> None:
    """Set the level below which gateway events are dropped (``debug`` … ``critical``)."""
    _predicate.setLogLevelForNamespace("", LogLevel.levelWithName(name))
    _predicate.defaultLogLevel = LogLevel.levelWithName(name)


def debug_enabled() -> bool:
    """Whether debug events pass (a cheap check before building one on a hot path)."""
    return _predicate.defaultLogLevel <= LogLevel.debug
