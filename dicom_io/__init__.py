"""DICOM in and out for fracture-screen. Knows nothing about models and never imports torch.

Importing the package turns off pydicom's validation of values *as it reads them* (and its
logger below errors): pydicom warns and logs an invalid value verbatim (``Invalid value for VR
DA: '1970-01-31'``), which puts a patient's birth date into a nightly log. Every value this
package uses is checked where it is used instead (:mod:`dicom_io.index`, :mod:`dicom_io.uids`,
the SR writer), and reasons name the attribute, never its value. Decode workers import the
package too, so they are quiet the same way.
"""

import logging as _logging
import warnings as _warnings

import pydicom.config as _pydicom_config

_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE
_logging.getLogger("pydicom").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message=r"Invalid value for VR", category=UserWarning)
