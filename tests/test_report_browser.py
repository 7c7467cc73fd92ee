"""report.html in a real browser: headless Chromium driven over the DevTools protocol.

Chromium is driven through ``--remote-debugging-pipe`` (JSON messages separated by NUL bytes on file
descriptors 3 and 4), so the test needs nothing beyond the Debian ``chromium`` package: no driver, no
Python client, no browser download. It is skipped when ``/usr/bin/chromium`` is missing.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mrisr.figures import FigureData, compare_figure
from mrisr.report import build_report

CHROMIUM = os.environ.get("MRISR_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_S = 30.0

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)),
    reason=f"{CHROMIUM} not installed (CI installs Debian's chromium in .ci/run)",
)


class Browser:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._evt_r, evt_w = os.pipe()  # Chromium writes replies and events on fd 4
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1280,900",
            "--hide-scrollbars", "about:blank",
        ]  # fmt: skip
        redirs = f"3<&{cmd_r} 4>&{evt_w}"
        redirs += "".join(f" {fd}>&-" for fd in (cmd_r, evt_w) if fd not in (3, 4))
        script = f"exec {shlex.quote(CHROMIUM)} {' '.join(map(shlex.quote, flags))} {redirs}"
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", script],  # dash cannot redirect fds above 9
            pass_fds=(cmd_r, evt_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._next_id = 0
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session: str | None = None

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._evt_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._inbox.put(None)
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for m in messages:
                self._inbox.put(json.loads(m))

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        """Send one command (to the page session unless ``browser``) and wait for its result."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError(f"chromium closed the pipe during {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        for seen in self.events:
            if seen.get("method") == method:
                return seen
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            e = self._inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            if e is None:
                raise RuntimeError(f"chromium closed the pipe waiting for {method}")
            self.events.append(e)
            if e.get("method") == method:
                return e

    def open_page(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        att = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)
        self.session = att["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        self.js(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        x, y = self.js(
            f"(() => {{const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2];})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})  # fmt: skip

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails", {}))[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args", []))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "")[:300])
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):
            self.send("Browser.close", browser=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._cmd_w)
        os.close(self._evt_r)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def _sidecar(study: str, gain: float | None, figure: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {"study": study, "status": "done" if gain is not None else "failed",
                         "error": None if gain is not None else "UnreadableFileError: x: truncated",
                         "input": {"path": f"/in/{study}.nii.gz"}, "device": "cpu", "seconds": 1.0,
                         "figure": figure, "created": "2024-05-01T00:00:00+00:00"}  # fmt: skip
    if gain is not None:
        d["output"] = {"path": f"{study}_sr.nii.gz"}
        d["metrics"] = {"psnr_bicubic": 30.0, "psnr_sr": 30.0 + gain, "ssim_bicubic": 0.8, "ssim_sr": 0.85}
    return d


@pytest.fixture
def report_html(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    rng = np.random.default_rng(0)
    # gains: s1 3 dB, s2 1 dB, s10 2 dB; f failed (no gain: sorts last both ways)
    for study, gain in (("s1", 3.0), ("s2", 1.0), ("s10", 2.0), ("f", None)):
        fig = None
        if gain is not None:
            ref = rng.random((24, 20, 3))
            ref[6:18, 5:15] += 1.0
            data = FigureData(sr=ref + 0.05, affine=np.eye(4), factors=(4, 4, 1), lowres=ref[::4, ::4],
                              bicubic=ref + 0.2, reference=ref)  # fmt: skip
            fig = compare_figure(out / f"{study}_compare.png", data, title=study).name
        (out / f"{study}_sr.json").write_text(json.dumps(_sidecar(study, gain, fig)), encoding="utf-8")
    return build_report(out).html


def _studies(b: Browser) -> list[str]:
    return b.js("Array.from(document.querySelectorAll('#studies tbody tr')).map(r => r.cells[0].textContent)")


def _png_std(b64: str) -> float:
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
    return float(np.asarray(img)[..., :3].std())


def test_report_in_chromium(browser: Browser, report_html: Path) -> None:
    browser.open_page(report_html.as_uri())
    assert _studies(browser) == ["f", "s1", "s10", "s2"]  # as written: sorted by name
    col = browser.js("Array.from(document.querySelectorAll('#studies th')).map(h => h.textContent)")
    gain_col = col.index("gain_db") + 1

    browser.click(f"#studies th:nth-child({gain_col})")
    assert _studies(browser) == ["s2", "s10", "s1", "f"]
    assert browser.js(f"document.querySelector('#studies th:nth-child({gain_col})').ariaSort") == "ascending"
    browser.click(f"#studies th:nth-child({gain_col})")
    assert _studies(browser) == ["s1", "s10", "s2", "f"]  # empty gain still last
    browser.click("#studies th:nth-child(1)")
    assert _studies(browser) == ["f", "s1", "s2", "s10"]  # numeric-aware text order

    # every image decoded: the histogram and the three embedded figures
    sizes = browser.js("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 4
    assert all(c and w > 100 and h > 100 for c, w, h in sizes)

    browser.js("document.querySelector('#fig-s1 img').scrollIntoView({block: 'start'})")
    x, y, w, h = browser.js(
        "(() => {const r = document.querySelector('#fig-s1 img').getBoundingClientRect();"
        " return [r.x, r.y, r.width, r.height];})()"
    )
    assert w > 200 and h > 100
    shot = browser.send("Page.captureScreenshot",
                        {"format": "png", "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}})  # fmt: skip
    assert _png_std(shot["data"]) > 0.05  # the figure rendered: not a blank rectangle
    full = browser.send("Page.captureScreenshot", {"format": "png"})
    assert _png_std(full["data"]) > 0.05

    assert browser.errors() == []
