"""The sidecar contract: what ``mrisr enhance`` records per study, where, and when it counts as done.

Every study of an output folder has one JSON *sidecar*, written last (through the commit of
:mod:`mrisr.outputs`): its presence with ``"status": "done"`` marks the study as done. The rules,
written once here and used by :mod:`mrisr.enhance`, :mod:`mrisr.report` and ``pipelines/Snakefile``
(through the CLI):

Names (:class:`Targets`)
    Flat layout: ``OUT/<id>_sr.json`` beside ``OUT/<id>_sr.nii.gz`` (or the ``OUT/<id>_sr/`` DICOM
    series). A BIDS input written as NIfTI: ``OUT/sub-01/anat/sub-01_desc-sr_T1w.json`` (an input's
    own ``desc`` is kept in front: ``desc-preprocsr``). :func:`is_sidecar_name` recognises both.
Record (:class:`Sidecar`)
    A JSON object. Always: ``study`` (id), ``status`` (``done`` or ``failed``), ``error`` (one line
    or ``null``), ``input`` (``path``, ``format``; when done also ``sha256`` of
    :func:`study_sha256`, ``shape``, ``spacing``), ``checkpoint`` (``path``, ``sha256``),
    ``mrisr_version``, ``device``, ``seconds``, ``created`` (UTC, ISO 8601). When done also
    ``output`` (file names relative to the sidecar's folder), ``request`` (below), ``metrics`` (the
    :data:`METRIC_KEYS` with ``--simulate``, else ``null``), ``consistency``, ``uncertainty``,
    ``adapt``, ``figure``, ``mosaic`` and the provenance that ``docs/usage.md`` lists. Non-finite
    numbers are written as ``null``.
Skip rule (:func:`rerun_differences`)
    Without ``--overwrite``, a study whose standing done sidecar (:func:`standing_result`, in any
    output format's place) has the same input hash and the same ``request`` is skipped when its
    output exists; a request that differs is refused, naming each difference as ``key: old → new``
    (a key an older sidecar lacks is ``not recorded``). The ``request`` holds everything beyond the
    input that changes the outputs; keys added since (``save_uncertainty``, ``save_residual``,
    ``through_plane_sha256``, ``target_spacing``) are recorded only when used, so that older
    sidecars still match a plain rerun.
Ownership (:func:`owned_outputs`)
    mrisr removes or replaces only what its own records say it wrote: a sidecar of mrisr for the study
    (readable, ``study`` equal to the study's id, ``status`` done or failed, ``mrisr_version`` set) in
    one of the study's sidecar places owns itself, and a done one owns the files it names that are
    among the study's target paths. Anything else standing at a target path is the user's.
Reading (:func:`load_sidecar`, :func:`read_sidecar`)
    At most :data:`MAX_SIDECAR_BYTES`, UTF-8 JSON, an object; anything else is not a sidecar of
    mrisr (the report lists it as a failed row, enhance as no result).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrisr.bids import figures_folder
from mrisr.fsutil import sha256_files
from mrisr.io import nifti_stem

if TYPE_CHECKING:
    from mrisr.discovery import Study

__all__ = [
    "BIDS_SIDECAR",
    "MAX_SIDECAR_BYTES",
    "METRIC_KEYS",
    "SIDECAR_SUFFIX",
    "Sidecar",
    "Targets",
    "bids_derivative_stem",
    "is_sidecar_name",
    "load_sidecar",
    "owned_outputs",
    "read_sidecar",
    "request_differences",
    "rerun_differences",
    "standing_result",
    "study_from_name",
    "study_sha256",
]

#: The flat layout's sidecar ending: ``<id>_sr.json``.
SIDECAR_SUFFIX = "_sr.json"
#: Sidecars of studies written as BIDS derivatives: ``sub-01_desc-sr_T1w.json``,
#: ``sub-01_desc-preprocsr_T1w.json`` (an input's own ``desc`` is kept in front of ``sr``).
BIDS_SIDECAR = re.compile(r"_desc-[A-Za-z0-9]*sr_[A-Za-z0-9]+\.json$")
#: The ``metrics`` of a ``--simulate`` sidecar (:func:`mrisr.metrics.evaluate`): PSNR in dB, SSIM
#: unitless, of SR and of bicubic against the reference; ``_masked``: inside the head mask.
METRIC_KEYS: tuple[str, ...] = (
    "psnr_bicubic",
    "psnr_sr",
    "ssim_bicubic",
    "ssim_sr",
    "ssim3d_bicubic",
    "ssim3d_sr",
    "psnr_bicubic_masked",
    "psnr_sr_masked",
    "ssim_bicubic_masked",
    "ssim_sr_masked",
)
#: Largest sidecar read (bytes): mrisr writes a few KB; a bigger file is not one of its sidecars.
MAX_SIDECAR_BYTES = 16 << 20


def is_sidecar_name(name: str) -> bool:
    """True for ``<id>_sr.json`` and for BIDS derivative sidecars ``..._desc-[<old>]sr_<suffix>.json``."""
    return name.endswith(SIDECAR_SUFFIX) or BIDS_SIDECAR.search(name) is not None


def study_from_name(name: str) -> str:
    """The study id a sidecar's file name implies (its ``study`` entry, when readable, wins)."""
    return name[: -len(SIDECAR_SUFFIX)] if name.endswith(SIDECAR_SUFFIX) else Path(name).stem


