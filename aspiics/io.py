"""
File names, acquisition grouping and safe FITS writing for ASPIICS data.

ASPIICS file names carry the filter, the processing level, the exposure (or acquisition)
identifier and the observation time (SPEC §2)::

    aspiics_wb_l1_1320404D000212_20250812T181424.fits
            ^^ ^^ ^^^^^^^^^^^^^^ ^^^^^^^^^^^^^^^
            |  |  |       |   || time of the exposure (UTC)
            |  |  |       |   |exposure in the acquisition (1-3)
            |  |  |       |   acquisition in the sequence (1-6)
            |  |  |       sequence (4 hex digits)
            |  |  cycle (8 hex digits)
            |  level (1, 2 or 3)
            filter (wb, fe, he, p1, p2, p3, unknown) or L3 product (bt, pb, pa, fe, he)

Level-3 products drop the exposure digit: their identifier is the 12-character acquisition ID.
"""

import contextlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

from aspiics.constants import filter_info
from aspiics.exceptions import FilenameError, HeaderError, InputFileError, OutputExistsError, ProcessingError

__all__ = [
    "FILTER_CODES",
    "L3_PRODUCT_CODES",
    "ASPIICSFilename",
    "Acquisition",
    "atomic_output",
    "check_readable",
    "format_filename",
    "group_acquisitions",
    "parse_filename",
    "product_filename",
    "read_header",
    "read_map",
    "write_fits",
    "write_map",
]

#: Name of the binary-table extension that holds the uncertainty and the mask of a map.
AUX_EXTNAME = "ASPIICS_AUX"

#: File-name codes of the filters (``unknown`` when the filter wheel position was not known).
FILTER_CODES = ("wb", "fe", "he", "p1", "p2", "p3", "unknown")
#: File-name codes of the level-3 products, with their ``PROD_ID``.
L3_PRODUCT_CODES = {
    "bt": "Total brightness",
    "pb": "Polarized brightness",
    "pa": "Polarization angle",
    "fe": "Green line",
    "he": "He I D3 line",
    "wb": "Total brightness",
    "p1": "Total brightness",
    "p2": "Total brightness",
    "p3": "Total brightness",
}

