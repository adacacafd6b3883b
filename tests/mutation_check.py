"""Break each transaction timer (and Timer C's reset, and the core's validation) in
turn and run the unit tests that should notice: every line must say "failed". Run by
hand (`python tests/mutation_check.py`); it restores every file it touches."""

from __future__ import annotations

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_core.py",
    "tests/test_transaction_timers.py",
    "tests/test_transaction.py",
    "tests/test_sip_torture.py",
]
MUTATIONS = [
    (
        "gateway/sip/transaction.py",
        "min(2 * txn.retransmit_interval, self.t2)",
        "min(3 * txn.retransmit_interval, self.t2)",
        "Timer G backoff",
    ),
    (
        "gateway/sip/transaction.py",
        'self._schedule(now + (0 if reliable else self.t4), "I", txn)',
        'self._schedule(now + (0 if reliable else self.t1), "I", txn)',
        "Timer I = T1",
    ),
    (
        "gateway/sip/transaction.py",
        'self._schedule(now + 64 * self.t1, "L", txn)',
        'self._schedule(now + 32 * self.t1, "L", txn)',
        "Timer L halved",
    ),
    (
        "gateway/sip/transaction.py",
        'self._schedule(now + 64 * self.t1, "H", txn)',
        'self._schedule(now + 63 * self.t1, "H", txn)',
        "Timer H short",
    ),
    (
        "gateway/sip/transaction.py",
        '(0 if txn.reply_to.reliable else 64 * self.t1), "J", txn)',
        '(0 if txn.reply_to.reliable else 32 * self.t1), "J", txn)',
        "Timer J halved",
    ),
    (
        "gateway/sip/client_transaction.py",
        '(0 if txn.destination.reliable else 32.0), "D", txn)',
        '(0 if txn.destination.reliable else 16.0), "D", txn)',
        "Timer D halved",
    ),
    (
        "gateway/sip/client_transaction.py",
        '(0 if txn.destination.reliable else self.t4), "K", txn)',
        '(0 if txn.destination.reliable else self.t1), "K", txn)',
        "Timer K = T1",
    ),
    (
        "gateway/sip/client_transaction.py",
        'self._schedule(now + 64 * self.t1, "M", txn)',
        'self._schedule(now + 32 * self.t1, "M", txn)',
        "Timer M halved",
    ),
    (
        "gateway/sip/client_transaction.py",
        "                txn.interval *= 2\n",
        "                txn.interval *= 3\n",
        "Timer A backoff",
    ),
    (
        "gateway/server/proxy.py",
        "        branch.timer_c = deadline  # a later reset",
        "        branch.timer_c = branch.timer_c or deadline  # a later reset",
        "Timer C not reset",
    ),
    (
        "gateway/server/core.py",
        "    if request.cseq.method != request.method:",
        "    if False:",
        "CSeq check dropped",
    ),
    (
        "gateway/sip/client_transaction.py",
        'self._schedule(now + 64 * self.t1, "B" if invite else "F", txn)',
        'self._schedule(now + 60 * self.t1, "B" if invite else "F", txn)',
        "Timers B and F short",
    ),
]


def main() -> int:
    """Run every mutation; exit 1 if one of them went unnoticed."""
    unnoticed = 0
    for path, old, new, what in MUTATIONS:
        target = REPO / path
        original = target.read_text()
        assert old in original, what
        target.write_text(original.replace(old, new, 1))
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *TESTS],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=600,
            )
        finally:
            target.write_text(original)
        verdict = result.stdout.strip().splitlines()[-1]
        unnoticed += "failed" not in verdict
        print(f"{what:24s} {verdict}")
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main())
