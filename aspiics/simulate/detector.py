"""
Detector forward model of ASPIICS: from a corona scene to L1 frames (int16 DN, tile maps).
"""

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time, TimeDelta
from astropy.wcs import WCS
from scipy.ndimage import gaussian_filter1d

from aspiics.constants import BLANK_DN, DETECTOR_SHAPE, SATURATION_DN, TILE_SIZE, filter_info
from aspiics.exceptions import OutputExistsError
from aspiics.io import format_filename, write_fits
from aspiics.optics import vignetting
from aspiics.simulate.calibration import SyntheticCalibration, make_calibration_set
from aspiics.simulate.corona import CoronaModel

__all__ = [
    "BandingModel",
    "FrameTruth",
    "SimulatedAcquisition",
    "SimulatedFrame",
    "apply_nonlinearity",
    "exposure_time",
    "simulate_acquisition",
    "simulate_polarized_set",
]

log = logging.getLogger(__name__)

#: Exposure times are integer multiples of this step (s).
EXPOSURE_STEP = 1.23e-4
#: A tile is dropped when more than this fraction of its pixels is saturated.
TILE_SATURATED_FRACTION = 0.05
#: A tile is dropped when its median signal above bias is below this (DN).
TILE_UNDEREXPOSED_DN = 30.0
#: Proba-3 launch (start of orbit counting) and orbital period.
_LAUNCH = Time("2024-12-05T10:34:00", scale="utc")
_ORBIT_HOURS = 19.6
# filter-wheel positions (documented guess: filter1..3 are the polarizers p1..p3)
_FILT_POS = {
    "p1": "filter1",
    "p2": "filter2",
    "p3": "filter3",
    "wb": "filter4",
    "fe": "filter5",
    "he": "filter6",
}
_RSUN_REF_M = 695700000.0


def exposure_time(requested):
    """
    The exposure time the instrument would use: the multiple of 0.123 ms closest to ``requested``.

    Parameters
    ----------
    requested : float
        Requested exposure time (s).

    Returns
    -------
    float
        ``n * 1.23e-4`` s, rounded to the microsecond (e.g. 0.1 → 0.099999, 1.0 → 0.99999).
    """
    n = max(1, round(float(requested) / EXPOSURE_STEP))
    return n * 123 / 1e6


def apply_nonlinearity(linear, table):
    """
    Map linear signal to measured signal with a (2, N) non-linearity table.

    Parameters
    ----------
    linear : `numpy.ndarray`
        Linear signal above bias (DN).
    table : array_like, shape (2, N)
        Row 0 linear (uniform grid), row 1 measured (DN), as in ``detector_nonlin.fits``.

    Returns
    -------
    `numpy.ndarray`
        Measured signal (float32): piecewise-linear interpolation in the table (identical to
        `numpy.interp` on a uniform grid), extrapolated linearly with the first/last slope.
    """
    xs = np.asarray(table[0], dtype=np.float64)
    ys = np.asarray(table[1], dtype=np.float32)
    n = xs.size
    dx = (xs[-1] - xs[0]) / (n - 1)
    if not np.allclose(np.diff(xs), dx, rtol=1e-4, atol=1e-3):
        out = np.interp(linear, xs, ys).astype(np.float32)
        lo, hi = linear < xs[0], linear > xs[-1]
        s0 = (ys[1] - ys[0]) / (xs[1] - xs[0])
        s1 = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        out[lo] = ys[0] + (linear[lo] - xs[0]) * s0
        out[hi] = ys[-1] + (linear[hi] - xs[-1]) * s1
        return out
    pos = (np.asarray(linear, dtype=np.float32) - np.float32(xs[0])) * np.float32(1.0 / dx)
    i = np.clip(np.floor(pos), 0, n - 2).astype(np.int32)
    f = pos - i  # < 0 or > 1 outside the table: linear extrapolation with the end slopes
    y0 = ys[i]
    return y0 + f * (ys[i + 1] - y0)


