"""A minimal headless-Chromium driver over the DevTools protocol (websocket-client, Debian's chromium).

Enough for the review tests and scripts/bench_review.py: open a page, evaluate JavaScript, wait for
a condition, record every network response (URL, status), take a screenshot. No browser download:
the system `chromium` is used or the caller skips.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 800, chromium: str | None = None, timeout_s: float = 30.0) -> None:
        import websocket

        binary = chromium or find_chromium()
        if binary is None:
            raise RuntimeError("chromium not found (apt-get install -y chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="review-chromium-")
        self._process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={self._profile.name}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout_s
        port = None
        assert self._process.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line and self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}")
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = int(match.group(1))
        if port is None:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        self._stderr_drain = _drain(self._process.stderr)
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.responses: list[tuple[str, int]] = []
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method == "Network.responseReceived":
            response = message["params"]["response"]
            self.responses.append((response["url"], int(response["status"])))
        elif method is not None:
            self.events.append(message)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        ident = self._id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._handle(message)

    def pump(self, seconds: float) -> None:
        """Read events for `seconds` (responses keep arriving while the page works)."""
        import websocket

        deadline = time.monotonic() + seconds
        self._ws.settimeout(0.05)
        try:
            while time.monotonic() < deadline:
                try:
                    self._handle(json.loads(self._ws.recv()))
                except websocket.WebSocketTimeoutException:
                    continue
        finally:
            self._ws.settimeout(30)

    def open(self, url: str, timeout_s: float = 30.0) -> float:
        """Navigate and wait for the load event; returns seconds from navigation to load."""
        self.events.clear()
        started = time.perf_counter()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(e.get("method") == "Page.loadEventFired" for e in self.events):
                return time.perf_counter() - started
            self.pump(0.05)
        raise TimeoutError(f"{url} did not load within {timeout_s} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Poll `expression` until truthy; returns its value (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.pump(0.1)
        raise TimeoutError(f"{expression!r} still false after {timeout_s} s")

    def screenshot(self, path: str | Path | None = None) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._profile.cleanup()


def _drain(stream: Any) -> Any:
    """Keep reading chromium's stderr so it never blocks on a full pipe."""
    import threading

    thread = threading.Thread(target=lambda: [None for _ in stream], daemon=True)
    thread.start()
    return thread
