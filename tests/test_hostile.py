"""Hostile inputs (issue 16): every case is generated in ``tmp_path`` and must end in one line naming
the file and the reason, with the exit code documented in docs/usage.md ("What is refused, and why").

Sections: bad checkpoints; hostile sidecars and figures for ``mrisr report``; locks held by others and
unusable output folders; discovery (depth cap, hidden files, FIFOs); messages.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint
from mrisr.cli import main
from mrisr.errors import CheckpointError
from mrisr.models import SRCNN, SRCNNConfig

AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])


def _volume(path: Path, shape: tuple[int, ...] = (6, 5, 3), seed: int = 0) -> Path:
    data = (np.random.default_rng(seed).random(shape) * 800 + 100).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _good_obj(seed: int = 0) -> dict[str, Any]:
    """The dictionary ``save_checkpoint`` writes for a small residual SRCNN (a valid checkpoint)."""
    torch.manual_seed(seed)
    cfg = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(8, 4), residual=True)
    model = SRCNN(cfg)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": cfg.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": {"scale": [2, 2, 1], "degradation": "bicubic"},
    }


def _save_obj(path: Path, obj: dict[str, Any]) -> Path:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
    return path


def _set(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split("/")
    node = obj
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()
W0 = "body.0.weight"

#: (case, key path split by '/', new value, words the one error line must hold)
BAD_CONTENTS: list[tuple[str, str, Any, str]] = [
    ("nan-weights", f"state_dict/{W0}", torch.full((8, 1, 3, 3), float("nan")), "NaN/Inf"),
    ("one-inf", "state_dict/body.2.bias", torch.tensor([0.0, float("inf"), 0.0, 0.0]), "NaN/Inf"),
    ("int-weights", f"state_dict/{W0}", torch.zeros((8, 1, 3, 3), dtype=torch.int64), "not floating point"),
    ("version-text", "format_version", "one", "format version"),
    ("version-newer", "format_version", FORMAT_VERSION + 1, "format version"),
    ("version-zero", "format_version", 0, "format version"),
    ("arch-unknown", "arch/name", "resnet", "unknown architecture"),
    ("arch-name-list", "arch/name", ["srcnn"], "unknown architecture"),
    ("kernel-even", "arch/kernel_sizes", [3, 2, 3], "kernel_sizes"),
    ("kernel-huge", "arch/kernel_sizes", [101, 1, 3], "kernel_sizes"),
    ("kernel-missing", "arch/kernel_sizes", _DELETE, "kernel_sizes"),
    ("kernel-text", "arch/kernel_sizes", "3,1,3", "kernel_sizes"),
    ("kernel-bool", "arch/kernel_sizes", [True, 1, 3], "kernel_sizes"),
    ("filters-huge", "arch/filters", [100000, 4], "filters"),
    ("filters-zero", "arch/filters", [0, 4], "filters"),
    ("layers-mismatch", "arch/filters", [8], "kernel sizes for"),
    ("residual-text", "arch/residual", "yes", "residual"),
    ("padding-unknown", "arch/padding_mode", "circular!", "padding_mode"),
    ("meta-list", "meta", [1, 2], "'meta'"),
    ("scale-zero", "meta/scale", [0, 0, 0], "scale"),
    ("scale-text", "meta/scale", ["2", "2", "1"], "scale"),
    ("scale-short", "meta/scale", [2, 2], "scale"),
    ("scale-huge", "meta/scale", [1000, 1000, 1], "scale"),
    ("scale-float", "meta/scale", [2.5, 2.5, 1], "scale"),
    ("degradation-int", "meta/degradation", 5, "degradation"),
    ("normalization-text", "meta/normalization", "percentile", "normalization"),
    ("weights-missing", f"state_dict/{W0}", _DELETE, "do not fit"),
    ("weights-extra", "state_dict/body.9.weight", torch.zeros(3), "do not fit"),
    ("weights-shape", f"state_dict/{W0}", torch.zeros((8, 1, 5, 5)), "do not fit"),
    ("weights-list", f"state_dict/{W0}", [0.0, 1.0], "not a tensor"),
    ("train-state-text", "train_state", "resume me", "train_state"),
]


@pytest.mark.parametrize(("case", "key", "value", "words"), BAD_CONTENTS, ids=[c[0] for c in BAD_CONTENTS])
def test_bad_checkpoint_contents_are_one_line_exit_2(
    tmp_path: Path, case: str, key: str, value: Any, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each variant is refused before any study is read: one line naming the file, exit 2, no sidecar."""
    bad = _save_obj(tmp_path / f"{case}.pt", _set(_good_obj(), key, value))
    src = _volume(tmp_path / "in" / "s.nii.gz")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(bad), "--no-figure"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{case}.pt" in err[0] and words in err[0], err
    assert not out.exists() or not any(out.iterdir())  # no study was touched