@dataclass(frozen=True)
class BandingModel:
    """
    Residual column/row banding added by the simulator (linear DN, before noise).

    Parameters
    ----------
    seed : int
        Seed of the (static) instrument pattern; independent of the noise seed.
    static_rms_dn : float
        RMS of the static per-column offset common to all rows (DN).
    even_odd_rms_dn : float
        RMS of the per-column offset that has opposite signs on even and odd rows (DN).
    n_drifting : int
        Number of columns (at 2048 columns; scaled with the width) whose offset drifts in time.
    drift_amplitude_dn : float
        Amplitude of the drift (DN); offset ``a sin(2 pi t / P + phi)``, ``t`` in days.
    drift_period_days : tuple of float
        Range of the drift periods ``P``.
    column_gain_rms : float
        RMS of the column gain error that is not in the flat file: a component
        ``g_col × signal`` proportional to the scene signal (DN).
    row_amplitude_dn : float
        Horizontal banding: ``row_amplitude_dn × smooth(saturated fraction of the row)`` (DN).
    row_smooth_px : float
        Gaussian sigma (rows, at 2048 rows; scaled) of the horizontal component.
    """

    seed: int = 2025
    static_rms_dn: float = 2.0
    even_odd_rms_dn: float = 1.0
    n_drifting: int = 8
    drift_amplitude_dn: float = 4.0
    drift_period_days: tuple = (0.5, 5.0)
    column_gain_rms: float = 0.002
    row_amplitude_dn: float = 8.0
    row_smooth_px: float = 24.0

    def _draws(self, nx):
        """The random draws of the static pattern for ``nx`` columns (always in the same order)."""
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), nx, 0xBA4D]))
        static = rng.normal(0.0, self.static_rms_dn, nx).astype(np.float32)
        eo = rng.normal(0.0, self.even_odd_rms_dn, nx).astype(np.float32)
        n_drift = max(1, round(self.n_drifting * nx / DETECTOR_SHAPE[1])) if self.n_drifting else 0
        cols = np.zeros(0, dtype=int)
        periods = phases = amps = np.zeros(0)
        if n_drift:
            cols = rng.choice(nx, n_drift, replace=False)
            periods = rng.uniform(*self.drift_period_days, n_drift)
            phases = rng.uniform(0, 2 * np.pi, n_drift)
            amps = self.drift_amplitude_dn * rng.uniform(0.5, 1.0, n_drift)
        g_col = rng.normal(0.0, self.column_gain_rms, nx).astype(np.float32)
        return static, eo, cols, periods, phases, amps, g_col

    def column_gain(self, nx):
        """
        The relative column gain ``g_col`` of the gain component (``gain = g_col × signal``).

        Parameters
        ----------
        nx : int
            Number of detector columns of the frames.

        Returns
        -------
        `numpy.ndarray`
            float32, shape ``(nx,)``: the same draw `components` uses for frames ``nx`` wide.
        """
        return self._draws(int(nx))[-1]

    def components(self, shape, date, signal_dn, saturated_rows):
        """
        The banding components of one frame.

        Parameters
        ----------
        shape : tuple of int
            ``(ny, nx)``.
        date : `astropy.time.Time`
            Observation time (drives the drifting columns).
        signal_dn : `numpy.ndarray`
            Scene signal (DN, linear) of the frame.
        saturated_rows : `numpy.ndarray`
            Fraction of saturated pixels of each row, shape ``(ny,)``.

        Returns
        -------
        dict
            ``"static"`` (even/odd column offsets), ``"drift"``, ``"gain"`` and ``"row"``, each
            a float32 array of ``shape`` (the drift and row components are read-only broadcast
            views).
        """
        ny, nx = shape
        static, eo, cols, periods, phases, amps, g_col = self._draws(nx)
        st = np.empty(shape, dtype=np.float32)
        st[0::2] = static + eo
        st[1::2] = static - eo
        drift = np.zeros(nx, dtype=np.float32)
        if cols.size:
            days = (date - Time("2025-01-01T00:00:00", scale="utc")).to_value(u.day)
            drift[cols] = amps * np.sin(2 * np.pi * days / periods + phases)
        gain = signal_dn * g_col[np.newaxis, :]
        sigma = max(1.0, self.row_smooth_px * ny / DETECTOR_SHAPE[0])
        row = self.row_amplitude_dn * gaussian_filter1d(
            saturated_rows.astype(np.float64), sigma, mode="nearest"
        )
        return {
            "static": st,
            "drift": np.broadcast_to(drift[np.newaxis, :], shape),
            "gain": gain.astype(np.float32),
            "row": np.broadcast_to(row.astype(np.float32)[:, np.newaxis], shape),
        }


