"""``p2psip-admin``: inspect and maintain the gateway's registry from the command line.

Exit status: 0 success, 1 nothing found (no such binding), 2 usage, configuration or
database error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway import __version__
from gateway.app.status_file import OVERLAY_STATUS_FILE, STATUS_FILE
from gateway.registry.binding import Binding
from gateway.registry.overlay_store import OverlayStore
from gateway.registry.store import LocationStore, RegistryUnavailable
from gateway.registry.users import UserError, UserStore, canonical_aor, domain_part, user_part

PROG = "p2psip-admin"
EXIT_OK, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2
#: ``status`` and ``overlay status`` of a gateway that is not running (as ``systemctl
#: status`` says it).
EXIT_NOT_RUNNING = 3
#: A status file older than this (the gateway rewrites it every 5 s) means no gateway.
STALE_SECONDS = 30
REGISTRY_FILE = "registry.sqlite3"
DEFAULT_DATA_DIR = "data"


class AdminError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``p2psip-admin``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Manage the p2psip-gateway registry.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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

    users = commands.add_parser("users", help="manage digest credentials")
    users_commands = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    password_help = ("read the password from the first line of standard input instead of "
                     "prompting (also used when standard input is not a terminal)")
    add = users_commands.add_parser("add", help="create credentials for an AoR")
    add.add_argument("aor", metavar="AOR", help="address-of-record, e.g. sip:alice@example.com")
    add.add_argument("--realm", help="digest realm (default: auth.realm, else the AoR's "
                                     "domain)")
    add.add_argument("--username", help="digest username (default: the AoR's user part)")
    add.add_argument("--password-stdin", action="store_true", help=password_help)
    add.set_defaults(handler=cmd_users_add)
    passwd = users_commands.add_parser("passwd", help="change the password of an AoR")
    passwd.add_argument("aor", metavar="AOR")
    passwd.add_argument("--realm", help="only the credentials of this realm")
    passwd.add_argument("--password-stdin", action="store_true", help=password_help)
    passwd.set_defaults(handler=cmd_users_passwd)
    remove_user = users_commands.add_parser("remove", help="delete the credentials of an AoR")
    remove_user.add_argument("aor", metavar="AOR")
    remove_user.add_argument("--realm", help="only the credentials of this realm")
    remove_user.set_defaults(handler=cmd_users_remove)
    list_users = users_commands.add_parser("list", help="show users (never passwords)")
    list_users.add_argument("--json", action="store_true", help="print a JSON list of objects")
    list_users.set_defaults(handler=cmd_users_list)

    status = commands.add_parser("status", help="the running gateway's state (from the "
                                                "data dir)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(handler=cmd_status, needs_store=False)

    overlay = commands.add_parser("overlay", help="the running gateway's overlay node")
    overlay_commands = overlay.add_subparsers(dest="action", metavar="ACTION", required=True)
    overlay_status = overlay_commands.add_parser(
        "status", help="joined/joining/alone, neighbours, last error (from the data dir)")
    overlay_status.add_argument("--json", action="store_true", help="print the raw JSON")
    overlay_status.set_defaults(handler=cmd_overlay_status, needs_store=False)
    pins = overlay_commands.add_parser(
        "pins", help="trust-on-first-use pins: which certificate speaks for which domain")
    pins_commands = pins.add_subparsers(dest="pins_action", metavar="ACTION", required=True)
    pins_list = pins_commands.add_parser("list", help="show the pins")
    pins_list.add_argument("--json", action="store_true", help="print a JSON list of objects")
    pins_list.set_defaults(handler=cmd_pins_list)
    pins_forget = pins_commands.add_parser(
        "forget", help="drop a domain's pin: the next certificate seen for it is pinned")
    pins_forget.add_argument("domain", metavar="DOMAIN")
    pins_forget.set_defaults(handler=cmd_pins_forget)
    pins_pin = pins_commands.add_parser(
        "pin", help="pin a certificate for a domain (replacing its pin)")
    pins_pin.add_argument("domain", metavar="DOMAIN")
    pins_pin.add_argument("fingerprint", metavar="SHA256",
                          help="the certificate's SHA-256 fingerprint (hex, colons allowed), "
                               "as 'overlay status' shows it on that gateway")
    pins_pin.set_defaults(handler=cmd_pins_pin)

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
        from gateway.app.config import load_config
    except ModuleNotFoundError as exc:
        if exc.name != "gateway.app.config":
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


def default_realm(args: argparse.Namespace, aor: str) -> str:
    """``--realm``, else ``auth.realm`` of the configuration, else the AoR's domain."""
    if getattr(args, "realm", None):
        return str(args.realm)
    if args.config:
        from gateway.app.config import load_config

        try:
            realm = load_config(args.config).auth.realm
        except Exception as exc:  # ConfigError: its message names the key
            raise AdminError(str(exc)) from exc
        if realm:
            return realm
    return domain_part(aor)


