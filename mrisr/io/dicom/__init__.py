"""DICOM series: grouping, reading and writing, honouring the volume contract of :mod:`mrisr.io`.

This is the only module of mrisr that knows DICOM's patient coordinate system, LPS+ (x to the Left,
y to the Posterior, z to the Superior). Every affine that leaves this module is RAS+::

    RAS = diag(-1, -1, 1) · LPS

Headers are read with pydicom (fast, without pixel data); pixels of single-frame slices are read with
SimpleITK (which handles the compressed transfer syntaxes), imported inside the functions that need
it, and those of multi-frame objects with pydicom (:mod:`~mrisr.io.dicom.pixels`). An Enhanced
(multi-frame) object is read as one classic slice per frame (:mod:`~mrisr.io.dicom.enhanced`), a
Siemens mosaic as one classic slice per tile (:mod:`~mrisr.io.dicom.mosaic`).

A volume read here carries ``meta["dicom"]``, a :class:`~mrisr.io.dicom.source.DicomSource` (the
header of each source slice in ``k`` order and the source grid): the writer builds each derived
slice from its source slice's header (:mod:`~mrisr.io.dicom.derive`, :func:`write_dicom_series`).

Voxel axes of a series read here:

- ``i`` runs along a row of the image (the column index; direction ``ImageOrientationPatient[0:3]``,
  step ``PixelSpacing[1]``),
- ``j`` runs down a column (the row index; direction ``ImageOrientationPatient[3:6]``, step
  ``PixelSpacing[0]``),
- ``k`` runs through the slices, ordered by position along the slice normal (row × column
  direction), lowest first — unless the ``InstanceNumber`` values run strictly the other way, in which
  case instance order is kept (so that a series written by :func:`write_dicom_series` reads back with
  the voxel order it was written with, whatever the handedness of its grid).
"""

from mrisr.io.dicom.common import LPS_TO_RAS
from mrisr.io.dicom.read import read_dicom_path, read_dicom_series
from mrisr.io.dicom.series import DicomSeries, group_series
from mrisr.io.dicom.source import DicomSource
from mrisr.io.dicom.write import check_dicom_grid, dicom_as_written, dicom_stored_dtype, write_dicom_series

__all__ = [
    "LPS_TO_RAS",
    "DicomSeries",
    "DicomSource",
    "check_dicom_grid",
    "dicom_as_written",
    "dicom_stored_dtype",
    "group_series",
    "read_dicom_path",
    "read_dicom_series",
    "write_dicom_series",
]