@dataclass
class FrameTruth:
    """
    What the simulator knows about one frame.

    Attributes
    ----------
    l2 : `numpy.ndarray`
        The L2 (MSB) that a perfect calibration yields *without* vignetting correction and
        without banding correction, apart from noise: ``scene × vignetting``. A perfect L2 is
        ``(DN_lin − dark·t) / (flat · Aphot · t)`` after bias removal and exact non-linearity
        inversion, i.e. ``scene × vignetting + banding_msb + hot excess / (flat · Aphot · t)``;
        `l2` leaves out the banding (see `banding_msb`) and the hot/unusual-pixel excess (which
        the bad-pixel step is expected to replace). Saturated and beyond-table pixels are
        included with their true values.
    scene : `numpy.ndarray`
        Brightness entering the instrument (MSB) before vignetting: ``B`` for Wideband,
        ``B + line`` for Fe XIV and He I, ``½ (B + pB cos 2(ψ − α))`` for a polarizer.
    vignetting : `numpy.ndarray`
        IO vignetting of the filter (`aspiics.optics.vignetting` with the release's polar fit).
    B, pB : `numpy.ndarray`
        Total and polarized brightness of the scene (MSB) on this frame's pixels.
    alpha : `numpy.ndarray`
        Polarization (tangential) direction, deg in [0, 180), detector frame (from +x towards +y).
    psi : `numpy.ndarray` or None
        Polarizer orientation used (deg, detector frame), None for non-polarizers.
    banding_dn, banding_msb : `numpy.ndarray`
        Total injected banding in linear DN, and its exact L2 equivalent
        ``banding_dn / (flat · Aphot · t)`` (MSB).
    banding_components : dict
        ``"static"``, ``"drift"``, ``"gain"``, ``"row"`` (linear DN) summing to `banding_dn`.
    saturated : `numpy.ndarray`
        bool, the (noisy) raw value before clipping was ≥ 16383 (so raw == 16383 there).
    beyond_nonlin : `numpy.ndarray`
        bool, the raw value minus bias (noise and rounding included) exceeds the measured range of
        the non-linearity table: what a perfect calibration flags as saturated.
    missing : `numpy.ndarray`
        bool, pixel of a dropped tile (BLANK in the file).
    hot : `numpy.ndarray`
        bool, listed hot pixel with excess dark current in this frame.
    unusual : `numpy.ndarray`
        bool, unusual pixel that jumped by +20–40 DN in this frame.
    dn_linear : `numpy.ndarray`
        Noise-free linear signal above bias (DN): scene + dark + hot/unusual + banding.
    dn_expected : `numpy.ndarray`
        Noise-free raw DN (float32): ``nonlin(dn_linear) + bias``, not clipped, not rounded.
    sigma_l2 : `numpy.ndarray`
        Noise standard deviation of the L2 (MSB) from the reference noise model:
        ``var_e = (readnoise/gain)² + dark·t/gain + signal_e`` with ``signal_e`` the
        non-dark electrons, divided by ``(flat · Aphot / gain · t)²``.
    sun_center : tuple of float
        0-based pixel (x, y) of Sun centre.
    roll_deg : float
        CROTA of the frame (roll + jitter, deg).
    exptime : float
        Exposure time (s).
    aps_temp : float
        Detector temperature (°C).
    line : `numpy.ndarray` or None
        Emission-line brightness in the scene (MSB of the frame's filter, before vignetting,
        `~aspiics.simulate.CoronaModel.line_brightness`): the Fe XIV or He I D3 line for those
        filters, zeros for the others. ``line_emission`` of a perfect L2 pair recovers
        ``line × vignetting``.
    """

    l2: np.ndarray
    scene: np.ndarray
    vignetting: np.ndarray
    B: np.ndarray
    pB: np.ndarray
    alpha: np.ndarray
    psi: np.ndarray | None
    banding_dn: np.ndarray
    banding_msb: np.ndarray
    banding_components: dict
    saturated: np.ndarray
    beyond_nonlin: np.ndarray
    missing: np.ndarray
    hot: np.ndarray
    unusual: np.ndarray
    dn_linear: np.ndarray
    dn_expected: np.ndarray
    sigma_l2: np.ndarray
    sun_center: tuple
    roll_deg: float
    exptime: float
    aps_temp: float
    line: np.ndarray | None = None


@dataclass
class SimulatedFrame:
    """
    One simulated L1 exposure.

    Attributes
    ----------
    data : `numpy.ndarray`
        int16 raw DN; missing tiles are ``BLANK`` (−32768), saturated pixels 16383.
    header : `astropy.io.fits.Header`
        The L1 header.
    path : `pathlib.Path` or None
        File written, if any.
    truth : `FrameTruth`
    """

    data: np.ndarray
    header: fits.Header
    path: Path | None
    truth: FrameTruth

    @property
    def wcs(self):
        """The frame's celestial WCS (built from the header numbers, CROTA ignored)."""
        return _wcs_from_header(self.header)


@dataclass
class SimulatedAcquisition:
    """
    The exposures of one filter acquisition.

    Attributes
    ----------
    frames : list of `SimulatedFrame`
        Shortest first, in the order requested.
    calibration : `~aspiics.simulate.SyntheticCalibration`
        The calibration release (instrument truth) used.
    corona : `~aspiics.simulate.CoronaModel`
        The scene model.
    filter : str
        FITS ``FILTER`` name.
    acquisition_id : str
        13-character acquisition ID (cycle + sequence + acquisition digit) shared by the frames.
    """

    frames: list
    calibration: SyntheticCalibration
    corona: CoronaModel
    filter: str
    acquisition_id: str = ""
    paths: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# helpers


def _seed_int(seed):
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, np.random.SeedSequence):
        return int(seed.generate_state(1, dtype=np.uint64)[0] >> 1)
    return int(seed)


def _default_acquisition_id(date, seed, acq_digit=1):
    orbit = _orbit_id(date)
    minutes = round((date - _LAUNCH).to_value(u.min))
    cycle = f"{orbit & 0xFFFF:04X}{minutes & 0xFFFF:04X}"
    seq = f"{(1 + seed % 0xFFFE) & 0xFFFF:04X}"
    return f"{cycle}{seq}{acq_digit}"