def read_password(args: argparse.Namespace, stdin: TextIO | None = None) -> str:
    """The new password: a line of standard input with ``--password-stdin`` or when it
    is not a terminal, else typed twice at a prompt that does not echo."""
    stdin = stdin or sys.stdin
    if args.password_stdin or not stdin.isatty():
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise AdminError("the passwords do not match")
    if not password:
        raise AdminError("empty password")
    return password


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


def _users(store: LocationStore, create: bool = False) -> UserStore:
    if create and not store.schema_is_current():
        store.upgrade_schema()  # as the gateway does on start (database.auto_upgrade)
    if not store.schema_is_current():
        raise AdminError(f"the registry schema is not current: run '{PROG} db upgrade' (or "
                         "start the gateway) first")
    return UserStore(store.safe_url, engine=store.engine)


def _aor(text: str) -> str:
    try:
        return canonical_aor(text)
    except UserError as exc:
        raise AdminError(str(exc)) from exc


def cmd_users_add(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``users add AOR [--realm R] [--username U] [--password-stdin]``."""
    aor = _aor(args.aor)
    realm = default_realm(args, aor)
    username = args.username or user_part(aor)
    password = read_password(args)
    try:
        _users(store, create=True).add(aor, username, realm, password)
    except UserError as exc:
        raise AdminError(str(exc)) from exc
    out.write(f"added {aor} (username {username!r}, realm {realm!r})\n")
    return EXIT_OK


def cmd_users_passwd(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``users passwd AOR [--realm R] [--password-stdin]``."""
    aor = _aor(args.aor)
    password = read_password(args)
    changed = _users(store).set_password(aor, args.realm, password)
    if not changed:
        print(f"{PROG}: no credentials of {aor}" + (f" in realm {args.realm!r}"
              if args.realm else ""), file=sys.stderr)
        return EXIT_NOT_FOUND
    out.write(f"changed the password of {aor} ({changed} realm(s))\n")
    return EXIT_OK


def cmd_users_remove(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``users remove AOR [--realm R]``."""
    aor = _aor(args.aor)
    removed = _users(store).remove(aor, args.realm)
    if not removed:
        print(f"{PROG}: no credentials of {aor}", file=sys.stderr)
        return EXIT_NOT_FOUND
    out.write(f"removed {removed} credential(s) of {aor}\n")
    return EXIT_OK


def cmd_users_list(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``users list [--json]``: AoR, username and realm; never the hashes."""
    users = _users(store).load_all()
    if args.json:
        json.dump([{"aor": u.aor, "username": u.username, "realm": u.realm,
                    "algorithms": [a for a, h in (("SHA-256", u.ha1_sha256),
                                                  ("MD5", u.ha1_md5)) if h]}
                   for u in users], out, indent=2)
        out.write("\n")
    elif users:
        _table([["AOR", "USERNAME", "REALM"]] + [[u.aor, u.username, u.realm] for u in users],
               set(), out)
    else:
        out.write("no users\n")
    return EXIT_OK


def data_dir_of(args: argparse.Namespace) -> Path:
    """``--data-dir``, else the configuration's ``gateway.data_dir``, else ``./data``."""
    if args.data_dir:
        return Path(args.data_dir)
    if args.config:
        from gateway.app.config import load_config

        try:
            return Path(load_config(args.config).data_dir)
        except Exception as exc:  # ConfigError: its message names the key
            raise AdminError(str(exc)) from exc
    return Path(DEFAULT_DATA_DIR)


def _read_status(path: Path, missing: str) -> dict[str, Any]:
    """A status file the gateway wrote; ``missing`` (with ``{dir}``) when there is none."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise AdminError(missing.format(dir=path.parent)) from None
    except (OSError, ValueError) as exc:
        raise AdminError(f"cannot read {path}: {exc}") from None


def _labelled(rows: list[tuple[str, str]], out: TextIO) -> None:
    """``name  value`` lines, the values aligned."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.write(f"{name.ljust(width)}  {value}\n")


def cmd_overlay_status(store: LocationStore | None, args: argparse.Namespace,
                       out: TextIO) -> int:
    """``overlay status [--json]``: what the gateway last wrote about its overlay node."""
    status = _read_status(data_dir_of(args) / OVERLAY_STATUS_FILE,
                          "no overlay status in {dir} (the gateway has not run there, or "
                          "[overlay] is disabled)")
    age = time.time() - float(status.get("updated", 0))
    stale = status.get("state") not in ("stopped", "disabled") and not _alive(status, age)
    code = EXIT_NOT_RUNNING if stale or status.get("state") == "stopped" else EXIT_OK
    if args.json:
        json.dump(status | {"age_seconds": round(age, 1), "stale": stale}, out, indent=2)
        out.write("\n")
        return code
    state = status.get("state", "?")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(status.get("since", 0))))
    rows = [
        ("state", f"{state} since {since}" + (f" (status {age:.0f} s old: is the gateway "
                                              "running?)" if stale else "")),
        ("node", f"{status.get('node_id', '')[:16]} on udp {status.get('listen', '')}"),
        ("certificate", (status.get("certificate") or "-")
         + (" (announced by the previous one)" if status.get("rollover") else "")),
        ("neighbours", str(status.get("contacts", 0))
         + (f"; refused {status['refused_contacts']} (ids per address), "
            f"{status.get('bad_answers', 0)} answers with bad signatures"
            if status.get("refused_contacts") or status.get("bad_answers") else "")),
        ("last error", status.get("last_error") or "-"),
        ("records", f"{status.get('published', 0)} published, "
                    f"{status.get('backlog', 0)} waiting, "
                    f"{status.get('publish_failures', 0)} failed; "
                    f"{status.get('stored_keys', 0)} keys stored here"),
        ("lookups", f"{status.get('lookups', 0)}, {status.get('rejected_records', 0)} "
                    "records rejected"),
        ("route", status.get("route") or "-"),
        ("published route", status.get("published_route") or "- (records held)"),
        ("mode", status.get("mode") or "peer"),
        ("nat", _nat_row(status.get("nat"))),
        *((("relay", _relay_row(status["relay"])),) if status.get("relay") else ()),
        ("relaying for", f"{status.get('relaying_for', 0)} NATed gateway(s)"),
        *((("dns name", _publish_row(status["dns_publish"])),)
          if status.get("dns_publish") else ()),
        *(("warning", text) for text in status.get("warnings") or ()),
    ]
    _labelled(rows, out)
    return code


