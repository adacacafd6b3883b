"""``p2psip-admin``: inspect and maintain the gateway's registry from the command line.

Exit status: 0 success, 1 nothing found (no such binding), 2 usage, configuration or
database error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.location.binding import Binding
from gateway.location.store import LocationStore, RegistryUnavailable

PROG = "p2psip-admin"
EXIT_OK, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2
REGISTRY_FILE = "registry.sqlite3"
DEFAULT_DATA_DIR = "data"


class AdminError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``p2psip-admin``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Manage the p2psip-gateway registry.")
    parser.add_argument("--config", metavar="PATH", help="gateway configuration file")
    parser.add_argument(
        "--db", metavar="URL", help="registry database URL (overrides the configuration)"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"gateway data directory (the registry is DIR/{REGISTRY_FILE})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bindings = commands.add_parser("bindings", help="list or remove registered contacts")
    bindings_commands = bindings.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = bindings_commands.add_parser("list", help="show live bindings")
    listing.add_argument("aor", nargs="?", metavar="AOR", help="only this address-of-record")
    listing.add_argument("--json", action="store_true", help="print a JSON list of objects")
    listing.set_defaults(handler=cmd_bindings_list)
    remove = bindings_commands.add_parser("remove", help="remove every binding of an AoR")
    remove.add_argument("aor", metavar="AOR", help="address-of-record, as 'bindings list' shows")
    remove.set_defaults(handler=cmd_bindings_remove)

    db = commands.add_parser("db", help="manage the registry schema")
    db_commands = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or upgrade the registry schema")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    return parser


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.expanduser().resolve()}"


def database_url(args: argparse.Namespace) -> str:
    """The registry URL: ``--db``, else ``--data-dir``, else the configuration."""
    if args.db:
        return args.db
    if args.data_dir and not args.config:
        return _sqlite_url(Path(args.data_dir) / REGISTRY_FILE)
    try:
        from gateway.config import load_config
    except ModuleNotFoundError as exc:
        if exc.name != "gateway.config":
            raise
        if args.config:
            raise AdminError("this installation cannot read configuration files; use --db") from exc
        return _sqlite_url(Path(DEFAULT_DATA_DIR) / REGISTRY_FILE)
    try:
        if args.data_dir:
            config = load_config(args.config, {"data_dir": args.data_dir})
        else:
            config = load_config(args.config)
    except Exception as exc:  # ConfigError and the like: their message names the problem
        raise AdminError(str(exc) or f"cannot load {args.config}: {exc!r}") from exc
    return config.database.url


def open_store(args: argparse.Namespace, must_exist: bool = True) -> LocationStore:
    """A store on the registry the arguments designate."""
    url = database_url(args)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise AdminError(f"invalid database URL {url!r}") from exc
    database = parsed.database or ""
    if (
        must_exist
        and parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not Path(database).expanduser().exists()
    ):
        raise AdminError(
            f"registry database {database} does not exist (create it with '{PROG} db upgrade')"
        )
    return LocationStore(url)


def _table(rows: list[list[str]], numeric: set[int], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def _as_json(binding: Binding, now: float) -> dict[str, Any]:
    data = binding._asdict()
    data["path"] = list(binding.path)
    data["expires_in"] = binding.remaining(now)
    return data


def cmd_bindings_list(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``bindings list [AOR] [--json]``."""
    now = time.time()
    bindings = store.list_bindings(args.aor, now)
    if args.json:
        json.dump([_as_json(b, now) for b in bindings], out, indent=2)
        out.write("\n")
    elif bindings:
        header = ["AOR", "CONTACT", "EXPIRES IN", "Q", "RECEIVED", "TRANSPORT", "USER AGENT"]
        rows = [header] + [
            [
                b.aor,
                b.contact,
                f"{b.remaining(now)}s",
                f"{b.q:g}",
                b.received or "-",
                b.transport,
                b.user_agent or "-",
            ]
            for b in bindings
        ]
        _table(rows, {2, 3}, out)
    if not bindings and args.aor is not None:
        print(f"{PROG}: no live bindings of {args.aor}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if not bindings and not args.json:
        out.write("no live bindings\n")
    return EXIT_OK


def cmd_bindings_remove(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``bindings remove AOR``."""
    removed = store.remove_aor(args.aor, time.time())
    if not removed:
        print(f"{PROG}: no bindings of {args.aor}", file=sys.stderr)
        return EXIT_NOT_FOUND
    out.write(f"removed {removed} binding(s) of {args.aor}\n")
    return EXIT_OK


def cmd_db_upgrade(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``db upgrade``."""
    store.upgrade_schema()
    out.write(f"registry schema of {store.safe_url} is up to date\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``p2psip-admin`` with ``argv`` (default: the process arguments)."""
    args = build_parser().parse_args(argv)
    store = None
    try:
        store = open_store(args, must_exist=args.handler is not cmd_db_upgrade)
        return args.handler(store, args, sys.stdout)
    except (AdminError, RegistryUnavailable) as exc:
        message = " ".join(str(exc).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader (e.g. `head`) went away: stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        if store is not None:
            store.close()


if __name__ == "__main__":
    sys.exit(main())