def _orbit_id(date):
    return max(1, int((date - _LAUNCH).to_value(u.hour) // _ORBIT_HOURS) + 1)


def _observer(date):
    from sunpy.coordinates import get_earth

    earth = get_earth(date)
    dsun = earth.radius.to_value(u.m)
    return {
        "HGLN_OBS": float(earth.lon.to_value(u.deg)),
        "HGLT_OBS": float(earth.lat.to_value(u.deg)),
        "DSUN_OBS": float(dsun),
        "RSUN_ARC": float(np.degrees(np.arcsin(_RSUN_REF_M / dsun)) * 3600.0),
    }


def _make_wcs(shape, sun_xy, roll_deg, plate_scale):
    """TAN helioprojective WCS with CRPIX at the detector centre and Sun centre at ``sun_xy``."""
    ny, nx = shape
    th = np.radians(roll_deg)
    pc = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    crpix0 = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])  # 0-based detector centre
    crval = pc @ (crpix0 - np.asarray(sun_xy, dtype=float)) * plate_scale
    for _ in range(3):
        w = _build_wcs(crpix0 + 1.0, crval, plate_scale, pc)
        sx, sy = w.world_to_pixel_values(0.0, 0.0)
        err = np.array([sx, sy]) - np.asarray(sun_xy, dtype=float)
        if np.max(np.abs(err)) < 1e-9:
            break
        crval = crval + pc @ err * plate_scale
    return _build_wcs(crpix0 + 1.0, crval, plate_scale, pc), crval, pc


def _build_wcs(crpix, crval_arcsec, plate_scale, pc):
    w = WCS(naxis=2)
    w.wcs.ctype = ["HPLN-TAN", "HPLT-TAN"]
    w.wcs.cunit = ["arcsec", "arcsec"]
    w.wcs.cdelt = [plate_scale, plate_scale]
    w.wcs.crpix = list(crpix)
    w.wcs.crval = list(crval_arcsec)
    w.wcs.pc = pc
    w.wcs.lonpole = 180.0
    w.wcs.set()
    return w


def _wcs_from_header(h):
    pc = np.array([[h["PC1_1"], h["PC1_2"]], [h["PC2_1"], h["PC2_2"]]])
    return _build_wcs([h["CRPIX1"], h["CRPIX2"]], [h["CRVAL1"], h["CRVAL2"]], h["CDELT1"], pc)


def _inverse_nonlin_scalar(measured, table):
    """Linear signal giving ``measured`` (scalar), with linear extrapolation beyond the table."""
    xs, ys = np.asarray(table[0], float), np.asarray(table[1], float)
    if measured > ys[-1]:
        return xs[-1] + (measured - ys[-1]) * (xs[-1] - xs[-2]) / (ys[-1] - ys[-2])
    return float(np.interp(measured, ys, xs))


def _tile_size(shape):
    return max(8, round(TILE_SIZE * shape[1] / DETECTOR_SHAPE[1]))


def _tile_mask(above_bias, saturated, tile):
    """bool mask of pixels in tiles to drop (too saturated or under-exposed)."""
    ny, nx = above_bias.shape
    ty, tx = -(-ny // tile), -(-nx // tile)
    if ny % tile or nx % tile:
        pad = ((0, ty * tile - ny), (0, tx * tile - nx))
        a = np.pad(above_bias.astype(np.float32), pad, constant_values=np.nan)
        s = np.pad(saturated.astype(np.float32), pad, constant_values=np.nan)
        a = a.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty, tx, -1)
        s = s.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty, tx, -1)
        med = np.nanmedian(a, axis=-1)
        frac = np.nanmean(s, axis=-1)
    else:
        a = above_bias.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty, tx, -1)
        s = saturated.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty, tx, -1)
        med = np.median(a, axis=-1)
        frac = s.mean(axis=-1)
    drop = (frac > TILE_SATURATED_FRACTION) | (med < TILE_UNDEREXPOSED_DN)
    full = np.repeat(np.repeat(drop, tile, axis=0), tile, axis=1)
    return full[:ny, :nx]