def test_the_control_checkpoint_is_accepted(tmp_path: Path) -> None:
    """The unmodified dictionary loads and enhances (the cases above fail for their change alone)."""
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    src = _volume(tmp_path / "in" / "s.nii.gz")
    assert load_checkpoint(good).scale == (2, 2, 1)
    assert main(["enhance", str(src), "--out", str(tmp_path / "out"), "--checkpoint", str(good), "--no-figure"]) == 0
    assert json.loads((tmp_path / "out" / "s_sr.json").read_text())["status"] == "done"


def _member_data_offset(raw: bytes, member: str) -> tuple[int, int]:
    """(offset, size) of a stored zip member's bytes in the archive."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = zf.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_bytes_inside_the_archive_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """200 bytes flipped inside a weight tensor: torch.load accepts the file (the control), the CRC does not."""
    obj = _good_obj()
    obj["state_dict"][W0] = torch.randn(8, 1, 3, 3) * 0.1
    raw = bytearray(_save_obj(tmp_path / "good.pt", obj).read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        member = max(zf.infolist(), key=lambda i: i.file_size if "/data/" in i.filename else -1).filename
    start, size = _member_data_offset(bytes(raw), member)
    n = min(200, size)
    raw[start : start + n] = bytes(b ^ 0x5A for b in raw[start : start + n])
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    torch.load(bad, weights_only=True)  # control: torch itself does not notice
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(bad)
    src = _volume(tmp_path / "in" / "s.nii.gz")
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flipped.pt" in err[0] and "CRC" in err[0], err


def test_overflowing_network_fails_the_study_not_zeros(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finite weights whose output overflows to inf: the study fails naming it, nothing is written as done."""
    obj = _good_obj()
    obj["state_dict"] = {k: v.abs() * 1e30 + 1e30 for k, v in obj["state_dict"].items()}
    ck = _save_obj(tmp_path / "overflow.pt", obj)
    src = _volume(tmp_path / "in" / "s.nii.gz")
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(ck), "--no-figure", "--ensemble", "1"]
    assert main(args) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "s.nii.gz" in err[0] and "NaN/Inf" in err[0] and "overflow.pt" in err[0], err
    assert json.loads((out / "s_sr.json").read_text())["status"] == "failed"
    assert not (out / "s_sr.nii.gz").exists()


# -- mrisr report: hostile sidecars and figures ------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def _sidecar(folder: Path, name: str, **fields: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    d = {"study": name, "status": "done", "error": None, "created": "2024-05-01T10:00:00+00:00", **fields}
    path = folder / f"{name}_sr.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A PNG outside the output folder that no report may read or link."""
    path = tmp_path / "private" / "secret.png"
    path.parent.mkdir()
    path.write_bytes(PNG + b"SECRET-BYTES")
    return path


HOSTILE_FIGURES: list[tuple[str, Callable[[Path, Path], str]]] = [
    ("absolute", lambda out, secret: str(secret)),
    ("etc-passwd", lambda out, secret: "/etc/passwd"),
    ("dotdot", lambda out, secret: "../private/secret.png"),
    ("dotdot-deep", lambda out, secret: "../../../../../../../../etc/hostname"),
    ("javascript", lambda out, secret: "javascript:alert(1)//"),
    ("javascript-case", lambda out, secret: "JaVaScRiPt:alert(1)"),
    ("data-uri", lambda out, secret: "data:text/html,<script>alert(1)</script>"),
    ("file-url", lambda out, secret: f"file://{secret}"),
    ("http-url", lambda out, secret: "https://example.com/x.png"),
    ("protocol-relative", lambda out, secret: "//example.com/x.png"),
    ("backslashes", lambda out, secret: "..\\private\\secret.png"),
    ("nul", lambda out, secret: "a.png\0../../x"),
    ("not-a-string", lambda out, secret: ["../private/secret.png"]),  # type: ignore[return-value,list-item]
    ("symlink-out", lambda out, secret: _link(out / "evil.png", secret)),
    ("symlink-dir-out", lambda out, secret: _link(out / "evil_dir", secret.parent) + "/secret.png"),
]