_TIME_FORMAT = "%Y%m%dT%H%M%S"
_NAME_RE = re.compile(
    r"^aspiics_(?P<code>[a-z0-9]+)_l(?P<level>[123])_(?P<ident>[0-9a-f]+)_(?P<time>\d{8}T\d{6})"
    r"(?P<ext>\.fits?(?:\.gz|\.fz)?)$",
    re.IGNORECASE,
)
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, order=True)
class ASPIICSFilename:
    """
    The parts of an ASPIICS file name (immutable).

    Create one with `parse_filename` or directly, and turn it back into a name with
    `str` or `ASPIICSFilename.name`.

    Attributes
    ----------
    time : `datetime.datetime`
        Observation time encoded in the name (UTC, whole seconds).
    code : str
        Filter code (``wb``, ``fe``, ``he``, ``p1``, ``p2``, ``p3``, ``unknown``) for levels 1 and 2,
        product code (``bt``, ``pb``, ``pa``, ``fe``, ``he``, ...) for level 3.
    level : int
        Processing level, 1, 2 or 3.
    identifier : str
        Exposure ID (14 characters) for levels 1 and 2, acquisition ID (12 or 13 characters) for
        level 3.
        Hexadecimal digits are kept upper-case.
    extension : str
        File extension, ``.fits`` by default.
    """

    time: datetime
    code: str
    level: int
    identifier: str
    extension: str = ".fits"

    def __post_init__(self):
        code = self.code.lower()
        level = int(self.level)
        if level not in (1, 2, 3):
            raise FilenameError(f"ASPIICS processing level must be 1, 2 or 3, not {self.level!r}")
        allowed = L3_PRODUCT_CODES if level == 3 else FILTER_CODES
        if code not in allowed:
            raise FilenameError(
                f"{code!r} is not a level-{level} ASPIICS code; expected one of {', '.join(allowed)}"
            )
        ident = self.identifier.upper()
        _check_identifier(ident, level)
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "identifier", ident)
        object.__setattr__(self, "time", self.time.replace(microsecond=0, tzinfo=None))

    @property
    def name(self):
        """The file name (without a directory)."""
        return (
            f"aspiics_{self.code}_l{self.level}_{self.identifier}_{self.time.strftime(_TIME_FORMAT)}"
            f"{self.extension}"
        )

    def __str__(self):
        return self.name

    @property
    def cycle(self):
        """The cycle (8 hexadecimal digits)."""
        return self.identifier[:8]

    @property
    def sequence(self):
        """The sequence within the cycle (4 hexadecimal digits)."""
        return self.identifier[8:12]

    @property
    def acquisition(self):
        """The acquisition number within the sequence (1-6), None for a 12-character level-3 ID."""
        return int(self.identifier[12]) if len(self.identifier) > 12 else None

    @property
    def exposure(self):
        """The exposure number within the acquisition (1-3), None for level 3."""
        return int(self.identifier[13]) if len(self.identifier) == 14 else None

    @property
    def acquisition_id(self):
        """
        The ID shared by all exposures of one acquisition: the exposure ID without its last digit.

        13 characters for levels 1 and 2; for level 3 the identifier of the name.
        """
        return self.identifier[:13] if len(self.identifier) == 14 else self.identifier

    @property
    def sequence_id(self):
        """Cycle and sequence (12 characters): the ID of level-3 products."""
        return self.identifier[:12]

    @property
    def filter(self):
        """
        The `~aspiics.constants.FilterInfo` of a level-1 or level-2 file, None otherwise.

        None is also returned for the code ``unknown``.
        """
        if self.level == 3 or self.code == "unknown":
            return None
        return filter_info(self.code)

    def replace(self, **changes):
        """
        Return a copy with some fields changed.

        Examples
        --------
        >>> from aspiics.io import parse_filename
        >>> l1 = parse_filename("aspiics_wb_l1_1320404D000212_20250812T181424.fits")
        >>> l1.replace(level=2).name
        'aspiics_wb_l2_1320404D000212_20250812T181424.fits'
        """
        fields = {k: getattr(self, k) for k in ("time", "code", "level", "identifier", "extension")}
        fields.update(changes)
        return type(self)(**fields)


def _check_identifier(ident, level):
    # Level 3: the SPEC defines the acquisition ID as the exposure ID without its last digit,
    # but the archive's level-3 names carry 12 characters (cycle + sequence, e.g.
    # aspiics_pb_l3_1320607D0001_...), which also names products built from several acquisitions
    # of one sequence (the three polarizers). Both lengths are accepted.
    allowed = (12, 13) if level == 3 else (14,)
    if len(ident) not in allowed:
        what = (
            "an acquisition ID of 12 characters (8 hex cycle + 4 hex sequence), "
            "optionally followed by the acquisition digit"
            if level == 3
            else "an exposure ID of 14 characters (8 hex cycle + 4 hex sequence + acquisition digit 1-6 "
            "+ exposure digit 1-3)"
        )
        raise FilenameError(f"level-{level} identifier {ident!r} must be {what}")
    if not set(ident[:12]) <= _HEX:
        raise FilenameError(f"identifier {ident!r}: the first 12 characters must be hexadecimal")
    if len(ident) > 12 and ident[12] not in "123456":
        raise FilenameError(f"identifier {ident!r}: acquisition digit must be 1-6, not {ident[12]!r}")
    if len(ident) > 13 and ident[13] not in "123":
        raise FilenameError(f"identifier {ident!r}: exposure digit must be 1-3, not {ident[13]!r}")