def _l1_header(
    *,
    shape,
    info,
    exptime,
    aps_temp,
    t_beg,
    wcs_crval,
    pc,
    roll,
    plate_scale,
    observer,
    filename,
    exposure_id,
    isd_m,
    oplf,
):
    ny, nx = shape
    t_end = t_beg + TimeDelta(exptime * u.s)
    h = fits.Header()
    h["BLANK"] = (BLANK_DN, "value of missing pixels (dropped tiles)")
    h["TELESCOP"] = ("PROBA-3", "mission")
    h["OBSRVTRY"] = ("PROBA-3", "observatory")
    h["INSTRUME"] = ("ASPIICS", "instrument")
    h["DETECTOR"] = ("ASPIICS", "detector")
    h["LEVEL"] = ("L1", "data processing level")
    h["FILENAME"] = (filename, "file name")
    h["PARENT"] = ("aspiics.simulate", "simulated: no parent telemetry")
    h["ORIGIN"] = ("aspiics.simulate", "synthetic data made by the aspiics simulator")
    h["CREATOR"] = ("aspiics.simulate", "software that made the file")
    h["DATE"] = (_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "file creation date (UTC)")
    h["DATE-OBS"] = (t_beg.utc.isot, "start of exposure (UTC)")
    h["DATE-BEG"] = (t_beg.utc.isot, "start of exposure (UTC)")
    h["DATE-END"] = (t_end.utc.isot, "end of exposure (UTC)")
    h["TIMESYS"] = ("UTC", "time system")
    h["EXPTIME"] = (exptime, "[s] exposure time")
    h["FILTER"] = (info.name, "filter")
    if info.is_polarizer:
        h["POLAR"] = (float(info.polarizer_angle.to_value(u.deg)), "[deg] nominal polarizer angle")
    h["FILT_POS"] = (_FILT_POS[info.code], "filter-wheel position")
    h["APS_TEMP"] = (round(float(aps_temp), 3), "[degC] detector temperature")
    h["ACQ_ID"] = (exposure_id[:-1], "acquisition ID")
    h["EXP_ID"] = (exposure_id, "exposure ID")
    h["BUNIT"] = ("DN", "raw digital numbers")
    h["WCSNAME"] = ("Helioprojective-cartesian", "")
    h["CTYPE1"] = ("HPLN-TAN", "helioprojective longitude, gnomonic")
    h["CTYPE2"] = ("HPLT-TAN", "helioprojective latitude, gnomonic")
    h["CUNIT1"] = ("arcsec", "")
    h["CUNIT2"] = ("arcsec", "")
    h["CDELT1"] = (plate_scale, "[arcsec/pix] plate scale")
    h["CDELT2"] = (plate_scale, "[arcsec/pix] plate scale")
    h["CRPIX1"] = ((nx + 1) / 2.0, "reference pixel (1-based): detector centre")
    h["CRPIX2"] = ((ny + 1) / 2.0, "reference pixel (1-based): detector centre")
    h["CRVAL1"] = (float(wcs_crval[0]), "[arcsec] offset of CRPIX from Sun centre")
    h["CRVAL2"] = (float(wcs_crval[1]), "[arcsec] offset of CRPIX from Sun centre")
    h["CROTA"] = (float(roll), "[deg] rotation (PC matrix is authoritative)")
    h["PC1_1"] = float(pc[0, 0])
    h["PC1_2"] = float(pc[0, 1])
    h["PC2_1"] = float(pc[1, 0])
    h["PC2_2"] = float(pc[1, 1])
    h["LONPOLE"] = (180.0, "[deg] native longitude of the celestial pole")
    h["RSUN_ARC"] = (observer["RSUN_ARC"], "[arcsec] apparent solar radius")
    h["RSUN_REF"] = (_RSUN_REF_M, "[m] reference solar radius")
    h["DSUN_OBS"] = (observer["DSUN_OBS"], "[m] observer distance from Sun centre")
    h["HGLN_OBS"] = (observer["HGLN_OBS"], "[deg] Stonyhurst longitude of the observer")
    h["HGLT_OBS"] = (observer["HGLT_OBS"], "[deg] Stonyhurst latitude of the observer")
    h["OPLF_X"] = (oplf[0], "[m] occulter position, X")
    h["OPLF_Y"] = (oplf[1], "[m] occulter position, Y")
    h["OPLF_Z"] = (oplf[2], "[m] occulter position, Z")
    h["ISD"] = (isd_m, "[m] inter-satellite distance")
    h["QUALITY"] = (0, "quality flag")
    h["SCI_OBJ"] = ("Corona (simulated)", "science objective")
    h["OBS_MODE"] = ("Coronagraphic", "observation mode")
    h["OBS_PRGM"] = ("Simulation", "observation programme")
    h["ORBIT_ID"] = (_orbit_id(t_beg), "orbit number")
    h["VERSION"] = ("v1", "data version (simulated)")
    return h


# ---------------------------------------------------------------------------------------------
# main entry points


