"""The defaults that the Python API (:class:`mrisr.enhance.Enhancer`,
:class:`~mrisr.enhance.EnhanceOptions`) and ``mrisr enhance`` share, in one place.

Plain values and no imports, so that the command line takes its defaults from here without making
``mrisr --help`` load the network code.
"""

#: The shipped network used when no checkpoint is given: ESPCN, faster (5× fewer operations) and
#: better than SRCNN on every held-out contrast measured (docs/weights.md); SRCNN with ``arch="srcnn"``.
DEFAULT_ARCH = "espcn"

#: The device: ``auto``, the first CUDA GPU when one is available, else the CPU
#: (:func:`mrisr.inference.resolve_device`).
DEFAULT_DEVICE = "auto"

#: The ensemble of ``mrisr enhance``, of the demo and of an :class:`~mrisr.enhance.Enhancer` made
#: without run options: all eight flips and transposes of every slice. On the 14 held-out cases of
#: docs/weights.md it lifted the default ESPCN's mean gain over bicubic from +0.86 to +1.02 dB (every
#: case improved; four views: +0.99 dB), and the whole MNI template ×4 still took 51 s on the 2-core
#: CPU against 95 s for the SRCNN alone (14 s without the ensemble).
DEFAULT_ENSEMBLE = 8
