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

from mrisr.figures import FigureData, compare_figure, mosaic_figure
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


def _sidecar(study: str, gain: float | None, figure: str | None, mosaic: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {"study": study, "status": "done" if gain is not None else "failed",
                         "error": None if gain is not None else "UnreadableFileError: x: truncated",
                         "input": {"path": f"/in/{study}.nii.gz"}, "device": "cpu", "seconds": 1.0,
                         "figure": figure, "mosaic": mosaic, "created": "2024-05-01T00:00:00+00:00",
                         "mrisr_version": "0.test", "scale": [4, 4, 1], "ensemble": 8,
                         "checkpoint": {"path": "/w/espcn_x4.pt", "sha256": "cd" * 32},
                         "command": ["mrisr", "enhance", "/in", "--out", "out", "--simulate"]}  # fmt: skip
    if gain is not None:
        d["output"] = {"path": f"{study}_sr.nii.gz"}
        d["metrics"] = {"psnr_bicubic": 30.0, "psnr_sr": 30.0 + gain, "ssim_bicubic": 0.8, "ssim_sr": 0.85}
        d["consistency"] = {"psnr_lr": 45.0 + gain / 10, "residual_rms_head": 2.5}
        d["uncertainty"] = {"relative_mean_head": 0.004, "mean_head": 1.2}
    return d


#: gains: s1 3 dB, s2 1 dB, s10 2 dB, long-named studies 0.5 to 2.95 dB and one far below (an outlier);
#: f failed (no gain: sorts last both ways)
GAINS: dict[str, float | None] = {"s1": 3.0, "s2": 1.0, "s10": 2.0, "f": None, "outlier": -4.0} | {
    f"sub-{n:02d}_ses-baseline_acq-highres_run-1_T1w": 0.5 + 0.35 * n for n in range(8)
}


@pytest.fixture
def report_html(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    rng = np.random.default_rng(0)
    for study, gain in GAINS.items():
        fig = mosaic = None
        if gain is not None and study in ("s1", "s2", "s10"):
            ref = rng.random((24, 20, 3))
            ref[6:18, 5:15] += 1.0
            data = FigureData(sr=ref + 0.05, affine=np.eye(4), factors=(4, 4, 1), lowres=ref[::4, ::4],
                              bicubic=ref + 0.2, reference=ref)  # fmt: skip
            fig = compare_figure(out / f"{study}_compare.png", data, title=study).name
            mosaic = mosaic_figure(out / f"{study}_mosaic.png", ref, np.eye(4), title=study).name
        sc = _sidecar(study, gain, fig, mosaic)
        (out / f"{study}_sr.json").write_text(json.dumps(sc), encoding="utf-8")
    return build_report(out).html


def _studies(b: Browser) -> list[str]:
    return b.js("Array.from(document.querySelectorAll('#studies tbody tr')).filter(r => !r.hidden)"
                ".map(r => r.cells[0].textContent)")  # fmt: skip


def _png_std(b64: str) -> float:
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
    return float(np.asarray(img)[..., :3].std())


SHOTS = os.environ.get("MRISR_REPORT_SHOTS")  # a folder to keep the screenshots in (to look at them)


def _shot(b: Browser, name: str, clip: dict[str, float] | None = None) -> str:
    params: dict[str, Any] = {"format": "png"}
    if clip is not None:
        params["clip"] = clip | {"scale": 1}
    data = b.send("Page.captureScreenshot", params)["data"]
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SHOTS) / f"{name}.png").write_bytes(base64.b64decode(data))
    return str(data)


def _rect(b: Browser, selector: str) -> dict[str, float]:
    """The element's box in page coordinates (what a screenshot clip takes)."""
    x, y, w, h = b.js(
        f"(() => {{const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height];})()"
    )
    return {"x": x, "y": y, "width": w, "height": h}