def simulate_acquisition(
    filter="Wideband",
    exposures=(0.1, 1.0, 10.0),
    *,
    seed=0,
    shape=DETECTOR_SHAPE,
    calibration=None,
    corona=None,
    date_obs="2025-08-12T18:14:24",
    aps_temp=-15.0,
    roll=10.0,
    jitter=(6.0, 0.02),
    banding=True,
    hot_pixels=True,
    tiles=True,
    noise=True,
    nominal_angles=False,
    column_streamer=False,
    outdir=None,
    overwrite=False,
    acquisition_id=None,
):
    """
    Simulate one ASPIICS acquisition (1–3 exposures of one filter) as L1 frames.

    Parameters
    ----------
    filter : str, optional
        FITS filter name or code (``'Wideband'``, ``'Fe XIV'``, ``'He I'``, ``'Polarizer 0'``,
        ``'Polarizer 60'``, ``'Polarizer 120'``, ``'wb'``, ``'p1'``...).
    exposures : sequence of float, optional
        Requested exposure times (s), 1 to 3 of them; the instrument uses the nearest multiple
        of 0.123 ms (`exposure_time`).
    seed : int, `numpy.random.Generator` or `numpy.random.SeedSequence`, optional
        Seed of the noise, jitter and temperature draws (and of the calibration and corona
        when they are not given). Same seed → identical frames.
    shape : tuple of int, optional
        Detector shape; small shapes keep the 1.1–3 R☉ field (scaled plate scale).
    calibration : `~aspiics.simulate.SyntheticCalibration`, optional
        Instrument truth; default ``make_calibration_set(shape=shape, seed=seed)``, written into
        ``outdir/calibration`` when ``outdir`` is given (so the frames can be calibrated).
    corona : `~aspiics.simulate.CoronaModel`, optional
        Scene; default ``CoronaModel(seed=seed)``.
    date_obs : str or `astropy.time.Time`, optional
        Start of the first exposure (UTC); later exposures follow after ``EXPTIME`` + ~3 s.
    aps_temp : float, optional
        Mean detector temperature (°C); each exposure varies by ~0.05 °C.
    roll : float, optional
        Spacecraft roll, i.e. ``CROTA`` (deg).
    jitter : tuple of float or None, optional
        ``(pointing_rms_arcsec, roll_rms_deg)`` of the per-exposure pointing jitter of Sun
        centre around the IO centre; None for no jitter.
    banding : bool or `BandingModel`, optional
        Inject banding (default model if True).
    hot_pixels : bool, optional
        Add the hot-pixel excess dark current and the unusual-pixel jumps.
    tiles : bool, optional
        Drop over-saturated and under-exposed tiles (set to BLANK).
    noise : bool, optional
        Poisson (electrons) and read noise; False gives noise-free rounded frames.
    nominal_angles : bool, optional
        Polarizers only: use the nominal angle (0, 60, 120°) everywhere instead of the
        calibration angle maps.
    column_streamer : bool, optional
        Add a narrow bright streamer running exactly along the detector column nearest to the
        IO centre (north-ish half), to test that banding correction keeps real structure.
    outdir : str or `pathlib.Path`, optional
        Write each frame as an L1 FITS file there.
    overwrite : bool, optional
        Replace existing files.
    acquisition_id : str, optional
        13 characters: 8 hex (cycle) + 4 hex (sequence) + acquisition digit (1–6); the
        exposure IDs append the exposure digit 1–3. Default derived from the date and the seed.

    Returns
    -------
    `SimulatedAcquisition`

    Raises
    ------
    ValueError
        Bad exposures, acquisition ID, or calibration shape.
    aspiics.exceptions.OutputExistsError
        If a file exists and ``overwrite`` is False.

    Notes
    -----
    Per exposure of length ``t`` (all arrays float32):

    1. ``I`` = scene brightness (MSB): ``B`` (Wideband), ``B + line`` (Fe XIV, He I: the emission
       line of `~aspiics.simulate.CoronaModel.line_brightness`, off with
       ``corona=CoronaModel(lines=False)``) or, for a polarizer, ``½ (B + pB cos 2(ψ − α))`` with
       ``ψ`` the angle map of that polarizer and ``α`` the tangential direction (both in the
       detector frame).
    2. ``DN_lin = I · Aphot · t · flat · vignetting + dark(T) · t + hot + banding``.
    3. Electrons ``DN_lin / gain`` get Poisson noise (the negative part, possible with banding,
       is kept noise-free); back to DN.
    4. Measured = non-linearity table (interpolated, linear extrapolation) + ``bias(T)`` +
       Gaussian read noise (7 DN); rounded; ≥ 16383 → 16383.
    5. Tiles (64², scaled with the shape, minimum 8) with > 5 % saturated pixels or a median
       < 30 DN above bias are set to BLANK.

    Examples
    --------
    >>> from aspiics.simulate import simulate_acquisition
    >>> acq = simulate_acquisition("Wideband", (1.0,), shape=(128, 128), seed=3)
    >>> acq.frames[0].data.dtype
    dtype('int16')
    """
    info = filter_info(filter)
    exposures = [float(e) for e in np.atleast_1d(exposures)]
    if not 1 <= len(exposures) <= 3 or min(exposures) <= 0:
        raise ValueError(f"exposures must be 1 to 3 positive times in seconds, got {exposures}")
    seed_i = _seed_int(seed)
    shape = tuple(int(s) for s in shape)
    if calibration is None:
        cal_dir = None if outdir is None else Path(outdir) / "calibration"
        calibration = make_calibration_set(cal_dir, shape=shape, seed=seed_i, overwrite=overwrite)
    elif tuple(calibration.shape) != shape:
        raise ValueError(
            f"calibration shape {calibration.shape} differs from shape={shape}; "
            "make the calibration with the same shape"
        )
    if corona is None:
        corona = CoronaModel(seed=seed_i)
    if isinstance(banding, BandingModel):
        band_model = banding
    elif banding:
        band_model = BandingModel()
    else:
        band_model = None

    t0 = Time(date_obs, scale="utc")
    if acquisition_id is None:
        acquisition_id = _default_acquisition_id(t0, seed_i)
    acquisition_id = str(acquisition_id).upper()
    try:
        int(acquisition_id[:12], 16)
        ok = len(acquisition_id) == 13 and acquisition_id[-1] in "123456"
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"acquisition_id must be 8 hex (cycle) + 4 hex (sequence) + one digit 1-6 (13 characters), "
            f"got {acquisition_id!r}"
        )

    cd = calibration.calib_data
    fcfg = cd[info.name]
    gain = float(cd["gain"])
    read_noise = float(cd["readout_noise"])
    plate_scale = float(cd["pixscale"])
    aphot = float(fcfg["Aphot"])
    x_io, y_io = float(fcfg["x_IO"]), float(fcfg["y_IO"])
    arrays = calibration.arrays
    vign = vignetting(
        shape,
        x_io,
        y_io,
        plate_scale_arcsec=plate_scale,
        r_io_mm=float(cd.get("R_IO", 1.758)),
        polar_fit=arrays["vign_polar_fit"],
    )
    flat = calibration.flat(info)
    table = calibration.nonlin_table
    meas_max = float(table[1].max())
    observer = _observer(t0)
    rsun = observer["RSUN_ARC"]
    base_corona = corona
    if column_streamer:
        base_corona = corona.replace(column_streamer=True, column_streamer_pa=float(roll))
    column = round(x_io)

    hot_xy = arrays["hotpixels_list"]
    unu_xy = arrays["unusual_list"]

    ss = np.random.SeedSequence([seed_i, 0x5117])
    frames = []
    t_start = t0
    for k, t_req in enumerate(exposures):
        r_jit, r_temp, r_poi, r_read, r_unu, r_form = (np.random.default_rng(s) for s in ss.spawn(6))
        t = exposure_time(t_req)
        temp = float(aps_temp + r_temp.normal(0.0, 0.05))
        if jitter:
            jx, jy = r_jit.normal(0.0, jitter[0], 2) / plate_scale
            droll = r_jit.normal(0.0, jitter[1])
        else:
            jx = jy = droll = 0.0
        sun = (x_io + jx, y_io + jy)
        roll_k = float(roll) + float(droll)
        wcs, crval, pc = _make_wcs(shape, sun, roll_k, plate_scale)
        scene_model = base_corona
        if column_streamer:
            scene_model = base_corona.replace(
                column_streamer_pa=roll_k, column_streamer_offset=(column - sun[0]) * plate_scale
            )
        rc = scene_model.render(wcs, shape, rsun_arcsec=rsun)

        if info.is_polarizer:
            if nominal_angles:
                psi = np.full(shape, info.polarizer_angle.to_value(u.deg), dtype=np.float32)
            else:
                psi = calibration.angle_map(info)
            scene = np.float32(0.5) * (rc.B + rc.pB * np.cos(np.radians(np.float32(2.0) * (psi - rc.alpha))))
        else:
            psi = None
            scene = rc.B
        line = scene_model.line_brightness(rc.r, np.radians(rc.position_angle), info.name)
        if not info.is_polarizer:
            scene = scene + line
        scene = scene.astype(np.float32)
        l2 = scene * vign
        resp = (flat * np.float32(aphot * t)).astype(np.float32)  # DN per MSB
        signal = l2 * resp
        dark_dn = calibration.dark(temp) * np.float32(t)
        bias = calibration.bias(temp)

        extra = np.zeros(shape, dtype=np.float32)
        hot = np.zeros(shape, dtype=bool)
        unusual = np.zeros(shape, dtype=bool)
        if hot_pixels:
            extra[hot_xy[1], hot_xy[0]] += calibration.extras["hot_rate"] * np.float32(t)
            hot[hot_xy[1], hot_xy[0]] = True
            if noise:
                fire = r_unu.random(unu_xy.shape[1]) < calibration.extras["unusual_prob"]
                ux, uy = unu_xy[0][fire], unu_xy[1][fire]
                extra[uy, ux] += r_unu.uniform(20.0, 40.0, ux.size).astype(np.float32)
                unusual[uy, ux] = True

        base_lin = signal + dark_dn + extra
        if band_model is not None:
            # rows' saturated fraction (noise-free, median bias: it only drives a smooth component)
            lin_sat = _inverse_nonlin_scalar(SATURATION_DN - float(np.median(bias[::8, ::8])), table)
            sat0 = base_lin >= np.float32(lin_sat)
            comps = band_model.components(shape, t_start, signal, sat0.mean(axis=1))
            band = comps["static"] + comps["drift"] + comps["gain"] + comps["row"]
        else:
            comps = {}
            band = np.zeros(shape, dtype=np.float32)
        dn_lin = (base_lin + band).astype(np.float32)

        if noise:
            e = dn_lin / np.float32(gain)
            pos = np.maximum(e, np.float32(0.0))
            noisy_e = r_poi.poisson(pos).astype(np.float32) + (e - pos)
            dn_noisy = noisy_e * np.float32(gain)
        else:
            dn_noisy = dn_lin
        measured = apply_nonlinearity(dn_noisy, table)
        raw = measured + bias
        if noise:
            raw += r_read.standard_normal(shape, dtype=np.float32) * np.float32(read_noise)
        raw = np.rint(raw)
        saturated = raw >= SATURATION_DN
        # What a perfect calibration flags: the raw signal above bias beyond the table's range.
        beyond = (raw - bias) > meas_max
        raw = np.clip(raw, -32767, SATURATION_DN)
        if tiles:
            missing = _tile_mask(raw - bias, saturated, _tile_size(shape))
        else:
            missing = np.zeros(shape, dtype=bool)
        data = raw.astype(np.int16)
        data[missing] = BLANK_DN

        var_e = (
            (read_noise / gain) ** 2
            + dark_dn / np.float32(gain)
            + np.maximum((signal + extra + band) / np.float32(gain), 0)
        )
        sigma_l2 = np.sqrt(var_e) / (resp / np.float32(gain))
        dn_expected = (measured if not noise else apply_nonlinearity(dn_lin, table)) + bias

        truth = FrameTruth(
            l2=l2.astype(np.float32),
            scene=scene,
            vignetting=vign,
            B=rc.B,
            pB=rc.pB,
            alpha=rc.alpha,
            psi=psi,
            banding_dn=band.astype(np.float32),
            banding_msb=(band / resp).astype(np.float32),
            banding_components=comps,
            saturated=saturated,
            beyond_nonlin=beyond,
            missing=missing,
            hot=hot,
            unusual=unusual,
            dn_linear=dn_lin,
            dn_expected=dn_expected.astype(np.float32),
            sigma_l2=sigma_l2.astype(np.float32),
            sun_center=(float(sun[0]), float(sun[1])),
            roll_deg=roll_k,
            exptime=t,
            aps_temp=temp,
            line=line,
        )
        exposure_id = f"{acquisition_id}{k + 1}"
        filename = format_filename(info.code, 1, exposure_id, t_start)
        isd_m = 144.348 + float(r_form.normal(0.0, 0.002))
        oplf = (isd_m, float(r_form.normal(0.0, 0.003)), float(r_form.normal(0.0, 0.003)))
        header = _l1_header(
            shape=shape,
            info=info,
            exptime=t,
            aps_temp=temp,
            t_beg=t_start,
            wcs_crval=crval,
            pc=pc,
            roll=roll_k,
            plate_scale=plate_scale,
            observer=observer,
            filename=filename,
            exposure_id=exposure_id,
            isd_m=round(isd_m, 6),
            oplf=tuple(round(v, 6) for v in oplf),
        )
        frames.append(SimulatedFrame(data=data, header=header, path=None, truth=truth))
        t_start = t_start + TimeDelta((t + 3.0 + float(r_form.uniform(0.0, 1.0))) * u.s)

    acq = SimulatedAcquisition(
        frames=frames,
        calibration=calibration,
        corona=base_corona,
        filter=info.name,
        acquisition_id=acquisition_id,
    )
    if outdir is not None:
        _write_frames(acq, Path(outdir), overwrite)
    return acq


