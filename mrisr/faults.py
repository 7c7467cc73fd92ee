"""Fault injection for the tests of crash safety: named points where a test can make mrisr die.

Code that renames or locks calls :func:`point` at each step (``atomic.before-rename``,
``lock.judged-stale``, ...). Nothing happens unless the environment variable ``MRISR_FAULT`` names the
point::

    MRISR_FAULT=atomic.before-rename:kill        SIGKILL this process at the first hit
    MRISR_FAULT=atomic.after-rename@3:kill       ... at the third hit
    MRISR_FAULT=lock.judged-stale:sleep=0.2      sleep 0.2 s there (to widen a race window)
    MRISR_FAULT=a:kill,b:sleep=0.1               several points

``tests/test_faults.py`` runs ``mrisr`` in subprocesses with each point and checks that a rerun gives
the uninterrupted result. The cost when unset is one dictionary lookup per point.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "MRISR_FAULT"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Act on the fault ``MRISR_FAULT`` asks for at ``name`` (nothing when it names no such point)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.strip().partition(":")
        target, _, nth = where.partition("@")
        if target != name:
            continue
        _hits[name] = _hits.get(name, 0) + 1
        if nth and _hits[name] != int(nth):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep="):
            time.sleep(float(action[len("sleep=") :]))
