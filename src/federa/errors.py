"""Exceptions a user of federa can meet, all under one root.

Every error a user can cause (a bad config, a bad file, a bad message, an unknown
client) is a `FederaError` whose message says what was wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "ClientError",
    "ConfigError",
    "FederaError",
    "TransportError",
]


class FederaError(Exception):
    """Base class of every error federa raises on purpose."""


class ConfigError(FederaError, ValueError):
    """A setting, flag or config file value is invalid."""


class TransportError(FederaError):
    """Tasks could not be delivered to clients or results not received."""


class ClientError(FederaError):
    """A client returned something that breaks the client contract."""


class AggregationError(FederaError):
    """A strategy could not aggregate the results it was given."""