def _write_frames(acq, outdir, overwrite):
    outdir.mkdir(parents=True, exist_ok=True)
    targets = [outdir / f.header["FILENAME"] for f in acq.frames]
    if not overwrite:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise OutputExistsError(f"{', '.join(existing)} exist(s) already; pass overwrite=True to replace")
    for frame, path in zip(acq.frames, targets, strict=True):
        write_fits(path, frame.data, frame.header, overwrite=True)
        frame.path = path
        log.info("wrote %s", path)
    acq.paths = targets


def simulate_polarized_set(
    exposures=(1.0,),
    *,
    seed=0,
    shape=DETECTOR_SHAPE,
    calibration=None,
    corona=None,
    date_obs="2025-08-12T18:14:24",
    acquisition_id=None,
    outdir=None,
    overwrite=False,
    **kwargs,
):
    """
    Simulate the three polarizer acquisitions of one cycle (Polarizer 0, 60, 120).

    Parameters
    ----------
    exposures : sequence of float, optional
        Exposure times of each acquisition (s).
    seed : int, optional
        Master seed; the three acquisitions get independent noise streams derived from it.
    shape : tuple of int, optional
        Detector shape.
    calibration, corona : optional
        Shared by the three acquisitions (made from ``seed`` if None).
    date_obs : str or `astropy.time.Time`, optional
        Start of the first acquisition; the next ones follow ~5 s after the previous ends.
    acquisition_id : str, optional
        ID of the first acquisition (13 characters); the others share its cycle and sequence and
        take the next acquisition digits. Default derived from the date and seed, digits 1, 2, 3.
    outdir, overwrite : optional
        As `simulate_acquisition`.
    **kwargs
        Passed to `simulate_acquisition` (``roll``, ``jitter``, ``banding``, ``noise``,
        ``nominal_angles``, ...).

    Returns
    -------
    list of `SimulatedAcquisition`
        Polarizer 0, Polarizer 60, Polarizer 120, in this order.
    """
    seed_i = _seed_int(seed)
    shape = tuple(int(s) for s in shape)
    if calibration is None:
        cal_dir = None if outdir is None else Path(outdir) / "calibration"
        calibration = make_calibration_set(cal_dir, shape=shape, seed=seed_i, overwrite=overwrite)
    if corona is None:
        corona = CoronaModel(seed=seed_i)
    t = Time(date_obs, scale="utc")
    base = acquisition_id or _default_acquisition_id(t, seed_i, 1)
    base = str(base).upper()
    digit0 = int(base[-1])
    seeds = np.random.SeedSequence([seed_i, 0x9014]).spawn(3)
    out = []
    for k, name in enumerate(("Polarizer 0", "Polarizer 60", "Polarizer 120")):
        acq = simulate_acquisition(
            name,
            exposures,
            seed=seeds[k],
            shape=shape,
            calibration=calibration,
            corona=corona,
            date_obs=t,
            acquisition_id=f"{base[:12]}{(digit0 - 1 + k) % 6 + 1}",
            outdir=outdir,
            overwrite=overwrite,
            **kwargs,
        )
        out.append(acq)
        last = acq.frames[-1]
        t = Time(last.header["DATE-END"], scale="utc") + TimeDelta(5.0 * u.s)
    return out
