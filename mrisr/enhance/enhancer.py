"""The :class:`Enhancer`: the batch loop over studies, with one network loaded once for all of them.

The flow is one way: :class:`Enhancer` builds one :class:`~mrisr.enhance.arrays.ArraySR` (the array
level) and, per batch, one :class:`~mrisr.enhance.compute.Batch` (options and factors, worked out
once), and calls :func:`~mrisr.enhance.studies.process_study` for each study.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from mrisr.checkpoint import Checkpoint
from mrisr.discovery import Study
from mrisr.enhance.arrays import ArraySR
from mrisr.enhance.compute import Batch
from mrisr.enhance.options import EnhanceOptions, StudyResult
from mrisr.enhance.studies import process_study
from mrisr.inference import RunOptions
from mrisr.io import Volume
from mrisr.transforms import Normalization

log = logging.getLogger(__name__)

#: How often a study locked by another process is tried again while waiting for it (``lock_wait``).
LOCK_POLL_S = 1.0


class Enhancer:
    """Super-resolves studies with one network, loaded once for all of them.

    Use it as a context manager, or call :meth:`close`, to end its figure thread::

        with Enhancer(resolve_checkpoint(None, (4, 4, 1))) as enhancer:
            results = enhancer.enhance(find_studies(["scans/"]), EnhanceOptions(out_dir="out"))

    Args:
        checkpoint: The network and its metadata (the in-plane stage when ``through_plane`` is given).
        run: Device and batching options; ``None``: those of ``mrisr enhance``
            (:func:`~mrisr.enhance.options.default_run`: the first GPU, else the CPU; 8 views).
        through_plane: A one-axis network for the second stage of scales that refine both the plane
            of the slices and the slice axis (``2,2,5``; :func:`~mrisr.enhance.options.split_stages`).
    """

    def __init__(
        self, checkpoint: Checkpoint, run: RunOptions | None = None, *, through_plane: Checkpoint | None = None
    ) -> None:
        self.arrays = ArraySR(checkpoint, run, through_plane=through_plane)
        self._background: ThreadPoolExecutor | None = None

    @property
    def checkpoint(self) -> Checkpoint:
        """The network's checkpoint (the in-plane stage's with two stages)."""
        return self.arrays.checkpoint

    @property
    def run(self) -> RunOptions:
        """Device and batching options."""
        return self.arrays.run

    @property
    def through_plane(self) -> Checkpoint | None:
        """The one-axis network of a second stage, if any."""
        return self.arrays.through_plane

    def enhance_array(
        self, data: np.ndarray, factors: tuple[int, int, int], **kwargs: Any
    ) -> tuple[np.ndarray, Normalization, dict[str, Any] | None]:
        """:meth:`ArraySR.enhance_array <mrisr.enhance.arrays.ArraySR.enhance_array>` of this network."""
        return self.arrays.enhance_array(data, factors, **kwargs)

    def close(self) -> None:
        """End the figure thread (after the figure it draws); the enhancer may still be used after it."""
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None

    def __enter__(self) -> Enhancer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _figures(self) -> ThreadPoolExecutor:
        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-figure")
        return self._background

    def batch(self, opts: EnhanceOptions, *, progress: Callable[[int], None] | None = None) -> Batch:
        """The :class:`~mrisr.enhance.compute.Batch` of ``opts`` (factors worked out once)."""
        return Batch.of(self.arrays, opts, progress=progress, background=self._figures() if opts.figure else None)

    def process(self, study: Study, opts: EnhanceOptions) -> StudyResult:
        """Enhance one study (:func:`~mrisr.enhance.studies.process_study`); never raises for a bad study."""
        return process_study(self.batch(opts), study)

    def enhance(
        self,
        studies: Sequence[Study],
        opts: EnhanceOptions,
        *,
        on_start: Callable[[Study, int], None] | None = None,
        on_slices: Callable[[int], None] | None = None,
        on_done: Callable[[StudyResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[StudyResult]:
        """Enhance ``studies`` in order; bad studies fail alone and the batch goes on.

        The next study is read by a background thread while the current one computes. When
        ``should_stop`` turns true (SIGTERM/SIGINT) the loop stops after the current study.
        """
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        batch = self.batch(opts, progress=on_slices)
        results: list[StudyResult] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-read") as pool:
            nxt: Future[Volume] | None = pool.submit(studies[0].load) if studies else None
            if batch.background is not None:  # matplotlib's import (about a second) overlaps with the first study
                from mrisr import figures

                batch.background.submit(figures.preload)
            for n, study in enumerate(studies):
                current = nxt
                nxt = pool.submit(studies[n + 1].load) if n + 1 < len(studies) else None
                if should_stop is not None and should_stop():
                    break
                if on_start is not None:
                    on_start(study, n)
                res = process_study(batch, study, loaded=current)
                results.append(res)
                if on_done is not None and res.status != "locked":
                    on_done(res)
            if nxt is not None:
                nxt.cancel()
        # Studies another process held are tried again at the end, for up to opts.lock_wait seconds:
        # a lock released meanwhile (a racing worker that finished the study) gives the usual
        # result, usually 'skipped'.
        deadline = time.monotonic() + opts.lock_wait
        retried = [k for k, res in enumerate(results) if res.status == "locked"]
        pending = list(retried)
        while pending:
            for k in list(pending):
                if should_stop is not None and should_stop():
                    break
                results[k] = process_study(batch, results[k].study)
                if results[k].status != "locked":
                    pending.remove(k)
            if not pending or time.monotonic() >= deadline or (should_stop is not None and should_stop()):
                break
            time.sleep(min(LOCK_POLL_S, max(0.0, deadline - time.monotonic())))
        if on_done is not None:
            for k in retried:
                on_done(results[k])
        return results