def _nat_row(nat: dict[str, str] | None) -> str:
    if not nat:
        return "not checked yet (no peer answered)"
    return f"{nat.get('kind', '?')}, observed {nat.get('observed') or '-'}"


def _publish_row(publish: dict[str, Any]) -> str:
    entries = ", ".join(publish.get("entries") or []) or "no entry"
    text = f"{publish.get('name')} at {publish.get('server')}: {publish.get('state')}, {entries}"
    if publish.get("fingerprint_names"):
        text += "; certificate at " + ", ".join(publish["fingerprint_names"])
    return text + (f" ({publish['last_error']})" if publish.get("last_error") else "")


def _relay_row(relay: dict[str, str]) -> str:
    if relay.get("route"):
        return f"through {relay.get('relay')}"
    return f"none ({relay.get('last_error') or 'no relay offered yet'})"


def _overlay_store(store: LocationStore) -> OverlayStore:
    if not store.schema_is_current():
        raise AdminError(f"the registry schema is not current: run '{PROG} db upgrade' (or "
                         "start the gateway) first")
    return OverlayStore(store.safe_url, engine=store.engine)


def cmd_pins_list(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``overlay pins list [--json]``."""
    pins = _overlay_store(store).list_pins()
    if args.json:
        json.dump([{"domain": d, "fingerprint": f, "pinned_at": seen} for d, f, seen in pins],
                  out, indent=2)
        out.write("\n")
    elif pins:
        _table([["DOMAIN", "SHA-256 FINGERPRINT", "PINNED"]] + [
            [d, f, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen))]
            for d, f, seen in pins], set(), out)
    else:
        out.write("no pins\n")
    return EXIT_OK


def cmd_pins_forget(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``overlay pins forget DOMAIN``: a running gateway follows within a health check."""
    domain = args.domain.strip().lower()
    if not _overlay_store(store).forget_pin(domain):
        print(f"{PROG}: no pin for {domain}", file=sys.stderr)
        return EXIT_NOT_FOUND
    out.write(f"forgot the pin of {domain}: the next certificate seen for it is pinned\n")
    return EXIT_OK


def cmd_pins_pin(store: LocationStore, args: argparse.Namespace, out: TextIO) -> int:
    """``overlay pins pin DOMAIN SHA256``."""
    domain = args.domain.strip().lower()
    value = args.fingerprint.replace(":", "").strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise AdminError(f"fingerprint: {args.fingerprint!r} is not a SHA-256 fingerprint "
                         "(64 hex digits)")
    _overlay_store(store).replace_pin(domain, value)
    out.write(f"pinned {value} for {domain}\n")
    return EXIT_OK


def cmd_status(store: LocationStore | None, args: argparse.Namespace, out: TextIO) -> int:
    """``status [--json]``: what the gateway last wrote to ``<data_dir>/status.json``
    (every 5 s; the same as its ``/status`` endpoint)."""
    status = _read_status(data_dir_of(args) / STATUS_FILE,
                          "no status in {dir} (the gateway has not run there)")
    age = time.time() - float(status.get("updated", 0))
    running = status.get("state", "running") == "running" and _alive(status, age)
    code = EXIT_OK if running else EXIT_NOT_RUNNING
    if args.json:
        json.dump(status | {"age_seconds": round(age, 1), "running": running}, out, indent=2)
        out.write("\n")
        return code
    registry, overlay = status.get("registry", {}), status.get("overlay", {})
    if status.get("state") == "stopped":
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(status["updated"])))
        health = f"stopped at {when}"
    elif not running:
        health = f"not running (status {age:.0f} s old)"
    else:
        health = f"running, up {_duration(status.get('uptime_seconds', 0))}"
    transactions, memory = status.get("transactions", {}), status.get("memory", {})
    rows = [
        ("gateway", f"p2psip-gateway {status.get('version', '?')}, pid {status.get('pid')}, "
                    f"{health}"),
        ("listening", ", ".join(status.get("listeners", [])) or "-"),
        ("registry", f"{registry.get('state', '?')}: {registry.get('bindings', 0)} bindings "
                     f"of {registry.get('aors', 0)} AoRs, {registry.get('commits', 0)} "
                     f"commits, {registry.get('commit_failures', 0)} failed"
                     + (f" ({registry['last_error']})" if registry.get("last_error") else "")),
        *((("site", _site_row(registry, status.get("updated", 0))),)
          if len(registry.get("site") or []) > 1 or registry.get("change_feed") else ()),
        ("overlay", f"{overlay.get('state', '?')}, {overlay.get('contacts', 0)} neighbours"
                    + (f" ({overlay['last_error']})" if overlay.get("last_error") else "")),
        ("transactions", f"{transactions.get('server', 0)} server, "
                         f"{transactions.get('client', 0)} client, "
                         f"{transactions.get('proxied', 0)} being proxied"),
        ("requests", ", ".join(f"{m} {n}" for m, n in sorted(
            status.get("requests", {}).items())) or "-"),
        ("malformed", f"{status.get('malformed', 0)} messages (answered 400/505 or dropped)"),
        ("memory", f"{memory.get('rss_mib', '?')} MiB resident, "
                   f"{memory.get('python_blocks', '?')} Python heap blocks"),
        ("auth", f"{status.get('auth', {}).get('users', 0)} users, "
                 f"{status.get('auth', {}).get('failures', 0)} failures; "
                 f"{status.get('rate_limited', 0)} requests rate-limited"),
    ]
    _labelled(rows, out)
    return code