def test_report_in_chromium(browser: Browser, report_html: Path) -> None:
    browser.open_page(report_html.as_uri())
    long = [s for s in GAINS if s.startswith("sub-")]
    assert _studies(browser) == ["f", "outlier", "s1", "s2", "s10", *long]  # natural order as written
    col = browser.js("Array.from(document.querySelectorAll('#studies th')).map(h => h.dataset.col)")
    gain_col = col.index("gain_db") + 1
    title = browser.js(f"document.querySelector('#studies th:nth-child({gain_col}) abbr').title")
    assert title.startswith("PSNR SR − PSNR bicubic")  # the definition shows on hover

    browser.click(f"#studies th:nth-child({gain_col})")
    ranked = _studies(browser)
    assert ranked[:4] == ["outlier", long[0], long[1], "s2"] and ranked[-2:] == ["s1", "f"]
    assert browser.js(f"document.querySelector('#studies th:nth-child({gain_col})').ariaSort") == "ascending"
    browser.click(f"#studies th:nth-child({gain_col})")
    assert _studies(browser)[:2] == ["s1", long[7]] and _studies(browser)[-1] == "f"  # empty gain still last
    browser.click("#studies th:nth-child(1)")
    assert _studies(browser)[:5] == ["f", "outlier", "s1", "s2", "s10"]  # numeric-aware text order

    # search and filter
    browser.click("#search")
    browser.send("Input.insertText", {"text": "s1"})
    assert _studies(browser) == ["s1", "s10"]
    assert browser.js("document.getElementById('shown').textContent").startswith("2 of 13")
    browser.js("(() => {const s = document.getElementById('search'); s.value = '';"
               " s.dispatchEvent(new Event('input'));})()")  # fmt: skip
    browser.js("(() => {const s = document.getElementById('show'); s.value = 'flagged';"
               " s.dispatchEvent(new Event('change'));})()")  # fmt: skip
    assert _studies(browser) == ["outlier"]
    browser.js("(() => {const s = document.getElementById('show'); s.value = 'failed';"
               " s.dispatchEvent(new Event('change'));})()")  # fmt: skip
    assert _studies(browser) == ["f"]
    browser.js("(() => {const s = document.getElementById('show'); s.value = 'all';"
               " s.dispatchEvent(new Event('change'));})()")  # fmt: skip

    # every image decoded: the three embedded figures; the charts are inline SVG
    sizes = browser.js("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 3 and all(c and w > 100 and h > 100 for c, w, h in sizes)
    assert browser.js("document.querySelectorAll('#groups ~ .charts svg circle').length") == 12

    for width in (1400, 800):
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        assert browser.js("window.innerWidth") == width
        assert browser.js("document.documentElement.scrollWidth") <= width  # the page does not overflow
        wrap = browser.js("(() => {const w = document.querySelector('.wrap');"
                          " return [w.scrollWidth, w.clientWidth];})()")  # fmt: skip
        assert wrap[0] <= wrap[1], f"table overflows its box at {width} px: {wrap}"
        browser.js("document.querySelector('#studies').scrollIntoView({block: 'start'})")
        table = _rect(browser, ".wrap")
        assert table["x"] >= 0 and table["x"] + table["width"] <= width  # the whole table is in the window
        shot = _shot(browser, f"table-{width}", {**table, "height": min(table["height"], 850.0)})
        assert _png_std(shot) > 0.05  # the table rendered: not a blank rectangle
        browser.js("window.scrollTo(0, 0)")
        assert _png_std(_shot(browser, f"top-{width}")) > 0.05
    browser.js("document.querySelector('#fig-s1 img').scrollIntoView({block: 'start'})")
    assert _png_std(_shot(browser, "figure", _rect(browser, "#fig-s1 img"))) > 0.05
    assert browser.errors() == []

    # a study's page, through its link, and back
    browser.click("#studies tbody tr:nth-child(3) td.study a")  # s1
    _wait(browser, "document.readyState === 'complete' && document.title.startsWith('s1 ')")
    imgs = browser.js("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert [a for a, _, _ in imgs] == ["mosaic of s1", "comparison figure of s1"]
    assert all(c and w > 300 for _, c, w in imgs)
    assert "cd" * 32 in browser.js("document.body.textContent")
    assert browser.js("document.documentElement.scrollWidth") <= 800
    _shot(browser, "study-800")
    browser.click("nav a")
    _wait(browser, "document.readyState === 'complete' && !!document.getElementById('studies')")
    assert browser.errors() == []


def _wait(b: Browser, condition: str) -> None:
    """Poll until ``condition`` holds in the page (across a navigation, which may fail an evaluation)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            if b.js(f"(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"):
                return
        except RuntimeError:  # the page's context went away mid-navigation
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.05)
