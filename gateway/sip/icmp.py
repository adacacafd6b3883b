"""ICMP errors for UDP (RFC 3261 §18.4: an ICMP "unreachable" is a transport error).

An unconnected UDP socket never hears that its datagram was refused unless it asks the
kernel for the error queue (Linux ``IP_RECVERR``); then each ICMP port/host/network
unreachable comes back with the destination of the datagram that caused it. Without
this a request to a dead host waits for Timer B/F (32 s) instead of failing at once.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Callable

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
#: struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, pad, info, data.
EXTENDED_ERROR = struct.Struct("=IBBBBII")
ORIGIN_ICMP, ORIGIN_ICMP6 = 2, 3
MAX_ERRORS_PER_READ = 64

#: (host, port, reason) of a destination that answered with an ICMP error.
Report = Callable[[str, int, str], None]


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to queue ICMP errors on ``sock``; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    except OSError:
        return False
    return True


def drain(sock: socket.socket, report: Report) -> int:
    """Read the queued ICMP errors of ``sock`` (bounded), calling ``report`` for each;
    how many were read."""
    count = 0
    for _ in range(MAX_ERRORS_PER_READ):
        try:
            _, ancillary, _, destination = sock.recvmsg(
                1, 512, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except OSError:  # the queue is empty (EAGAIN), or cannot be read
            break
        count += 1
        reason = _reason(ancillary)
        if reason is not None and destination:
            report(str(destination[0]).split("%", 1)[0], int(destination[1]), reason)
    return count


def _reason(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    for _, _, data in ancillary:
        if len(data) < EXTENDED_ERROR.size:
            continue
        code, origin, _, _, _, _, _ = EXTENDED_ERROR.unpack_from(data)
        if origin not in (ORIGIN_ICMP, ORIGIN_ICMP6):
            continue  # a local error (e.g. EMSGSIZE): the send itself reported it
        if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                    errno.EHOSTDOWN, errno.ENETDOWN):
            return f"ICMP {errno.errorcode.get(code, code)} ({os.strerror(code)})"
    return None
