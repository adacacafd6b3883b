"""Exceptions of the SIP stack."""

from __future__ import annotations


class SipSyntaxError(ValueError):
    """Text that does not follow the RFC 3261 grammar; the message names the problem
    and is short enough to become a ``400`` reason phrase."""