def parse_filename(path):
    """
    Parse an ASPIICS file name.

    Parameters
    ----------
    path : str or path-like
        A file name or a path; only the last component is parsed.

    Returns
    -------
    `ASPIICSFilename`

    Raises
    ------
    aspiics.exceptions.FilenameError
        If the name does not follow the convention.

    Examples
    --------
    >>> from aspiics.io import parse_filename
    >>> f = parse_filename("data/aspiics_p1_l2_1320404D000242_20250812T181424.fits")
    >>> f.filter.name, f.level, f.acquisition_id, f.exposure
    ('Polarizer 60', 2, '1320404D00024', 2)
    """
    name = Path(path).name
    match = _NAME_RE.match(name)
    if match is None:
        raise FilenameError(
            f"{name!r} is not an ASPIICS file name; expected "
            "'aspiics_<filter>_l<level>_<exposureID>_<YYYYMMDDTHHMMSS>.fits', "
            "e.g. 'aspiics_wb_l1_1320404D000212_20250812T181424.fits'"
        )
    try:
        time = datetime.strptime(match["time"], _TIME_FORMAT)
    except ValueError as err:
        raise FilenameError(f"{name!r}: {match['time']!r} is not a valid time") from err
    try:
        return ASPIICSFilename(time, match["code"], int(match["level"]), match["ident"], match["ext"])
    except FilenameError as err:
        raise FilenameError(f"{name!r}: {err}") from None


def format_filename(code, level, identifier, time, extension=".fits"):
    """
    Build an ASPIICS file name.

    Parameters
    ----------
    code : str or `~aspiics.constants.FilterInfo`
        Filter code (``'wb'``), FITS filter name (``'Wideband'``) or level-3 product code (``'pb'``).
    level : int
        Processing level, 1, 2 or 3.
    identifier : str
        Exposure ID (levels 1 and 2, 14 characters) or acquisition ID (level 3, 12 or 13 characters).
    time : `datetime.datetime`, `astropy.time.Time` or str
        Observation time (ISO string accepted).
    extension : str, optional
        File extension.

    Returns
    -------
    str

    Examples
    --------
    >>> from aspiics.io import format_filename
    >>> format_filename("Wideband", 1, "1320404d000212", "2025-08-12T18:14:24.512")
    'aspiics_wb_l1_1320404D000212_20250812T181424.fits'
    """
    if int(level) != 3 or str(code).lower() not in L3_PRODUCT_CODES:
        if str(code).lower() != "unknown":
            code = filter_info(code).code
    return ASPIICSFilename(_to_datetime(time), str(code), int(level), str(identifier), extension).name


def product_filename(code, meta):
    """
    The official name of a level-3 science product made from a frame or composite.

    Science products (``bt``, ``pb``, ``pa``, ``fe``, ``he``) carry the 12-character cycle +
    sequence ID of their inputs (as the archive's level-3 files do) and the input's ``DATE-OBS``.

    Parameters
    ----------
    code : str
        Product code: ``'bt'``, ``'pb'``, ``'pa'``, ``'fe'`` or ``'he'``.
    meta : dict-like
        Header (or sunpy ``MetaDict``) of the input, with ``FILENAME`` and ``DATE-OBS``.

    Returns
    -------
    str or None
        The name, or None when the input has no ASPIICS file name or no date.

    Examples
    --------
    >>> from aspiics.io import product_filename
    >>> meta = {"filename": "aspiics_p2_l2_1320607D000121_20250812T201607.fits",
    ...         "date-obs": "2025-08-12T20:16:07.5"}
    >>> product_filename("pb", meta)
    'aspiics_pb_l3_1320607D0001_20250812T201607.fits'
    """
    get = meta.get
    name, date = get("filename") or get("FILENAME"), get("date-obs") or get("DATE-OBS")
    if not name or not date:
        return None
    try:
        return format_filename(code, 3, parse_filename(name).sequence_id, date)
    except FilenameError:
        return None


