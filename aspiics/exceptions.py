"""
Exceptions and warnings raised by ``aspiics``.

Every error that comes from bad input derives from `AspiicsError`, and also from the
built-in exception a Python user would expect (`ValueError`, `FileNotFoundError`, ...), so
``except ValueError`` keeps working in code that does not know about ``aspiics``.
"""

__all__ = [
    "AspiicsError",
    "AspiicsUserWarning",
    "AspiicsWarning",
    "CalibrationError",
    "FilenameError",
    "HeaderError",
    "InputFileError",
    "OutputExistsError",
    "ProcessingError",
]


class AspiicsError(Exception):
    """Base class of every error raised by ``aspiics``."""


class FilenameError(AspiicsError, ValueError):
    """A file name does not follow the ASPIICS naming convention."""


class HeaderError(AspiicsError, ValueError):
    """A FITS header lacks a keyword, or holds a value that cannot be used."""


class InputFileError(AspiicsError, OSError):
    """An input file is missing, unreadable, truncated or not an ASPIICS FITS file."""


class CalibrationError(AspiicsError, OSError):
    """Calibration data are missing, corrupt or inconsistent."""


class ProcessingError(AspiicsError, ValueError):
    """A processing step was asked to do something it cannot (wrong order, wrong level, ...)."""


class OutputExistsError(AspiicsError, FileExistsError):
    """An output file exists already and overwriting was not asked for."""


class AspiicsWarning(Warning):
    """Base class of every warning issued by ``aspiics``."""


class AspiicsUserWarning(AspiicsWarning, UserWarning):
    """A warning about the data or the calibration that a user should read."""
