"""
A synthetic ASPIICS calibration release (ROB release-1.0 layout), made from a seed.

The arrays are the *truth* of the simulated instrument: `aspiics.simulate.simulate_acquisition`
builds its frames from them, so an L2 calibration with this release is exact up to noise.
"""

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from aspiics.constants import DETECTOR_SHAPE, FILTERS, default_config, filter_info
from aspiics.exceptions import OutputExistsError
from aspiics.io import atomic_output, write_fits

__all__ = ["SyntheticCalibration", "make_calibration_set", "scaled_geometry"]

log = logging.getLogger(__name__)

#: Upper end of the measured row of the synthetic non-linearity table (DN above bias).
NONLIN_MEASURED_MAX = 13190.0

_ARRAY_STEMS = (
    "bias_A",
    "bias_B",
    "dark_A2",
    "dark_B2",
    "dark_C2",
    "detector_nonlin",
    "flatfield_WB",
    "flatfield_Fe",
    "flatfield_He",
    "flatfield_P1",
    "flatfield_P2",
    "flatfield_P3",
    "hotpixels_list",
    "vign_polar_fit",
    "aspiics_p1_angle",
    "aspiics_p2_angle",
    "aspiics_p3_angle",
    "unusual_list",
)

# Mean polarizer orientations on the detector (deg, from +x towards +y), keyed by file code.
_ANGLE_MEANS = {"p1": 64.65, "p2": 5.26, "p3": 125.1}


@dataclass(frozen=True)
class SyntheticCalibration:
    """
    A synthetic calibration release: constants, arrays and (optionally) the files on disk.

    Attributes
    ----------
    path : `pathlib.Path` or None
        The release folder ``calibration_data_<valid_from>_<valid_to>/`` (holding the FITS files
        and ``l2_config.json``), or None if nothing was written.
    config : dict
        The constants in the reference ``l2_config.json`` format (``{"calib_data": {...}}``),
        with paths relative to the release folder.
    arrays : dict
        The calibration arrays keyed by file stem (``"bias_A"``, ``"flatfield_WB"``, ...):
        float32 images of ``shape``, the ``(2, 1000)`` non-linearity table, the ``(2, N)``
        int32 pixel lists and the ``(2, 180)`` vignetting polar fit.
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    seed : int
        Seed the release was made from.
    extras : dict
        Truth that a calibration release does not contain but the forward model needs:
        ``"hot_rate"`` (DN/s excess dark rate of each listed hot pixel) and
        ``"unusual_prob"`` (probability per exposure that an unusual pixel jumps).
    """

    path: Path | None
    config: dict
    arrays: dict
    shape: tuple
    seed: int
    extras: dict = field(default_factory=dict)

    @property
    def calib_data(self):
        """The ``calib_data`` object of `config`."""
        return self.config["calib_data"]

    def filter_config(self, filter):
        """Per-filter constants (``Aphot``, ``x_IO``, ``y_IO``, ...) of a filter name or code."""
        return self.calib_data[filter_info(filter).name]

    def bias(self, aps_temp):
        """Bias frame (DN) at detector temperature ``aps_temp`` (°C): ``A + B T``."""
        return self.arrays["bias_A"] + np.float32(aps_temp) * self.arrays["bias_B"]

    def dark(self, aps_temp):
        """Dark-current rate (DN/s) at ``aps_temp`` (°C): ``A2 + B2 T + C2 T**2``."""
        t = np.float32(aps_temp)
        return self.arrays["dark_A2"] + t * self.arrays["dark_B2"] + t * t * self.arrays["dark_C2"]

    def flat(self, filter):
        """Flat field of a filter (``flatfield_<suffix>``)."""
        return self.arrays[f"flatfield_{filter_info(filter).flat_suffix}"]

    def angle_map(self, filter):
        """Per-pixel polarizer orientation (deg, detector frame) of a polarizer filter."""
        info = filter_info(filter)
        if not info.is_polarizer:
            raise ValueError(f"{info.name!r} is not a polarizer: it has no angle map")
        return self.arrays[f"aspiics_{info.code}_angle"]

    @property
    def nonlin_table(self):
        """The ``(2, 1000)`` non-linearity table: row 0 linear, row 1 measured (DN above bias)."""
        return self.arrays["detector_nonlin"]

    @property
    def hot_pixels(self):
        """``(2, N)`` 0-based (x, y) of the listed hot pixels."""
        return self.arrays["hotpixels_list"]


