"""What sealing overlay records costs (issue 16: contacts readable only by those who know
the AoR): each step of a record's life, side by side in one run, with the gateway's
default signer (a self-signed ECDSA P-256 certificate).

- ``sign``: :meth:`Signer.sign_record` as the mirror calls it (seal + ECDSA signature);
- ``seal``: only the sealing part (AoR id, key and AES-256-GCM of the contacts);
- ``verify``: what a storing node does with a record it has not seen (shape, ECDSA);
- ``open``: what a reader adds once the signature verified (key from the AoR, decrypt).

Every step is timed over ``--records`` different AoRs (caches cleared, so nothing is
served from them), ``--rounds`` times; the median round is reported in µs per record.
Also the size of a record (canonical JSON) and how much of it the sealed box takes.

Usage::

    python bench/record_cost.py [--records 2000] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.overlay import record as record_module  # noqa: E402
from gateway.overlay.record import (  # noqa: E402
    Contact,
    Signer,
    canonical,
    open_record,
    seal,
    verify_record,
)
from gateway.sip.tls import self_signed  # noqa: E402

ROUTE = "sip:198.51.100.2:5060;lr"


def _timed(step: Callable[[int], Any], count: int, rounds: int) -> float:
    """Median over ``rounds`` of the µs per call of ``step(i)`` for i in range(count)."""
    per_round = []
    for _ in range(rounds):
        record_module._VERIFIED.clear()  # noqa: SLF001 - measure the work, not the cache
        record_module._OPENED.clear()  # noqa: SLF001
        started = time.perf_counter()
        for i in range(count):
            step(i)
        per_round.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(per_round)


def main() -> int:
    """Run the steps and print one line each (and ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    certificate, key = self_signed(["b.example"], [])
    signer = Signer(key, certificate)
    now = time.time()
    aors = [f"sip:user{i}@b.example" for i in range(args.records)]
    contacts = [Contact(f"sip:user{i}@192.0.2.7:5060;transport=udp", 1.0, now + 3600)
                for i in range(args.records)]
    listed = [[{"uri": c.uri, "q": c.q, "expires": int(c.expires)}] for c in contacts]
    signed = [signer.sign_record(aors[i], [contacts[i]], ROUTE, 3600).raw
              for i in range(args.records)]
    sealed = [verify_record(obj) for obj in signed]
    results = {
        "sign": _timed(lambda i: signer.sign_record(aors[i], [contacts[i]], ROUTE, 3600),
                       args.records, args.rounds),
        "seal": _timed(lambda i: seal(aors[i], listed[i], ROUTE), args.records, args.rounds),
        "verify": _timed(lambda i: verify_record(signed[i]), args.records, args.rounds),
        "open": _timed(lambda i: open_record(sealed[i], aors[i]), args.records, args.rounds),
    }
    size = len(canonical(signed[0]))
    box = len(signed[0]["box"])
    print(f"record_cost: {args.records} records x {args.rounds} rounds (median round), "
          f"ECDSA P-256 self-signed certificate")
    for step, micros in results.items():
        print(f"  {step:<7} {micros:8.1f} µs/record")
    print(f"  sealing is {results['seal'] / results['sign'] * 100:.1f} % of signing, "
          f"opening {results['open'] / results['verify'] * 100:.1f} % of verifying")
    print(f"  record {size} bytes, of which box {box} (base64 of nonce, one contact, "
          f"route and AoR, tag)")
    if args.json:
        args.json.write_text(json.dumps({"micros": results, "record_bytes": size,
                                         "box_bytes": box}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