def _site_row(registry: dict[str, Any], updated: float) -> str:
    """The gateways sharing the registry, as the last heartbeat saw them."""
    parts = []
    for gateway in registry.get("site") or []:
        own = " (this one)" if gateway.get("id") == registry.get("gateway_id") else ""
        heard = max(0.0, updated - float(gateway.get("heartbeat_at", 0)))
        parts.append(f"{gateway.get('name')}{own}: {gateway.get('state')}"
                     + ("" if gateway.get("state") == "up" else f", last heard {heard:.0f} s "
                        "before this status"))
    feed = registry.get("change_feed")
    text = "; ".join(parts) or "-"
    if feed:
        text += f" — change feed {feed.get('state')}" + (
            f" ({feed['last_error']})" if feed.get("last_error") else "")
    return text


def _alive(status: dict[str, Any], age: float) -> bool:
    """Whether the gateway that wrote ``status`` still runs: the file is fresh and, on
    this machine, its process exists."""
    if age > STALE_SECONDS:
        return False
    try:
        os.kill(int(status.get("pid", 0)), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{seconds:02d}"


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
        if getattr(args, "needs_store", True):
            store = open_store(args, must_exist=args.handler not in (cmd_db_upgrade,
                                                                     cmd_users_add))
        return args.handler(store, args, sys.stdout)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_ERROR
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