def study_sha256(files: Sequence[Path]) -> str:
    """The study hash a sidecar records as ``input.sha256``: the SHA-256 of the file, or for a
    series of several files, of their names and bytes in the study's order
    (:func:`mrisr.fsutil.sha256_files`). A MetaImage or NRRD header with its voxels in other files
    (``.mhd`` + ``.raw``, ``.nhdr`` + data files) counts as those files too, after the header."""
    from mrisr.io.itk import itk_data_files

    every = [g for f in files for g in (Path(f), *(d for d in itk_data_files(f) if d.is_file()))]
    return sha256_files(tuple(every))


#: The name of each of a study's files: flat suffix after ``<id>``, BIDS ``desc`` entity, extension,
#: and whether a BIDS derivative keeps it in ``sub-*/[ses-*/]figures`` (else beside the input's place).
_NAMES: dict[str, tuple[str, str, str, bool]] = {
    "output": ("_sr", "sr", ".nii.gz", False),
    "sidecar": (SIDECAR_SUFFIX.removesuffix(".json"), "sr", ".json", False),
    "figure": ("_compare", "srcompare", ".png", True),
    "lowres": ("_lr", "lr", ".nii.gz", False),
    "bicubic": ("_bicubic", "bicubic", ".nii.gz", False),
    "mosaic": ("_mosaic", "srmosaic", ".png", True),
    "uncertainty": ("_uncertainty", "srstd", ".nii.gz", False),
    "residual": ("_residual", "srresidual", ".nii.gz", False),
}


@dataclass(frozen=True)
class Targets:
    """Where one study's outputs go.

    Flat layout: ``OUT/<id>_sr.nii.gz`` (or ``OUT/<id>_sr/`` for DICOM), ``OUT/<id>_sr.json``,
    ``OUT/<id>_compare.png``, ``OUT/<id>_mosaic.png``, ``OUT/<id>_lr.nii.gz``, ``OUT/<id>_bicubic.nii.gz``,
    ``OUT/<id>_uncertainty.nii.gz``, ``OUT/<id>_residual.nii.gz``. A study of a BIDS
    dataset written as NIfTI mirrors its place as a BIDS derivative instead:
    ``OUT/sub-01/anat/sub-01_desc-sr_T1w.nii.gz`` with the sidecar ``..._desc-sr_T1w.json`` and the
    figures ``OUT/sub-01/figures/sub-01_desc-srcompare_T1w.png`` and ``..._desc-srmosaic_T1w.png``
    (``sub-*/ses-*/figures`` in a session).
    """

    output: Path
    sidecar: Path
    figure: Path
    lowres: Path
    bicubic: Path
    mosaic: Path
    uncertainty: Path
    residual: Path

    @classmethod
    def for_study(cls, out_dir: Path, study: Study, fmt: str) -> Targets:
        """The targets of ``study`` written as ``fmt`` into ``out_dir`` (:data:`_NAMES`)."""
        bids = study.bids if fmt == "nifti" else None
        paths: dict[str, Path] = {}
        for key, (suffix, desc, ext, is_figure) in _NAMES.items():
            if bids is None:
                paths[key] = out_dir / f"{study.id}{suffix}{ext}"
            else:
                folder = figures_folder(out_dir, bids) if is_figure else out_dir / bids.parent
                paths[key] = folder / f"{bids_derivative_stem(bids.name, desc)}{ext}"
        if fmt == "dicom":
            paths["output"] = out_dir / f"{study.id}_sr"  # a series folder
        return cls(**paths)

    @classmethod
    def every_format(cls, out_dir: Path, study: Study) -> list[Targets]:
        """The targets of ``study`` in each output format (a rerun in another format replaces them)."""
        return [cls.for_study(out_dir, study, fmt) for fmt in ("nifti", "dicom")]

    def all(self) -> tuple[Path, ...]:
        """Every target path."""
        return (self.output, self.sidecar, self.figure, self.lowres, self.bicubic, self.mosaic, self.uncertainty,
                self.residual)  # fmt: skip