def _link(path: Path, target: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path.name


@pytest.mark.parametrize(("case", "figure"), HOSTILE_FIGURES, ids=[c[0] for c in HOSTILE_FIGURES])
def test_report_reads_and_links_only_files_of_the_output_folder(
    tmp_path: Path, secret: Path, case: str, figure: Callable[[Path, Path], Any]
) -> None:
    import base64

    from mrisr.report import build_report

    out = tmp_path / "out"
    out.mkdir()
    value = figure(out, secret)
    _sidecar(out, "s1", figure=value)
    _sidecar(out, "ok", figure="ok_compare.png")
    (out / "ok_compare.png").write_bytes(PNG)
    res = build_report(out, embed_first=10, embed_worst=10)
    html = res.html.read_text(encoding="utf-8")
    assert base64.b64encode(secret.read_bytes()).decode() not in html
    assert base64.b64encode(PNG).decode() in html  # control: the figure inside the folder is embedded
    hrefs = [h.lower() for h in re.findall(r'(?:href|src)="([^"]*)"', html)]
    assert all(h.startswith(("#fig-", "data:image/png;base64,")) or "://" not in h for h in hrefs), hrefs
    assert not [h for h in hrefs if h.startswith(("javascript", "data:text", "file:", "http", "//", "/"))], hrefs
    assert all(".." not in h and "secret" not in h and "passwd" not in h for h in hrefs), hrefs
    rows = {r["study"]: r for r in json.loads(res.json.read_text())["studies"]}
    assert rows["s1"]["figure"] is None and rows["ok"]["figure"] == "ok_compare.png"


def test_report_escapes_every_string_a_sidecar_holds(tmp_path: Path) -> None:
    from mrisr.report import build_report

    out = tmp_path / "out"
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    _sidecar(out, "x", status="failed", error=evil, device=evil, input={"path": evil})
    _sidecar(out, "y", study=evil)
    weird = out / 'q"onmouseover="alert(3)&.png'  # a real figure file with a hostile name
    weird.write_bytes(PNG)
    _sidecar(out, "z", figure=weird.name)
    html = build_report(out, embed_first=0, embed_worst=0).html.read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<img src=x" not in html and '"onmouseover="' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    assert 'href="q%22onmouseover%3D%22alert%283%29%26.png"' in html  # linked, percent-encoded


DEEP = 200_000


#: (case, sidecar bytes or a writer, words of the failed row's reason)
UNREADABLE_SIDECARS: list[tuple[str, Callable[[Path], None], str]] = [
    ("deep-list", lambda p: p.write_text("[" * DEEP + "]" * DEEP), "nested too deeply"),
    ("deep-dict", lambda p: p.write_text('{"a":' * DEEP + "1" + "}" * DEEP), "nested too deeply"),
    ("bad-json", lambda p: p.write_text('{"study": "x", "status": '), "unreadable sidecar"),
    ("not-utf8", lambda p: p.write_bytes(b'{"study": "\xff\xfe"}'), "unreadable sidecar"),
    ("huge", lambda p: _sparse(p, 64 << 20), "bytes"),
    ("a-list", lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    ("status-list", lambda p: p.write_text('{"status": ["done"], "error": {"a": [1]}}'), "status"),
    ("error-nested", lambda p: p.write_text('{"status": "failed", "error": ' + "[" * 500 + "]" * 500 + "}"),
     "invalid error entry"),
    ("types", lambda p: p.write_text(json.dumps({"status": "done", "study": {"x": 1}, "seconds": "fast",
                                                   "input": [1], "output": {"path": 5}, "metrics": [1],
                                                   "figure": 7, "created": 3})), ""),
    ("nan-metrics", lambda p: p.write_text('{"status": "done", "metrics": {"psnr_sr": NaN, "psnr_bicubic": 1e999}}'),
     ""),
    ("link-out", lambda p: p.symlink_to(p.parent.parent / "outside.json"), "outside the output folder"),
]  # fmt: skip


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)


@pytest.mark.parametrize(("case", "make", "words"), UNREADABLE_SIDECARS, ids=[c[0] for c in UNREADABLE_SIDECARS])
def test_any_unreadable_sidecar_is_one_failed_row(
    tmp_path: Path, case: str, make: Callable[[Path], None], words: str
) -> None:
    """The report is written; the hostile sidecar is one row (failed, with its reason, or with its
    usable fields only); the good study is reported as usual."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside.json").write_text(json.dumps({"study": "leak", "status": "done", "device": "LEAKED"}))
    make(out / f"{case}_sr.json")
    _sidecar(out, "good", metrics={"psnr_bicubic": 30.0, "psnr_sr": 31.0})
    assert main(["report", str(out)]) in (0, 1)
    report = json.loads((out / "report.json").read_text())
    rows = {r["sidecar"]: r for r in report["studies"]}
    assert set(rows) == {f"{case}_sr.json", "good_sr.json"}
    assert rows["good_sr.json"]["status"] == "done" and rows["good_sr.json"]["gain_db"] == pytest.approx(1.0)
    bad = rows[f"{case}_sr.json"]
    if words:
        assert bad["status"] == "failed" and words in bad["error"], bad
    assert "LEAKED" not in (out / "report.html").read_text(encoding="utf-8")
    assert all(v is None or isinstance(v, str | int | float) for v in bad.values()), bad


# -- locks held by others, unusable output folders ---------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


LOCKS: list[tuple[str, Callable[[], bytes], str]] = [
    ("other-host", lambda: b"node-elsewhere-7 4242 0123abcd\n", "process 4242 on host node-elsewhere-7"),
    ("live-pid", lambda: f"{socket.gethostname()} {os.getpid()}\n".encode(), f"process {os.getpid()} on this host"),
    ("garbage", lambda: b"\x00\xff not a lock \x01", "an unreadable lock file"),
    ("huge-pid", lambda: b"node-elsewhere-7 99999999999999999999999\n", "process 99999999999999999999999"),
]


@pytest.mark.parametrize(("case", "content", "words"), LOCKS, ids=[c[0] for c in LOCKS])
def test_a_study_locked_by_another_holder_is_reported_not_done(
    tmp_path: Path, case: str, content: Callable[[], bytes], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 4 ('not done: locked'; 1 is 'failed and recorded', which the Snakemake rule takes as done),
    one line naming the study, its lock and its holder, no sidecar. The other study is processed."""
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    data = tmp_path / "in"
    _volume(data / "a.nii.gz")
    _volume(data / "b.nii.gz", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.lock").write_bytes(content())
    assert main(["enhance", str(data), "--out", str(out), "--checkpoint", str(good), "--no-figure"]) == 4
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, err
    assert "a.nii.gz" in err[0] and ".a.lock" in err[0] and words in err[0], err
    assert not (out / "a_sr.json").exists() and (out / ".a.lock").read_bytes() == content()
    assert json.loads((out / "b_sr.json").read_text())["status"] == "done"


def test_a_stale_lock_is_taken_over_control(tmp_path: Path) -> None:
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    src = _volume(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.lock").write_text(f"{socket.gethostname()} {_dead_pid()}\n")
    old = out / ".a.lock"
    os.utime(old, (0, 0))  # also older than a day: stale by either rule
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(good), "--no-figure"]) == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    """An existing folder where no file can be created, even by root (a read-only bind mount)."""
    import subprocess

    src, ro = tmp_path / "ro-src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    (src / "old.txt").write_text("x")
    if os.geteuid() != 0:
        ro.rmdir()
        src.chmod(0o555)
        yield src
        src.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode == 0
    if mounted and subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode == 0:
        yield ro
        subprocess.run(["umount", str(ro)], check=False)
        return
    if mounted:
        subprocess.run(["umount", str(ro)], check=False)
    pytest.skip("running as root without mount: no way to make a read-only folder")


def test_read_only_out_is_one_line_exit_2(
    read_only_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    src = _volume(tmp_path / "in" / "a.nii.gz")
    assert main(["enhance", str(src), "--out", str(read_only_dir), "--checkpoint", str(good)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(read_only_dir) in err[0] and "cannot be used as the output folder" in err[0], err


def test_lock_error_names_the_folder(read_only_dir: Path) -> None:
    """The library raises one specific error (the CLI checks the folder first)."""
    from mrisr.locks import LockError, study_lock

    with pytest.raises(LockError, match="cannot create the lock file"), study_lock(read_only_dir, "a"):
        pass


# -- discovery: what is not searched is said; temporaries of killed runs -----------------------------


def test_studies_below_the_depth_cap_are_named_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mrisr.discovery import DEFAULT_MAX_DEPTH, find_studies

    data = tmp_path / "data"
    deep = data.joinpath(*[f"d{i}" for i in range(DEFAULT_MAX_DEPTH + 1)])
    _volume(deep / "deep.nii.gz")
    _volume(data / "d0" / "shallow.nii.gz")
    with caplog.at_level("WARNING", logger="mrisr.discovery"):
        studies = find_studies([data])
    assert [s.id for s in studies] == ["shallow"]  # the cap itself stays (documented in docs/usage.md)
    capped = data.joinpath(*[f"d{i}" for i in range(DEFAULT_MAX_DEPTH + 1)])
    lines = [r.getMessage() for r in caplog.records if "not searched" in r.getMessage()]
    assert len(lines) == 1 and str(capped) in lines[0] and f"{DEFAULT_MAX_DEPTH} folder levels" in lines[0], lines
    assert [s.id for s in find_studies([capped])] == ["deep"]  # as the message says


def test_hidden_studies_fifos_and_devices_are_named_and_never_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from mrisr.discovery import find_studies

    data = tmp_path / "data"
    _volume(data / "ok.nii.gz")
    _volume(data / "..nii.gz")
    _volume(data / ".hidden_T1w.nii.gz")
    (data / ".DS_Store").write_bytes(b"\0")  # not an image: no message
    os.mkfifo(data / "pipe.nii.gz")
    (data / "null.nii.gz").symlink_to("/dev/null")
    found: list[Any] = []
    with caplog.at_level("WARNING", logger="mrisr.discovery"):
        worker = threading.Thread(target=lambda: found.extend(find_studies([data])), daemon=True)
        worker.start()
        worker.join(timeout=30)
    assert not worker.is_alive(), "discovery blocked on the FIFO"
    assert [s.id for s in found] == ["ok"]
    lines = sorted(r.getMessage() for r in caplog.records)
    assert len(lines) == 4, lines
    assert any("..nii.gz is hidden" in ln for ln in lines) and any(".hidden_T1w.nii.gz is hidden" in ln for ln in lines)
    assert any("pipe.nii.gz is a FIFO" in ln for ln in lines), lines
    assert any("null.nii.gz is a character device (through a symbolic link)" in ln for ln in lines), lines


def test_a_fifo_given_as_input_fails_alone_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    src = _volume(tmp_path / "in" / "a.nii.gz")
    args = ["enhance", str(fifo), str(src), "--out", str(tmp_path / "out"), "--checkpoint", str(good), "--no-figure"]
    assert main(args) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "pipe.nii.gz: a FIFO" in err[0], err


def test_temporaries_of_killed_runs_are_removed_whatever_their_names(tmp_path: Path) -> None:
    """A BIDS name with glob characters, and the dataset description's temporary (not under a study lock:
    only those of dead writers go, a live writer's stays)."""
    import hashlib

    from mrisr.fsutil import TMP_MARK

    def host_tag() -> str:  # as mrisr.fsutil.temp_sibling names temporaries: <pid>-<host tag>-<random>
        return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]

    good = _save_obj(tmp_path / "good.pt", _good_obj())
    data = tmp_path / "bids"
    (data / "dataset_description.json").parent.mkdir(parents=True)
    (data / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    _volume(data / "sub-03" / "anat" / "sub-03_acq-[x]_T1w.nii.gz")
    out = tmp_path / "out"
    anat = out / "sub-03" / "anat"
    anat.mkdir(parents=True)
    dead, tag = _dead_pid(), host_tag()
    leftovers = [
        anat / f".sub-03_acq-[x]_desc-sr_T1w.nii.gz{TMP_MARK}{dead}-{tag}-0badc0de.nii.gz",
        anat / f".sub-03_acq-[x]_desc-sr_T1w.json{TMP_MARK}{dead}-{tag}-0badc0de.json",
        out / f".dataset_description.json{TMP_MARK}{dead}-{tag}-0badc0de.json",
        out / f".dataset_description.json{TMP_MARK}17-abcd-0badc0de.json",  # an old one (made below)
    ]
    live = out / f".dataset_description.json{TMP_MARK}{os.getpid()}-{tag}-0000live.json"
    for p in [*leftovers, live]:
        p.write_text("partial")
    os.utime(leftovers[-1], (0, 0))
    assert main(["enhance", str(data), "--out", str(out), "--checkpoint", str(good), "--no-figure"]) == 0
    assert (anat / "sub-03_acq-[x]_desc-sr_T1w.nii.gz").is_file()
    assert [p.name for p in leftovers if p.exists()] == []
    assert live.exists()  # a writer that still runs keeps its temporary


# -- messages and figures -------------------------------------------------------------------------------


def test_numbers_in_messages_are_plain(tmp_path: Path) -> None:
    from mrisr.errors import InconsistentGeometryError, plain_numbers

    iop = np.array([2.0, 0, 0, 0, 1.0, 0.30000000000000004])
    err = InconsistentGeometryError(tmp_path / "x.dcm", f"ImageOrientationPatient {list(iop)} is not two unit vectors")
    assert "np." not in str(err) and "[2, 0, 0, 0, 1, 0.3]" in str(err), str(err)
    assert plain_numbers("shape (np.int64(3), np.uint8(255)) flag np.bool_(True)") == "shape (3, 255) flag True"


def test_dicom_orientation_message_has_plain_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [2, 0, 0, 0, 1, 0], [1, 1]
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.zeros((4, 4), "<i2").tobytes()
    path = tmp_path / "in" / "bad.dcm"
    path.parent.mkdir()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    assert main(["enhance", str(path), "--out", str(tmp_path / "o"), "--checkpoint", str(good), "--no-figure"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "ImageOrientationPatient" in err[0] and "np." not in err[0], err


def test_a_failed_study_leaves_no_figure_and_its_reason_is_not_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The volume cannot be written (a folder stands at its path): the figure drawn meanwhile goes
    too, and the summary table folds the long reason instead of cutting it."""
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    src = _volume(tmp_path / "in" / ("a" * 60 + ".nii.gz"))
    out = tmp_path / "out"
    blocker = out / ("a" * 60 + "_sr.nii.gz")
    (blocker / "inside").mkdir(parents=True)
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(good)]) == 1
    err = capsys.readouterr().err
    assert json.loads((out / ("a" * 60 + "_sr.json")).read_text())["status"] == "failed"
    assert not (out / ("a" * 60 + "_compare.png")).exists()
    assert (blocker / "inside").is_dir()  # what mrisr did not write is left alone
    assert "…" not in err  # rich's ellipsis: nothing of the table is cut off


def test_report_into_a_read_only_folder_is_one_line_exit_2(
    read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = read_only_dir.parent / "ro-src"  # the writable folder behind the read-only view
    if src == read_only_dir:  # not root: a folder without write permission
        src.chmod(0o755)
        _sidecar(src, "a")
        src.chmod(0o555)
    else:
        _sidecar(src, "a")
    assert main(["report", str(read_only_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the report" in err[0], err


def test_train_into_a_read_only_folder_is_one_line_exit_2(
    read_only_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _volume(tmp_path / "in" / "a.nii.gz", shape=(16, 16, 8))
    assert main(["train", str(src), "--out", str(read_only_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be used as the output folder" in err[0], err
