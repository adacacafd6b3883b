"""Real softphones from Debian, driven headless inside a lab namespace: baresip 1.0
(package ``baresip``) and linphonec 5.1 (package ``linphone-cli``).

Each phone has one account with a password at the gateway, plays a sine tone of its own
into calls and records what it hears, answers calls by itself, and says what happens in
its output, which the tests read: registered, call established, call ended.

- baresip is configured with a ``config`` and an ``accounts`` file, takes commands
  (``/dial``, ``/hangup``) over its ``cons`` module (UDP on the namespace's loopback),
  plays a WAV file (``aufile``) and records the decoded far-end audio (``sndfile``).
- linphonec reads commands from a terminal (a pty here): ``soundcard use files`` makes
  it play and record WAV files instead of a sound card.
"""

from __future__ import annotations

import math
import os
import pty
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import wave
from contextlib import suppress
from pathlib import Path

from netlab import Lab

RATE = 8000


def available() -> str | None:
    """Why the softphones cannot run here, or None."""
    for binary, package in (("baresip", "baresip"), ("linphonec", "linphone-cli")):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian package {package})"
    return None


def write_tone(path: Path, hz: float, seconds: float = 30.0) -> Path:
    """A mono 16-bit 8 kHz WAV file of a sine tone."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / RATE)))
            for i in range(int(RATE * seconds))))
    return path


def tone_share(path: Path, hz: float) -> float:
    """Which share (0..1) of the recording's energy is at ``hz`` (Goertzel over 20 ms
    blocks, summed); 0 for a silent or empty recording."""
    with wave.open(str(path), "rb") as recording:
        rate, width, channels = (recording.getframerate(), recording.getsampwidth(),
                                 recording.getnchannels())
        frames = recording.readframes(recording.getnframes())
    if width != 2 or not frames:
        return 0.0
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)[::channels]
    block = rate // 50
    coefficient = 2 * math.cos(2 * math.pi * hz / rate)
    at_tone = total = 0.0
    for start in range(0, len(samples) - block + 1, block):
        chunk = samples[start:start + block]
        s1 = s2 = 0.0
        for sample in chunk:
            s1, s2 = sample + coefficient * s1 - s2, s1
        at_tone += (s1 * s1 + s2 * s2 - coefficient * s1 * s2) * 2 / block
        total += sum(sample * sample for sample in chunk)
    return at_tone / total if total else 0.0


def _heads(text: str, starts: re.Pattern[str]) -> list[str]:
    """The header blocks of the SIP requests that follow each match of ``starts``."""
    heads = []
    for found in starts.finditer(text):
        block = text[found.end():].replace("\r\n", "\n").split("\n\n", 1)[0]
        if block and not block.startswith("SIP/2.0"):
            heads.append(block)
    return heads


class _Output:
    """Text a phone printed, searched in order: each wait starts after the last match."""

    def __init__(self, read: callable) -> None:  # type: ignore[valid-type]
        self._read = read
        self._position = 0

    def wait_for(self, pattern: str, timeout: float, what: str) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while True:
            text = self._read()
            found = compiled.search(text, self._position)
            if found is not None:
                self._position = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: no /{pattern}/ within {timeout:g} s; "
                                     f"output ends:\n{text[-3000:]}")
            time.sleep(0.1)


class Baresip:
    """baresip with one account ``user@domain`` registering at ``proxy`` (a SIP URI
    with ``;transport=``) from ``address`` inside ``ns``."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, *, user: str, password: str,
                 domain: str, address: str, proxy: str, transport: str, tone_hz: float,
                 cafile: Path | None = None, sip_port: int = 5060) -> None:
        self.lab, self.ns, self.user, self.address = lab, ns, user, address
        self.dir = workdir / f"baresip-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "baresip.log"
        self.cons_port = 5555
        tone = write_tone(self.dir / "tone.wav", tone_hz)
        lines = [
            "poll_method epoll", f"sip_listen {address}:{sip_port}",
            f"audio_player aubridge,{user}", f"audio_source aufile,{tone}",
            f"audio_alert aubridge,{user}", f"snd_path {self.dir}",
            "module_path /usr/lib/baresip/modules", "module g711.so", "module aufile.so",
            "module aubridge.so", "module sndfile.so", "module cons.so",
            f"cons_listen 127.0.0.1:{self.cons_port}",
            "module_app account.so", "module_app menu.so"]
        if cafile is not None:
            lines.append(f"sip_cafile {cafile}")
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        (self.dir / "accounts").write_text(
            f"<sip:{user}@{domain};transport={transport}>;auth_pass={password};"
            f'outbound="{proxy}";regint=600;answermode=auto\n')
        self.process: subprocess.Popen[bytes] | None = None
        self.output = _Output(lambda: self.log.read_text(errors="replace")
                              if self.log.exists() else "")

    def start(self) -> None:
        """Start it (it registers at once)."""
        self.process = self.lab.popen(self.ns, ["baresip", "-s", "-f", str(self.dir)], self.log)

    def command(self, text: str) -> None:
        """One command line to its console (``/dial URI``, ``/hangup``)."""
        with self.lab.inside(self.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.sendto(text.encode() + b"\n", ("127.0.0.1", self.cons_port))

    def wait_registered(self, timeout: float = 15.0) -> None:
        """Until the gateway answered its REGISTER with 200."""
        self.output.wait_for(r"\{0/(UDP|TCP|TLS)/v4\} 200 OK", timeout,
                             f"baresip {self.user} registration")

    def dial(self, uri: str) -> None:
        """Call ``uri``."""
        self.command(f"/dial {uri}")

    def hang_up(self) -> None:
        """End the current call."""
        self.command("/hangup")

    def wait_established(self, timeout: float = 15.0) -> None:
        """Until a call is established."""
        self.output.wait_for(r"Call established", timeout, f"baresip {self.user} call")

    def wait_ended(self, timeout: float = 15.0) -> None:
        """Until the call ended (either side hung up)."""
        self.output.wait_for(r"terminated \(duration", timeout,
                             f"baresip {self.user} hang-up")

    def requests_received(self) -> list[str]:
        """The header blocks of the SIP requests it received (its ``-s`` trace)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return _heads(text, re.compile(
            rf"(?:UDP|TCP|TLS) \S+ -> {re.escape(self.address)}:\d+\r?\n"))

    def recordings(self) -> list[Path]:
        """What it heard, one WAV file per call (oldest first)."""
        return sorted(self.dir.glob("dump-*-dec.wav"))

    def stop(self) -> None:
        """Stop it (SIGTERM)."""
        if self.process is not None:
            self.lab.stop(self.process)


class Linphonec:
    """linphonec with one account ``user@domain`` registering at ``proxy`` inside
    ``ns``, driven through a pty."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, *, user: str, password: str,
                 domain: str, proxy: str, transport: str, tone_hz: float,
                 cafile: Path | None = None, sip_port: int = 5060) -> None:
        self.lab, self.ns, self.user, self.domain = lab, ns, user, domain
        self.proxy, self.password = proxy, password
        self.dir = workdir / f"linphone-{user}"
        home = self.dir / "home"
        # Without its database directory linphonec never starts its SIP transports.
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.home = home
        self.tone = write_tone(self.dir / "tone.wav", tone_hz)
        self.calls = 0
        ports = {name: (sip_port if name == transport else 0) for name in ("udp", "tcp", "tls")}
        rc = ["[sip]", f"sip_port={ports['udp']}", f"sip_tcp_port={ports['tcp']}",
              f"sip_tls_port={ports['tls']}", "register_only_when_network_is_up=0",
              "register_only_when_upnp_is_ok=0", "verify_server_certs=1",
              "verify_server_cn=1", "default_proxy=0"]
        if cafile is not None:
            rc.append(f"root_ca={cafile}")
        # The account as the linphone apps save it: registered at the proxy, which is
        # also the outbound route for calls (the `register` command sets no route).
        rc += ["[proxy_0]", f"reg_proxy=<{proxy}>", f"reg_route=<{proxy}>",
               f"reg_identity=<sip:{user}@{domain}>", "reg_expires=3600",
               "reg_sendregister=1", "publish=0",
               "[auth_info_0]", f"username={user}", f"passwd={password}",
               f"realm={domain}", f"domain={domain}",
               "[rtp]", "audio_rtp_port=7078", "[sound]", "echocancellation=0",
               "[video]", "capture=0", "display=0", "automatically_initiate=0",
               "automatically_accept=0"]
        self.rc = self.dir / "linphonerc"
        self.rc.write_text("\n".join(rc) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._text: list[str] = []
        self._lock = threading.Lock()
        self.debug_log = self.dir / "debug.log"
        self.output = _Output(self._read)
        #: liblinphone's own log: registration and call states (linphonec prints few).
        self.states = _Output(lambda: self.debug_log.read_text(errors="replace")
                              if self.debug_log.exists() else "")

    def _read(self) -> str:
        with self._lock:
            return "".join(self._text)

    def _pump(self) -> None:
        assert self._master is not None
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._text.append(data.decode(errors="replace"))

    def start(self) -> None:
        """Start it (it registers at once) and switch it to WAV files."""
        master, slave = pty.openpty()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "linphonec", "-c", str(self.rc),
             "-d", "6", "-l", str(self.debug_log)],
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env=dict(os.environ, HOME=str(self.home)))
        self.lab.processes.append(self.process)
        os.close(slave)
        self._master = master
        threading.Thread(target=self._pump, name=f"linphonec-{self.user}",
                         daemon=True).start()
        self.output.wait_for(r"linphonec> ", 15, f"linphonec {self.user} start")
        self.command("soundcard use files")
        self.command(f"play {self.tone}")
        self.command("autoanswer enable")

    def command(self, text: str) -> None:
        """One command line."""
        assert self._master is not None
        os.write(self._master, text.encode() + b"\n")

    def wait_registered(self, timeout: float = 15.0) -> None:
        """Until the gateway answered its REGISTER with 200."""
        self.states.wait_for(r"to \[LinphoneRegistrationOk\]", timeout,
                             f"linphonec {self.user} registration")

    def requests_received(self) -> list[str]:
        """The header blocks of the SIP requests it received (its debug log)."""
        text = self.debug_log.read_text(errors="replace") if self.debug_log.exists() else ""
        return _heads(text, re.compile(r"received \[\d+\] new bytes from \[[^\]]+\]:\r?\n"))

    def requests_sent(self) -> list[str]:
        """The header blocks of the SIP requests it sent (its debug log)."""
        text = self.debug_log.read_text(errors="replace") if self.debug_log.exists() else ""
        return _heads(text, re.compile(r"message sent to \[[^\]]+\], size: \[\d+\] bytes\r?\n"))

    def record_next_call(self) -> Path:
        """The file the next call's audio is recorded to."""
        path = self.dir / f"call{self.calls + 1}.wav"
        self.command(f"record {path}")
        return path

    def dial(self, uri: str) -> None:
        """Call ``uri``."""
        self.calls += 1
        self.command(f"call {uri}")

    def hang_up(self) -> None:
        """End the current call."""
        self.command("terminate")

    def wait_established(self, timeout: float = 15.0) -> None:
        """Until a call is established."""
        self.states.wait_for(r"to LinphoneCallStreamsRunning", timeout,
                             f"linphonec {self.user} call")

    def wait_ended(self, timeout: float = 15.0) -> None:
        """Until the call ended (either side hung up)."""
        self.states.wait_for(r"to LinphoneCallEnd", timeout,
                             f"linphonec {self.user} hang-up")

    def stop(self) -> None:
        """Quit it (SIGTERM after a bounded wait)."""
        if self.process is None:
            return
        with suppress(OSError):
            self.command("quit")
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.lab.stop(self.process)
        if self._master is not None:
            os.close(self._master)
            self._master = None