def bids_derivative_stem(name: str, desc: str) -> str:
    """``sub-01_ses-2_T1w.nii.gz`` → ``sub-01_ses-2_desc-<desc>_T1w``.

    An existing ``desc`` is kept in front (``desc-preproc`` → ``desc-preproc<desc>``), so that inputs
    differing only in their ``desc`` keep distinct outputs.
    """
    stem = nifti_stem(name)
    parts = stem.split("_")
    old = next((p[len("desc-") :] for p in parts[:-1] if p.startswith("desc-")), "")
    entities, suffix = [p for p in parts[:-1] if not p.startswith("desc-")], parts[-1]
    return "_".join([*entities, f"desc-{old}{desc}", suffix])


@dataclass(frozen=True)
class Sidecar:
    """A sidecar as read back: the entries the contract relies on, typed, and the whole object.

    Attributes:
        path: The sidecar file.
        study: Its ``study`` id (``None`` when missing or not a string).
        status: ``done``, ``failed``, or whatever else a foreign file holds (``None``: missing).
        input_sha256: ``input.sha256`` (:func:`study_sha256` of the input; done sidecars only).
        request: The ``request`` object (``None`` when not recorded).
        data: The whole JSON object.
    """

    path: Path
    study: str | None
    status: str | None
    input_sha256: str | None
    request: Mapping[str, Any] | None
    data: Mapping[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        """Whether the sidecar marks its study as done."""
        return self.status == "done"

    @classmethod
    def from_dict(cls, path: Path, data: Mapping[str, Any]) -> Sidecar:
        """The record of a sidecar's JSON object ``data`` (entries of the wrong type count as missing)."""
        inp, req = data.get("input"), data.get("request")
        sha = inp.get("sha256") if isinstance(inp, dict) else None
        return cls(
            path=path,
            study=_str(data.get("study")),
            status=_str(data.get("status")),
            input_sha256=_str(sha),
            request=req if isinstance(req, dict) else None,
            data=data,
        )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def load_sidecar(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The one reader: ``(data, None)`` for a readable sidecar, else ``(None, reason)`` (not a
    regular file — a FIFO or a device, never opened —, too large, not UTF-8, not JSON, nested too
    deeply for the parser, or not a JSON object)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever, a device never end
            return None, "unreadable sidecar: not a regular file"
        size = info.st_size
        if size > MAX_SIDECAR_BYTES:
            return None, f"unreadable sidecar: {size} bytes (more than {MAX_SIDECAR_BYTES}; not an mrisr sidecar)"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable sidecar: {' '.join(str(exc).split())[:300]}"
    except RecursionError:
        return None, "unreadable sidecar: JSON nested too deeply"
    if not isinstance(data, dict):
        return None, "invalid sidecar: not a JSON object"
    return data, None


def read_sidecar(path: Path) -> Sidecar | None:
    """The sidecar at ``path``, ``None`` when there is none or it cannot be read (:func:`load_sidecar`)."""
    data, _ = load_sidecar(path)
    return None if data is None else Sidecar.from_dict(path, data)


def standing_result(out_dir: Path, study: Study, targets: Targets) -> tuple[Sidecar | None, Path]:
    """The 'done' sidecar that stands for ``study`` (in ``targets``' place or another format's), and
    its path (``targets.sidecar`` when none stands)."""
    places = [targets.sidecar, *(t.sidecar for t in Targets.every_format(out_dir, study))]
    for path in dict.fromkeys(places):
        old = read_sidecar(path) if path.exists() else None
        if old is not None and old.done:
            return old, path
    return None, targets.sidecar


def request_differences(old: object, new: Mapping[str, Any]) -> list[str]:
    """What a sidecar's ``request`` ``old`` asked differently from ``new``, as ``key: old → new``.

    Sidecars of mrisr before the in-plane ESPCN adaptation also carry ``adapt_base_sha256``, null
    when ``--adapt`` was off (ignored then); a key an older sidecar lacks is ``not recorded``.
    """
    if not isinstance(old, Mapping):
        return ["request: not recorded"]
    if "adapt_base_sha256" in old and old["adapt_base_sha256"] is None:
        old = {k: v for k, v in old.items() if k != "adapt_base_sha256"}
    missing = object()

    def show(value: Any) -> str:
        text = "not recorded" if value is missing else json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 40 else text[:37] + "..."

    keys = [*new, *(k for k in old if k not in new)]
    return [
        f"{k}: {show(old.get(k, missing))} → {show(new.get(k, missing))}"
        for k in keys
        if old.get(k, missing) != new.get(k, missing)
    ]


def rerun_differences(old: Sidecar, *, input_sha256: str, request: Mapping[str, Any]) -> list[str]:
    """Why a standing done sidecar ``old`` is not the result of this run: an input of another hash
    (:func:`study_sha256`), then each :func:`request_differences`; empty when it is."""
    diffs = [] if old.input_sha256 == input_sha256 else ["input: another file (sha256)"]
    return diffs + request_differences(old.request, request)


def _is_record_of(data: Mapping[str, Any], study_id: str) -> bool:
    """Whether ``data`` is a sidecar that mrisr wrote for study ``study_id``."""
    return (
        data.get("study") == study_id
        and data.get("status") in ("done", "failed")
        and isinstance(data.get("mrisr_version"), str)
    )


def _named_files(data: Mapping[str, Any]) -> list[str]:
    """The file names a done sidecar records (relative to its folder), as :mod:`mrisr.enhance` writes them."""
    out = data.get("output")
    names: list[Any] = []
    if isinstance(out, dict):
        names += [out.get("path"), out.get("lowres"), out.get("bicubic")]
    names += [data.get("figure"), data.get("mosaic")]
    for key in ("uncertainty", "consistency"):
        entry = data.get(key)
        if isinstance(entry, dict):
            names.append(entry.get("map"))
    return [n for n in names if isinstance(n, str) and n]


def owned_outputs(out_dir: Path, study: Study) -> frozenset[Path]:
    """The paths of ``study``'s outputs in ``out_dir`` that mrisr's own records say it wrote.

    A sidecar counts when it is mrisr's record of this study (the module docstring, "Ownership");
    it owns itself, and when done, every file it names that is one of the study's target paths in
    either format (:meth:`Targets.every_format`): a record naming anything else owns nothing more.

    Returns:
        The owned paths, as :class:`Targets` names them.
    """
    targets = {os.path.normpath(p): p for t in Targets.every_format(out_dir, study) for p in t.all()}
    owned: set[Path] = set()
    for place in dict.fromkeys(t.sidecar for t in Targets.every_format(out_dir, study)):
        if not os.path.isfile(place):  # False, not an error, for a name too long to exist
            continue
        data, _ = load_sidecar(place)
        if data is None or not _is_record_of(data, study.id):
            continue
        owned.add(place)
        if data.get("status") == "done":
            named = (os.path.normpath(place.parent / n) for n in _named_files(data))
            owned |= {targets[n] for n in named if n in targets}
    return frozenset(owned)