def scaled_geometry(shape, config=None):
    """
    Plate scale and IO centres of the release-1.0 geometry scaled to a smaller detector array.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``; ``(2048, 2048)`` returns the release-1.0 values unchanged.
    config : dict, optional
        A configuration in the ``l2_config.json`` format; default `aspiics.constants.default_config`.

    Returns
    -------
    dict
        A deep copy of ``config`` with ``pixscale`` multiplied by ``2048 / nx`` and every filter's
        ``x_IO``, ``y_IO`` mapped by the pixel-centre rescaling ``(x + 0.5) nx / 2048 - 0.5``, so
        that the field of view (1.1–3 R☉) is the same.
    """
    cfg = copy.deepcopy(config if config is not None else default_config())
    ny, nx = (int(s) for s in shape)
    fy, fx = ny / DETECTOR_SHAPE[0], nx / DETECTOR_SHAPE[1]
    cd = cfg["calib_data"]
    if (ny, nx) != tuple(DETECTOR_SHAPE):
        cd["pixscale"] = float(cd["pixscale"]) / fx
        for name in FILTERS:
            if name in cd:
                cd[name]["x_IO"] = round((float(cd[name]["x_IO"]) + 0.5) * fx - 0.5, 4)
                cd[name]["y_IO"] = round((float(cd[name]["y_IO"]) + 0.5) * fy - 0.5, 4)
    return cfg


# ---------------------------------------------------------------------------------------------
# smooth random fields (separable cosine sums: fast and seedable)


def _smooth_field(rng, shape, n_terms=6, max_freq=2.5):
    """Zero-mean smooth random field with unit maximum absolute value (float32)."""
    ny, nx = shape
    x = np.linspace(0.0, 1.0, nx)
    y = np.linspace(0.0, 1.0, ny)
    f = rng.uniform(0.0, max_freq, (2, n_terms))
    ph = rng.uniform(0.0, 2 * np.pi, (2, n_terms))
    amp = rng.normal(size=n_terms)
    cy = np.cos(2 * np.pi * f[1] * y[:, None] + ph[1]) * amp  # (ny, n_terms)
    cx = np.cos(2 * np.pi * f[0] * x[:, None] + ph[0])  # (nx, n_terms)
    out = (cy.astype(np.float32) @ cx.T.astype(np.float32)).astype(np.float32)
    out -= out.mean(dtype=np.float64)
    peak = np.abs(out).max()
    if peak > 0:
        out *= np.float32(1.0 / peak)
    return out


