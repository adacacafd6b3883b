"""A headless Chromium inside a lab namespace, driven from the test process through
``tests/browser_driver.py`` (Selenium runs next to the browser, in the namespace)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from lab_gateway import lab_env
from netlab import Lab

DRIVER = Path(__file__).with_name("browser_driver.py")


def available() -> str | None:
    """Why no browser can run here, or None."""
    for path, package in (("/usr/bin/chromium", "chromium"),
                          ("/usr/bin/chromedriver", "chromium-driver")):
        if not Path(path).exists():
            return f"{path} is missing (Debian package {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip)"
    if shutil.which("ip") is None:
        return "iproute2 is missing"
    return None


class Browser:
    """One Chromium in ``ns`` with one page."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, name: str) -> None:
        self.name = name
        profile = workdir / f"chromium-{name}"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / f"chromium-{name}.log").open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(DRIVER), str(profile)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=lab_env())
        lab.processes.append(self.process)
        self._answer("start")

    def _answer(self, what: str) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"browser {self.name}: driver exited during {what}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"browser {self.name}: {what}: {answer['error']}")
        return answer

    def _send(self, command: dict) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        return self._answer(str(command)[:80])

    def open(self, url: str) -> None:
        """Load ``url``."""
        self._send({"open": url})

    def run(self, body: str) -> object:
        """The value of an async JS function body in the page."""
        return self._send({"run": body}).get("value")

    def wait_for(self, expression: str, expected: object, timeout: float = 20.0) -> object:
        """Poll the JS ``expression`` until it equals ``expected`` (or a callable says
        yes); the last value on timeout, in the failure."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(f"return {expression};")
            if (expected(value) if callable(expected) else value == expected):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"browser {self.name}: {expression} is {value!r}, "
                                     f"not {expected!r} after {timeout:g} s")
            time.sleep(0.2)

    def close(self) -> None:
        """Quit the browser."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with suppress(OSError):  # the driver may be gone already
                self.process.stdin.write(b'{"quit": true}\n')
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
