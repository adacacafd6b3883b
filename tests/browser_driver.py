"""Headless Chromium (Debian ``chromium`` + ``chromium-driver``) under Selenium, run
*inside* a lab namespace (``ip netns exec NS python3 browser_driver.py DIR``) so the
browser sees only that namespace's network. Commands arrive as JSON lines on stdin and
each answer goes out as one JSON line on stdout:

- ``{"open": URL}`` → ``{"ok": true}``
- ``{"run": JS}`` → ``{"value": ...}``: ``JS`` is the body of an async function whose
  return value is sent back (``return await window.phone.audio()``).
- ``{"quit": true}``

Errors come back as ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ARGUMENTS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--ignore-certificate-errors", "--allow-loopback-in-peer-connection",
    # Nothing of Chromium's own traffic (updates, sync, safe browsing) goes anywhere.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-quic",
)
# Wraps a command's JS so that an async body's result (or error) reaches Selenium.
_ASYNC = ("const done = arguments[arguments.length - 1];"
          "(async () => { %s })().then((v) => done({value: v}),"
          " (e) => done({error: String(e)}));")


def main() -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={sys.argv[1]}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(30)
    print(json.dumps({"ok": True}), flush=True)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if "open" in command:
                    driver.get(command["open"])
                    answer: dict = {"ok": True}
                elif "run" in command:
                    answer = driver.execute_async_script(_ASYNC % command["run"])
                else:
                    break
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