def _to_datetime(time):
    if isinstance(time, datetime):
        return time
    if hasattr(time, "to_datetime"):
        return time.utc.to_datetime()
    try:
        return datetime.fromisoformat(str(time).rstrip("Z"))
    except ValueError as err:
        raise FilenameError(f"cannot read the time {time!r}; give an ISO time") from err


def _read_checked(path, ext=0, *, data=False):
    """Open a FITS file, return a copy of one header (and touch the data); typed errors."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        # astropy reports truncation as a warning (an error under strict warning filters, which
        # would leave the file open): record warnings here and turn truncation into an error.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
                header = hdul[ext].header.copy()
                if data:
                    _ = hdul[ext].data
    except (OSError, ValueError, IndexError, KeyError, TypeError) as err:
        raise InputFileError(f"{path}: not a readable FITS file ({err})") from err
    if any("truncated" in str(w.message).lower() for w in caught):
        raise InputFileError(f"{path}: truncated FITS file (the data are shorter than the header says)")
    return header


def read_header(path, ext=0):
    """
    Read one header of a FITS file, with errors a user can act on.

    Parameters
    ----------
    path : str or path-like
        The FITS file.
    ext : int or str, optional
        The HDU.

    Returns
    -------
    `astropy.io.fits.Header`

    Raises
    ------
    aspiics.exceptions.InputFileError
        If the file does not exist, is not FITS, or is truncated.
    """
    return _read_checked(path, ext)


def check_readable(path):
    """
    Check that a FITS file is complete and its primary data can be read.

    Parameters
    ----------
    path : str or path-like
        The FITS file.

    Raises
    ------
    aspiics.exceptions.InputFileError
        If the file does not exist, is not FITS, or is truncated.
    """
    _read_checked(path, data=True)


# ---------------------------------------------------------------------------------------------
# Acquisition grouping


@dataclass(frozen=True)
class Acquisition:
    """
    The exposures of one ASPIICS acquisition (one filter, 1-3 exposure times).

    Attributes
    ----------
    acquisition_id : str
        The shared 13-character acquisition ID (12 hex digits and the acquisition digit).
    filter : `~aspiics.constants.FilterInfo`
        The filter of every exposure.
    members : tuple
        The files (paths) or maps, sorted by increasing exposure time.
    exposure_times : tuple of float
        Exposure times in seconds, in the order of ``members``.
    """

    acquisition_id: str
    filter: object
    members: tuple
    exposure_times: tuple

    def __len__(self):
        return len(self.members)

    def __iter__(self):
        return iter(self.members)

    @property
    def complete(self):
        """True when the acquisition has three exposures."""
        return len(self.members) == 3


def _describe(item):
    """Return (acquisition_id, exposure digit, FilterInfo, exptime, label) for a path or a map."""
    if hasattr(item, "meta"):  # a map
        meta = item.meta
        label = meta.get("filename", "<map>")
        try:
            parsed = parse_filename(label)
        except FilenameError:
            parsed = None
        fltr = meta.get("filter")
        exptime = meta.get("exptime")
    else:
        label = str(item)
        parsed = parse_filename(item)
        header = read_header(item)
        fltr = header.get("FILTER")
        exptime = header.get("EXPTIME")
    if parsed is None:
        raise FilenameError(f"{label}: cannot find the acquisition ID (FILENAME is not an ASPIICS file name)")
    try:
        info = filter_info(fltr) if fltr is not None else parsed.filter
    except HeaderError:
        info = parsed.filter
    if info is None:
        raise HeaderError(f"{label}: the filter is unknown; set FILTER or name the file with its filter code")
    if exptime is None or not float(exptime) > 0:
        raise HeaderError(f"{label}: EXPTIME is missing or not positive")
    return parsed.acquisition_id, parsed.exposure, info, float(exptime), label


def group_acquisitions(items):
    """
    Group files or maps into acquisitions.

    Exposures belong to one acquisition when they share the acquisition ID of their file name
    (12 hexadecimal digits and the acquisition digit, SPEC §2). Within an acquisition they are
    sorted by increasing ``EXPTIME``.

    Parameters
    ----------
    items : iterable of path-like or `~aspiics.map.ASPIICSMap`
        Level-1 or level-2 files (only their headers are read) or maps.

    Returns
    -------
    list of `Acquisition`
        Sorted by acquisition ID.

    Raises
    ------
    aspiics.exceptions.FilenameError
        If a name is not an ASPIICS name.
    aspiics.exceptions.ProcessingError
        If one acquisition mixes filters, holds two frames with the same exposure number,
        or has more than three exposures.
    """
    groups = {}
    for item in items:
        acq_id, exposure, info, exptime, label = _describe(item)
        groups.setdefault(acq_id, []).append((exptime, exposure, info, item, label))
    result = []
    for acq_id in sorted(groups):
        members = sorted(groups[acq_id], key=lambda m: m[0])
        labels = ", ".join(m[4] for m in members)
        filters = {m[2].name for m in members}
        if len(filters) > 1:
            raise ProcessingError(
                f"acquisition {acq_id} mixes filters ({', '.join(sorted(filters))}): {labels}. "
                "Process each filter separately."
            )
        exposures = [m[1] for m in members if m[1] is not None]
        if len(exposures) != len(set(exposures)):
            raise ProcessingError(f"acquisition {acq_id} holds the same exposure twice: {labels}")
        if len(members) > 3:
            raise ProcessingError(f"acquisition {acq_id} has {len(members)} exposures (at most 3): {labels}")
        result.append(
            Acquisition(
                acq_id,
                members[0][2],
                tuple(m[3] for m in members),
                tuple(m[0] for m in members),
            )
        )
    return result


# ---------------------------------------------------------------------------------------------
# Safe writing


@contextlib.contextmanager
def atomic_output(path, *, overwrite=False):
    """
    Context manager that yields a temporary path and moves it to ``path`` on success.

    The temporary file lives in the destination folder, so the final move is an atomic rename.
    Nothing is left behind if the body raises. Without ``overwrite`` an existing ``path`` is
    never replaced, even if it appears while the body runs.

    Parameters
    ----------
    path : str or path-like
        Final destination.
    overwrite : bool, optional
        Replace an existing file.

    Yields
    ------
    `pathlib.Path`
        The temporary path to write to.

    Raises
    ------
    aspiics.exceptions.OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists already; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
            except FileExistsError:
                raise OutputExistsError(
                    f"{path} appeared while it was being written; pass overwrite=True to replace it"
                ) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise OutputExistsError(f"{path} exists already; pass overwrite=True") from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_fits(path, data, header, *, overwrite=False, extra_hdus=()):
    """
    Write a FITS file atomically, refusing to overwrite unless asked.

    Parameters
    ----------
    path : str or path-like
        Destination.
    data : `numpy.ndarray`
        Primary HDU data, written with its own dtype.
    header : `astropy.io.fits.Header` or dict
        Primary header.
    overwrite : bool, optional
        Replace an existing file.
    extra_hdus : iterable of `astropy.io.fits.ImageHDU` or `astropy.io.fits.BinTableHDU`, optional
        Extension HDUs appended after the primary one.

    Returns
    -------
    `pathlib.Path`
        The path written.

    Raises
    ------
    aspiics.exceptions.OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    header = header if isinstance(header, fits.Header) else fits.Header(header)
    primary = fits.PrimaryHDU(data=data, header=header, do_not_scale_image_data=True)
    hdul = fits.HDUList([primary, *extra_hdus])
    with atomic_output(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # Keyword comments carried over from input headers may not fit next to a longer value:
        # astropy shortens them, which loses nothing but commentary.
        warnings.filterwarnings("ignore", message="Card is too long, comment will be truncated")
        hdul.writeto(tmp, overwrite=True, output_verify="exception")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Maps with uncertainty and mask


def _aux_hdu(m):
    """A one-row binary table with the uncertainty (σ) and the mask of a map, or None."""
    ny, nx = m.data.shape
    columns = []
    sigma = getattr(m, "sigma", None)
    if sigma is not None:
        columns.append(
            fits.Column(name="UNCERTAINTY", format=f"{nx * ny}E", dim=f"({nx},{ny})",
                        array=np.asarray(sigma, dtype=np.float32)[None], unit=m.meta.get("bunit"))
        )  # fmt: skip
    if m.mask is not None:
        columns.append(
            fits.Column(name="MASK", format=f"{nx * ny}B", dim=f"({nx},{ny})",
                        array=np.asarray(m.mask, dtype=np.uint8)[None])
        )  # fmt: skip
    if not columns:
        return None
    hdu = fits.BinTableHDU.from_columns(columns, name=AUX_EXTNAME)
    hdu.header["UNCTYPE"] = ("std", "UNCERTAINTY holds 1-sigma standard deviations")
    hdu.header["COMMENT"] = "Uncertainty and mask of the primary image; read with aspiics.io.read_map."
    return hdu


def write_map(m, path, *, overwrite=False):
    """
    Write a map as FITS: the image in the primary HDU, uncertainty and mask in an extension.

    The primary HDU is an ordinary ASPIICS image (float32 brightness with NaN = missing and
    +Inf = saturated at levels 2 and 3; the raw integers with ``BLANK`` at level 1) that any FITS
    reader understands. The 1σ uncertainty and the mask go into a one-row binary-table extension
    named ``ASPIICS_AUX``, which `sunpy.map.Map` skips and `read_map` restores.

    Parameters
    ----------
    m : `~aspiics.ASPIICSMap`
        The map.
    path : str or path-like
        Destination.
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    `pathlib.Path`

    Raises
    ------
    aspiics.exceptions.OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    from sunpy.map import GenericMap

    header = GenericMap.fits_header.fget(m)  # keep the official keywords (CROTA) as they are
    for key in ("BZERO", "BSCALE"):
        header.remove(key, ignore_missing=True)
    data = np.asarray(m.data)
    if np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32, copy=False)
        header.remove("BLANK", ignore_missing=True)
    aux = _aux_hdu(m)
    return write_fits(path, data, header, overwrite=overwrite, extra_hdus=() if aux is None else (aux,))


