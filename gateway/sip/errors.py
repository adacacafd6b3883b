"""Exceptions of the SIP stack."""

from __future__ import annotations


class SipSyntaxError(ValueError):
    """Text that does not follow the RFC 3261 grammar; the message names the problem
    and is short enough to become a ``400`` reason phrase."""


class IllegalTransition(RuntimeError):
    """The transaction user asked a transaction for something its state machine does
    not allow (e.g. a provisional response after the final one); the message names the
    transaction, its state and the event."""