def _normal(rng, sigma, shape):
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _dust_donuts(rng, shape, n_per_4mpix=40, depth=(0.01, 0.04)):
    """Multiplicative dust-donut pattern (1 - ring shadows), float32."""
    ny, nx = shape
    scale = nx / DETECTOR_SHAPE[1]
    out = np.ones(shape, dtype=np.float32)
    n = max(1, round(n_per_4mpix * ny * nx / (DETECTOR_SHAPE[0] * DETECTOR_SHAPE[1])))
    for _ in range(n):
        radius = rng.uniform(8.0, 30.0) * scale
        width = max(0.8, radius * rng.uniform(0.2, 0.35))
        d = rng.uniform(*depth)
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        half = int(np.ceil(radius + 4 * width)) + 1
        x0, x1 = max(0, int(cx) - half), min(nx, int(cx) + half + 1)
        y0, y1 = max(0, int(cy) - half), min(ny, int(cy) + half + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        rr = np.hypot(xx - cx, yy - cy)
        # a ring shadow with a shallower core: the defocused image of a dust grain
        ring = np.exp(-0.5 * ((rr - radius) / width) ** 2) + 0.4 * (rr < radius)
        out[y0:y1, x0:x1] *= (1.0 - d * np.clip(ring, 0.0, 1.0)).astype(np.float32)
    return out


def _nonlin_table(rng):
    """Synthetic (2, 1000) table: smooth, monotonic, mildly non-linear (±2 %)."""
    c0 = -0.012 + rng.normal(0, 0.001)
    c1 = 0.050 + rng.normal(0, 0.003)
    c3 = -0.052 + rng.normal(0, 0.003)
    wig = 0.006 + rng.uniform(0, 0.003)
    ph = rng.uniform(0, 2 * np.pi)

    def dev(s):
        return c0 + c1 * s + c3 * s**3 + wig * np.sin(3.0 * np.pi * s + ph) * s

    offset = 0.9
    x_max = (NONLIN_MEASURED_MAX - offset) / (1.0 + dev(1.0))
    lin = np.linspace(0.0, x_max, 1000)
    meas = lin * (1.0 + dev(lin / x_max)) + offset
    if np.any(np.diff(meas) <= 0):  # pragma: no cover - guarded by the small coefficients
        raise RuntimeError("synthetic non-linearity table is not monotonic")
    return np.vstack([lin, meas]).astype(np.float32)


def _pixel_list(rng, shape, fraction):
    ny, nx = shape
    n = max(1, round(fraction * ny * nx))
    flat_idx = rng.choice(ny * nx, size=n, replace=False)
    flat_idx.sort()
    y, x = np.divmod(flat_idx, nx)
    return np.vstack([x, y]).astype(np.int32)


def _build_arrays(shape, seed):
    ss = np.random.SeedSequence([int(seed), 0xCA11B])
    rngs = [np.random.default_rng(s) for s in ss.spawn(8)]
    r_bias, r_dark, r_flat, r_nl, r_hot, r_vig, r_ang, r_unu = rngs
    _ny, nx = shape
    arrays = {}

    # bias = A + B T (DN): ~200 DN, column structure, weak fixed-pattern noise
    col = r_bias.normal(0.0, 3.0, nx).astype(np.float32)
    a = 200.0 + 6.0 * _smooth_field(r_bias, shape) + col[np.newaxis, :]
    a += _normal(r_bias, 0.8, shape)
    arrays["bias_A"] = a.astype(np.float32)
    arrays["bias_B"] = (0.3 + 0.02 * _smooth_field(r_bias, shape)).astype(np.float32)

    # dark = A2 + B2 T + C2 T^2 (DN/s); D(-15 °C) ~ 2.5 DN/s, doubling every ~7-8 °C
    d15 = 2.5 * (1.0 + 0.2 * _smooth_field(r_dark, shape))
    d15 *= np.exp(_normal(r_dark, 0.08, shape))
    b, c = 0.09, 0.003
    arrays["dark_A2"] = (d15 * (1.0 + 15.0 * b + 225.0 * c)).astype(np.float32)
    arrays["dark_B2"] = (d15 * (b + 30.0 * c)).astype(np.float32)
    arrays["dark_C2"] = (d15 * c).astype(np.float32)

    arrays["detector_nonlin"] = _nonlin_table(r_nl)

    # flats: detector part (column gain, even/odd rows, window dust) x filter part
    g_col = np.clip(r_flat.normal(0.0, 0.0025, nx), -0.005, 0.005)
    d_eo = r_flat.normal(0.0, 0.0008, nx)
    colgain = np.empty(shape, dtype=np.float32)
    colgain[0::2, :] = 1.0 + g_col + d_eo / 2
    colgain[1::2, :] = 1.0 + g_col - d_eo / 2
    prnu = np.float32(1.0) + _normal(r_flat, 0.003, shape)
    detector = colgain * prnu * (1.0 + 0.015 * _smooth_field(r_flat, shape)) * _dust_donuts(r_flat, shape, 25)
    for suffix in ("WB", "Fe", "He", "P1", "P2", "P3"):
        f = detector * (1.0 + 0.02 * _smooth_field(r_flat, shape)) * _dust_donuts(r_flat, shape, 15)
        arrays[f"flatfield_{suffix}"] = (f / np.median(f)).astype(np.float32)

    arrays["hotpixels_list"] = _pixel_list(r_hot, shape, 2e-4)

    ang = np.arange(0.0, 360.0, 2.0)
    fac = np.zeros_like(ang)
    for k in (1, 2, 3):
        fac += r_vig.normal(0.0, 1.0) * np.cos(np.radians(k * ang) + r_vig.uniform(0, 2 * np.pi)) / k
    fac = 1.0 + 0.003 * fac / np.abs(fac).max()
    arrays["vign_polar_fit"] = np.vstack([ang, fac]).astype(np.float32)

    for code, mean in _ANGLE_MEANS.items():
        arrays[f"aspiics_{code}_angle"] = (mean + 1.0 * _smooth_field(r_ang, shape, n_terms=4)).astype(
            np.float32
        )

    arrays["unusual_list"] = _pixel_list(r_unu, shape, 5e-3)

    n_hot = arrays["hotpixels_list"].shape[1]
    extras = {
        "hot_rate": np.exp(r_hot.uniform(np.log(30.0), np.log(3000.0), n_hot)).astype(np.float32),
        "unusual_prob": 0.1,
    }
    return arrays, extras


def _release_config(shape, valid_from):
    cfg = scaled_geometry(shape)
    cd = cfg["calib_data"]
    cd["VERS_CAL"] = f"sim-{valid_from}"
    for key in ("bias", "dark_current", "flat", "vign"):
        cd[key] = "./"
    cd["nonlin"] = "detector_nonlin.fits"
    cd["hotpixel"] = "hotpixels_list.fits"
    # A synthetic release is self-consistent: CONV_PHO = Aphot / MSB for every filter (release 1.0
    # has a factor-10 fault for Polarizer 0 and 60, which the calibration loader warns about).
    for name in FILTERS:
        cd[name]["CONV_PHO"] = cd[name]["Aphot"] / cd[name]["MSB"]
    return cfg


def _header_for(stem, data):
    hdr = fits.Header()
    hdr["ORIGIN"] = ("aspiics.simulate", "synthetic calibration, not flight data")
    if stem == "detector_nonlin":
        hdr["UNITS"] = "DN"
        hdr["INFO1"] = "Synthetic detector non-linearity: row 0 linear, row 1 measured"
    elif stem in ("hotpixels_list", "unusual_list"):
        hdr["TYPE"] = "X-Y COORD"
        hdr["COMMENT"] = "[*,0] - x, [*,1] - y, 0-based"
    elif stem == "vign_polar_fit":
        hdr["TYPE"] = "Polar variation of IO radius"
    elif stem.startswith("aspiics_p"):
        hdr["BUNIT"] = "deg"
    elif stem.startswith("bias"):
        hdr["BUNIT"] = "DN" if stem == "bias_A" else "DN/degC"
    elif stem.startswith("dark"):
        hdr["BUNIT"] = "DN/s"
    return hdr


def make_calibration_set(
    outdir=None,
    *,
    shape=DETECTOR_SHAPE,
    seed=0,
    valid_from="20250101000000",
    valid_to="20991231235959",
    overwrite=False,
):
    """
    Make (and optionally write) a synthetic calibration release.

    Parameters
    ----------
    outdir : str or `pathlib.Path`, optional
        If given, the release is written to ``outdir/calibration_data_<valid_from>_<valid_to>/``:
        one primary-HDU FITS file per array (``<stem>.fits``) and ``l2_config.json``.
    shape : tuple of int, optional
        Detector shape ``(ny, nx)``. For shapes other than 2048² the plate scale and the IO
        centres of the configuration are scaled (see `scaled_geometry`).
    seed : int, optional
        Seed of the instrument; the same seed gives identical arrays.
    valid_from, valid_to : str, optional
        Validity interval ``YYYYMMDDhhmmss`` written into the folder name.
    overwrite : bool, optional
        Replace existing files instead of raising.

    Returns
    -------
    `SyntheticCalibration`

    Raises
    ------
    aspiics.exceptions.OutputExistsError
        If a file of the release exists and ``overwrite`` is False (nothing is written then).

    Notes
    -----
    Content (DN above bias unless stated):

    - ``bias_A`` ≈ 200 DN with a ±3 DN column pattern and a smooth ±6 DN gradient;
      ``bias_B`` ≈ 0.3 DN/°C; bias = A + B·APS_TEMP.
    - ``dark_A2/B2/C2``: dark = A2 + B2 T + C2 T² ≈ 2.5 DN/s at −15 °C, ×~2 per 8 °C.
    - ``flatfield_<WB|Fe|He|P1|P2|P3>``: median 1; ±0.5 % column gain (even and odd rows
      differ by ~0.1 %), 0.3 % pixel response non-uniformity, smooth ±2–3 % response and dust
      donuts; no vignetting.
    - ``detector_nonlin``: (2, 1000) float32, row 0 linear (uniform grid), row 1 measured,
      monotonic, up to ``NONLIN_MEASURED_MAX`` ≈ 13190 DN, deviations of ±2 %.
    - ``hotpixels_list`` (2 × 0.02 % of the pixels) and ``unusual_list`` (0.5 %), int32,
      rows x and y, 0-based.
    - ``vign_polar_fit``: angles 0..358° and an IO-radius factor 1 ± 0.3 %.
    - ``aspiics_p<1|2|3>_angle``: polarizer orientation (deg, detector frame, from +x towards
      +y), smooth ±1° around 64.65° (p1 = Polarizer 60), 5.26° (p2 = Polarizer 0) and 125.1°
      (p3 = Polarizer 120).

    Examples
    --------
    >>> from aspiics.simulate import make_calibration_set
    >>> cal = make_calibration_set(shape=(64, 64), seed=1)
    >>> cal.arrays["detector_nonlin"].shape
    (2, 1000)
    """
    shape = tuple(int(s) for s in shape)
    arrays, extras = _build_arrays(shape, seed)
    config = _release_config(shape, valid_from)
    path = None
    if outdir is not None:
        path = Path(outdir) / f"calibration_data_{valid_from}_{valid_to}"
        path.mkdir(parents=True, exist_ok=True)
        targets = [path / f"{stem}.fits" for stem in _ARRAY_STEMS] + [path / "l2_config.json"]
        if not overwrite:
            existing = [str(p) for p in targets if p.exists()]
            if existing:
                raise OutputExistsError(
                    f"calibration files exist already in {path}: {', '.join(existing[:3])}"
                    f"{' ...' if len(existing) > 3 else ''}; pass overwrite=True to replace them"
                )
        for stem in _ARRAY_STEMS:
            write_fits(path / f"{stem}.fits", arrays[stem], _header_for(stem, arrays[stem]), overwrite=True)
        with atomic_output(path / "l2_config.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        log.info("wrote synthetic calibration release to %s", path)
    return SyntheticCalibration(
        path=path, config=config, arrays=arrays, shape=shape, seed=int(seed), extras=extras
    )