def read_map(path):
    """
    Read an ASPIICS FITS file into a map, restoring the uncertainty and the mask.

    Parameters
    ----------
    path : str or path-like
        A file written by `write_map` (or any ASPIICS file: without the ``ASPIICS_AUX``
        extension the map has the mask implied by the data and no uncertainty).

    Returns
    -------
    `~aspiics.ASPIICSMap`

    Raises
    ------
    aspiics.exceptions.InputFileError
        If the file is missing, unreadable or not an ASPIICS file.
    """
    import sunpy.map
    from astropy.nddata import StdDevUncertainty

    from aspiics.map import ASPIICSMap

    check_readable(path)
    m = sunpy.map.Map(path)
    if not isinstance(m, ASPIICSMap):
        raise InputFileError(f"{path}: not an ASPIICS file")
    with fits.open(path, memmap=False) as hdul:
        if AUX_EXTNAME not in hdul:
            return m
        table = hdul[AUX_EXTNAME].data
        names = table.columns.names
        sigma = np.array(table["UNCERTAINTY"][0], dtype=np.float32) if "UNCERTAINTY" in names else None
        mask = np.array(table["MASK"][0], dtype=bool) if "MASK" in names else m.mask
    uncertainty = None if sigma is None else StdDevUncertainty(sigma, copy=False)
    return ASPIICSMap(m.data, m.meta, uncertainty=uncertainty, mask=mask)
