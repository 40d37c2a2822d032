"""Tests of aspiics.banding on synthetic coronagraph frames with known injected banding."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from aspiics.banding import (
    BandingTemplate,
    correct_banding,
    correct_banding_exposures,
    estimate_banding_template,
    exposure_banding,
    log_polar_gain,
    template_from_exposure_sets,
)
from aspiics.exceptions import InputFileError, OutputExistsError, ProcessingError

SIGMA = 1.0  # pixel noise (MSB units of the synthetic frames)


@dataclasses.dataclass
class Frame:
    data: np.ndarray  # observed: truth + banding + noise; NaN missing, +Inf saturated
    truth: np.ndarray  # noise-free, banding-free scene (NaN/Inf where data is)
    banding: np.ndarray  # injected banding (0 where not finite)
    col_offset: np.ndarray  # (2, nx)
    col_gain: np.ndarray  # (2, nx)
    row_offset: np.ndarray  # (ny,)
    streamer_col: int
    streamer_rows: slice
    sigma: float


def coronal_scene(n=512, *, seed=0, column_streamer=True, streamer_contrast=1.0, shift=(0.0, 0.0)):
    """
    Radial power law with streamers and fine rays; occulter disc, NaN tiles, saturated lobe.

    ``shift`` (dy, dx) moves the Sun (scene, occulter, saturated lobe) on the detector; the lost
    tiles stay where they are (they belong to the detector readout).
    """
    rng = np.random.default_rng(seed)
    cy, cx = n / 2 + 3.3 + shift[0], n / 2 - 4.6 + shift[1]
    r0 = 0.18 * n  # occulter radius: ASPIICS IO ~375 px of 2048
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    r = np.hypot(y - cy, x - cx)
    th = np.arctan2(y - cy, x - cx)
    rr = np.maximum(r, r0) / r0
    # the angular structure depends on the position angle only: tabulate it on a fine grid
    tg = np.linspace(-np.pi, np.pi, 1 << 18)
    ang1 = np.ones_like(tg)
    for t0, w, amp in ((0.3, 0.25, 2.0), (2.6, 0.18, 1.5), (-1.2, 0.35, 1.0), (-2.4, 0.12, 2.5)):
        ang1 += amp * np.exp(-0.5 * (np.angle(np.exp(1j * (tg - t0))) / w) ** 2)
    # streamer edges: a sharp-edged fan
    ang1 += 0.8 * (np.abs(np.angle(np.exp(1j * (tg - 1.0)))) < 0.08)
    # fine radial rays (~1-3 px wide at mid radius), including near-polar (nearly column-aligned) ones
    thetas = rng.uniform(-np.pi, np.pi, 60)
    thetas[:6] = np.pi / 2 + rng.uniform(-0.15, 0.15, 6)
    thetas[6:12] = -np.pi / 2 + rng.uniform(-0.15, 0.15, 6)
    for t0 in thetas:
        w = rng.uniform(1.0, 3.0) / (0.3 * n)
        ang1 += rng.uniform(0.1, 0.5) * np.exp(-0.5 * (np.angle(np.exp(1j * (tg - t0))) / w) ** 2)
    ang = np.interp(th, tg, ang1)
    truth = 200.0 * SIGMA * rr**-3.0 * ang
    # bright narrow streamer running exactly along one column, above the occulter
    scol = round(cx) + n // 16
    srows = slice(int(cy + 1.1 * r0), int(cy + 2.3 * r0))
    if column_streamer:
        cols = slice(scol - 5, scol + 6)
        prof = np.exp(-0.5 * ((x[srows, cols] - scol) / 0.7) ** 2)
        truth[srows, cols] += streamer_contrast * truth[srows, cols] * prof
    truth = truth.astype(np.float32)
    truth[r < r0] = np.nan
    for ty, tx in ((1, 6), (6, 1), (5, 6)):
        t = n // 8
        truth[ty * t : (ty + 1) * t, tx * t : (tx + 1) * t] = np.nan
    sat = (r >= r0) & (r < 1.35 * r0) & (np.abs((th - 0.3 + np.pi) % (2 * np.pi) - np.pi) < 0.4)
    truth[sat] = np.inf
    return truth, scol, srows


def make_frame(
    n=512,
    *,
    seed=0,
    banding=True,
    column_streamer=True,
    sigma=SIGMA,
    amp=0.6,
    gain_amp=3e-3,
    row_amp=1.5,
    exptime_scale=1.0,
    pattern_seed=1234,
):
    """Synthetic L2 frame; the static column pattern depends only on ``pattern_seed``."""
    truth, scol, srows = coronal_scene(n, seed=seed, column_streamer=column_streamer)
    rng = np.random.default_rng(seed + 1)
    prng = np.random.default_rng(pattern_seed)
    ny, nx = truth.shape
    a = prng.normal(0, amp * sigma, (2, nx)) * exptime_scale
    g = prng.normal(0, gain_amp, (2, nx))
    sat_rows = np.isposinf(truth).sum(axis=1).astype(float)
    rowp = ndimage.gaussian_filter1d(sat_rows / max(sat_rows.max(), 1), 12) * row_amp * sigma
    rowp = rowp + row_amp * sigma * 0.3 * np.sin(np.arange(ny) / ny * 2 * np.pi * 3)
    if not banding:
        a[:], g[:], rowp[:] = 0, 0, 0
    finite = np.isfinite(truth)
    t0 = np.where(finite, truth, 0)
    band = (a[np.arange(ny) % 2] + g[np.arange(ny) % 2] * t0 + rowp[:, None]).astype(np.float32)
    band[~finite] = 0
    data = (truth + band + rng.normal(0, sigma, truth.shape)).astype(np.float32)
    data[~finite] = truth[~finite]
    return Frame(data, truth, band, a, g, rowp, scol, srows, sigma)


def sub(a, b):
    """a - b with NaN where either is not finite (no warnings for inf - inf)."""
    ok = np.isfinite(a) & np.isfinite(b)
    return np.where(ok, a, 0) - np.where(ok, b, 0) + np.where(ok, 0, np.nan)


def column_medians(img, valid):
    """Per-parity, per-column median over valid pixels -> (2, nx), and counts."""
    out = np.full((2, img.shape[1]), np.nan)
    cnt = np.zeros((2, img.shape[1]), int)
    for p in (0, 1):
        v = np.where(valid[p::2], img[p::2], np.nan)
        cnt[p] = np.isfinite(v).sum(axis=0)
        with np.errstate(all="ignore"):
            out[p] = np.nanmedian(v, axis=0) if cnt[p].all() else _nanmed_safe(v)
    return out, cnt


def _nanmed_safe(v):
    res = np.full(v.shape[1], np.nan)
    ok = np.isfinite(v).any(axis=0)
    res[ok] = np.nanmedian(v[:, ok], axis=0)
    return res


def banding_slope(frame, corrected):
    valid = np.isfinite(frame.truth)
    left, _ = column_medians(sub(corrected, frame.truth), valid)
    inj, _ = column_medians(frame.banding, valid)
    ok = np.isfinite(left) & np.isfinite(inj)
    x, y = inj[ok] - inj[ok].mean(), left[ok] - left[ok].mean()
    return float((x * y).sum() / (x * x).sum())


def highpass(img):
    f = np.where(np.isfinite(img), img, 0)
    return f - ndimage.median_filter(f, 9)


def structure_corr(frame, pattern):
    valid = np.isfinite(frame.truth)
    hp = highpass(frame.truth)[valid]
    pt = (pattern - frame.banding)[valid]  # what was removed beyond the injected banding
    return float(np.corrcoef(hp, pt)[0, 1])


def streamer_contrast(img, frame):
    c, rows = frame.streamer_col, frame.streamer_rows
    on = img[rows, c]
    off = 0.5 * (img[rows, c - 6 : c - 3].mean(axis=1) + img[rows, c + 4 : c + 7].mean(axis=1))
    return float(np.mean(on - off))


# ----------------------------------------------------------------------------------------------
# Tests. The 512x512 scene has the ASPIICS geometry scaled by 1/4, so block=4 here corresponds to
# the default block=8 on a 2048x2048 frame.
# ----------------------------------------------------------------------------------------------
P512 = {"block": 4}


@pytest.fixture(scope="module")
def banded():
    f = make_frame(512, seed=3)
    return f, correct_banding(f.data, variance=np.ones_like(f.data), **P512)


@pytest.fixture(scope="module")
def null():
    f = make_frame(512, seed=3, banding=False)
    return f, correct_banding(f.data, variance=np.ones_like(f.data), **P512)


def test_result_types_and_invalid_pixels(banded):
    f, res = banded
    assert res.corrected.dtype == np.float32
    assert res.pattern.dtype == np.float32
    assert res.corrected.shape == f.data.shape
    assert np.array_equal(np.isnan(res.corrected), np.isnan(f.data))
    assert np.array_equal(np.isposinf(res.corrected), np.isposinf(f.data))
    assert np.all(np.isfinite(res.pattern))
    assert np.all(res.pattern_variance >= 0)
    assert res.params["block"] == 4
    assert "block=4" in res.history()


def test_banding_reduced(banded):
    f, res = banded
    valid = np.isfinite(f.truth)
    before, _ = column_medians(sub(f.data, f.truth), valid)
    after, _ = column_medians(sub(res.corrected, f.truth), valid)
    assert np.sqrt(np.nanmean(after**2)) < 0.6 * np.sqrt(np.nanmean(before**2))
    # the high-frequency column pattern is removed: adjacent-column differences of the residual
    left, _ = column_medians(sub(res.corrected, f.truth), valid)
    inj, _ = column_medians(f.banding, valid)
    ok = np.isfinite(left).all(axis=0)
    assert np.std(np.diff(left[:, ok])) < 0.35 * np.std(np.diff(inj[:, ok]))


def test_null_per_column_noise(null):
    f, res = null
    valid = np.isfinite(f.truth)
    cm, cnt = column_medians(res.pattern, valid)
    ok = cnt > 0
    ratio = np.sqrt(np.mean((cm[ok] / (1.25 * SIGMA / np.sqrt(cnt[ok]))) ** 2))
    assert ratio <= 2.0


def _unbiased_floor(f):
    """RMS (in sigma) of the removed component of an ideal unbiased estimator on a banding-free frame.

    Per pixel, the removed component is column offset + row offset; the best (weighted-mean) estimates
    have variances sigma^2 / n_column (valid rows of that parity) and sigma^2 / n_row (valid columns).
    """
    valid = np.isfinite(f.truth)
    ny = valid.shape[0]
    ncol = np.stack([valid[0::2].sum(axis=0), valid[1::2].sum(axis=0)])[np.arange(ny) % 2]
    nrow = valid.sum(axis=1)[:, None]
    var = 1.0 / np.maximum(ncol, 1) + 1.0 / np.maximum(nrow, 1)
    return float(np.sqrt(np.mean(np.broadcast_to(var, valid.shape)[valid]))) * f.sigma


def test_null_rms_floor_at_512(null):
    """The null RMS target (0.1 sigma) is tested at the real 2048x2048 size (test_null_2048).

    At 512x512 even an ideal unbiased column + row estimator removes 0.083 sigma RMS from a
    banding-free frame (~200 valid rows per column and parity, ~400 valid columns per row), which
    leaves 0.017 sigma for everything else (the smooth-image noise alone adds ~10 % to the column
    term); ours removes 0.13 sigma there. At 2048x2048 the floor is 0.04 sigma and we remove 0.06.
    """
    f, res = null
    floor = _unbiased_floor(f)
    assert 0.08 <= floor <= 0.09
    valid = np.isfinite(f.truth)
    assert np.sqrt(np.mean(res.pattern[valid] ** 2)) <= 1.6 * floor  # measured 0.13 = 1.5 x floor


@pytest.fixture(scope="module")
def null2048():
    f = make_frame(2048, seed=3, banding=False)
    return f, correct_banding(f.data, variance=np.ones_like(f.data))


@pytest.fixture(scope="module")
def banded2048():
    f = make_frame(2048, seed=3)
    return f, correct_banding(f.data, variance=np.ones_like(f.data), polar=True)


@pytest.mark.xfail(
    reason="with the defaults (stage 1 only) the slope is 0.20 at 512x512 (block=4) and 0.09 at 2048x2048 "
    "(block=8): the high-pass of width `block` leaves the part of a white column pattern that is smooth "
    "over `block` columns. The polar stage 2 meets it (test_banding_slope_target_polar: 0.002 at 2048) "
    "but is off by default: on the aspiics.simulate 2048 scene (not separable in r and angle) it leaks "
    "coronal structure into the column estimate (8x the banding RMS on a noise-free, banding-free frame). "
    "With the exposures of an acquisition the target is met (test_exposure_set_meets_slope_target), and "
    "with a template from exposure sets on simulated frames of every exposure time "
    "(test_template_from_simulated_sets_meets_slope_target).",
    strict=True,
)
def test_banding_slope_target(banded):
    f, res = banded
    assert banding_slope(f, res.corrected) <= 0.02


def test_banding_slope_target_polar(banded2048):
    """Slope target (≤ 0.02) at the detector size with the polar stage 2 (``polar=True``)."""
    f, res = banded2048
    assert res.params["polar"] is True
    assert banding_slope(f, res.corrected) <= 0.02  # measured 0.002 (stage 1 alone: 0.090)
    assert abs(structure_corr(f, res.pattern)) <= 0.05  # measured 0.000
    assert streamer_contrast(res.corrected, f) >= 0.98 * streamer_contrast(f.truth, f)  # measured 0.988


@pytest.mark.parametrize("polar", [False, True])
def test_null_2048(null2048, polar):
    """Null test at the detector size (block=8), stage 1 alone (default) and with the polar stage."""
    f, res = null2048
    if polar:
        res = correct_banding(f.data, variance=np.ones_like(f.data), polar=True)
    assert res.params["polar"] is polar
    valid = np.isfinite(f.truth)
    rms = np.sqrt(np.mean(res.pattern[valid] ** 2))
    assert _unbiased_floor(f) < 0.05 * SIGMA  # measured 0.041
    assert rms <= 0.1 * SIGMA  # measured 0.049 (polar: 0.053)
    cm, cnt = column_medians(res.pattern, valid)
    ok = cnt > 0
    ratio = np.sqrt(np.mean((cm[ok] / (1.25 * SIGMA / np.sqrt(cnt[ok]))) ** 2))
    assert ratio <= 2.0  # measured 1.13 (polar: 1.24)
    assert abs(structure_corr(f, res.pattern)) <= 0.05
    assert streamer_contrast(res.corrected, f) >= 0.98 * streamer_contrast(f.truth, f)


@pytest.mark.parametrize("which", ["banded", "null"])
def test_structure_not_removed(which, request):
    f, res = request.getfixturevalue(which)
    assert abs(structure_corr(f, res.pattern)) <= 0.05
    assert streamer_contrast(res.corrected, f) >= 0.98 * streamer_contrast(f.truth, f)


def test_polar_stage_at_512(banded, caplog):
    """The polar stage (off by default; "auto" = on from 1024 px) also works on the 512x512 scene."""
    f, res1 = banded
    assert res1.params["polar"] is False
    n = f.data.shape[0]
    res = correct_banding(f.data, variance=np.ones_like(f.data), polar=True, **P512)
    given = correct_banding(
        f.data, variance=np.ones_like(f.data), polar=True, center=(n / 2 - 4.6, n / 2 + 3.3), **P512
    )
    # the centre estimated from the occulter (NaN disc) is the true one to a fraction of a pixel
    cx, cy = res.params["center"]
    assert abs(cx - (n / 2 - 4.6)) < 1
    assert abs(cy - (n / 2 + 3.3)) < 1
    d = res.column_offset - given.column_offset
    assert np.sqrt(np.mean(d**2)) < 0.02  # measured 0.010
    assert banding_slope(f, res.corrected) < 0.5 * banding_slope(f, res1.corrected)  # 0.087 vs 0.20
    assert abs(structure_corr(f, res.pattern)) <= 0.05
    assert streamer_contrast(res.corrected, f) >= 0.98 * streamer_contrast(f.truth, f)
    # no occulter and no centre: the stage is skipped, with a log message
    with caplog.at_level("INFO", logger="aspiics.banding"):
        plain = correct_banding(np.nan_to_num(f.data, nan=0.0, posinf=0.0), polar=True, **P512)
    assert plain.params["polar"] is False
    assert "polar stage skipped" in caplog.text


def test_estimated_variance_path():
    f = make_frame(512, seed=5)
    res = correct_banding(f.data, **P512)
    valid = np.isfinite(f.truth)
    assert np.sqrt(np.mean(sub(res.corrected, f.truth)[valid] ** 2)) < np.sqrt(
        np.mean(sub(f.data, f.truth)[valid] ** 2)
    )


def test_template_beats_per_frame_at_low_snr(tmp_path):
    frames = [make_frame(512, seed=s, exptime_scale=1.0) for s in (10, 11, 12, 13, 14, 15)]
    tpl = estimate_banding_template(
        [fr.data for fr in frames],
        variances=[np.ones_like(fr.data) for fr in frames],
        filter="Wideband",
        **P512,
    )
    path = tmp_path / "tpl.fits"
    tpl.save(path)
    tpl2 = BandingTemplate.load(path)
    np.testing.assert_allclose(tpl2.offset, tpl.offset)
    assert tpl2.nframes == 6
    assert tpl2.filter == "Wideband"
    # a noisy frame with few valid rows (large masked band): per-column estimates are poor
    f = make_frame(512, seed=20, sigma=4.0, amp=0.15)  # same pattern as the stack (amp is in sigma units)
    f.data[:300] = np.nan
    f.truth[:300] = np.nan
    var = np.full_like(f.data, 16.0)
    per_frame = correct_banding(f.data, variance=var, **P512)
    with_tpl = correct_banding(f.data, variance=var, template=tpl2, **P512)
    valid = np.isfinite(f.truth)

    def colres(res):  # rms error of the removed column pattern (noise-free comparison)
        err, _ = column_medians(res.pattern - f.banding, valid)
        return np.sqrt(np.nanmean((err - np.nanmean(err)) ** 2))

    assert colres(with_tpl) < 0.9 * colres(per_frame)  # measured 0.61 vs 0.78


def test_template_exposure_units():
    tpl = BandingTemplate(np.ones((2, 4)), np.zeros((2, 4)), np.ones((2, 4)), np.ones((2, 4)), 2, "MSB s")
    off, _, _, _ = tpl.pattern_params(2.0)
    np.testing.assert_allclose(off, 0.5)
    with pytest.raises(ProcessingError):
        tpl.pattern_params(None)


def test_errors(tmp_path):
    with pytest.raises(ProcessingError):
        correct_banding(np.zeros(5))
    with pytest.raises(ProcessingError):
        correct_banding(np.full((32, 32), np.nan))
    with pytest.raises(ProcessingError):
        correct_banding(np.zeros((32, 32)), bogus=1)
    with pytest.raises(ProcessingError):
        estimate_banding_template([])
    bad = tmp_path / "x.fits"
    bad.write_text("not fits")
    with pytest.raises(InputFileError):
        BandingTemplate.load(bad)


def test_odd_shape_and_constant_image():
    rng = np.random.default_rng(0)
    img = (100 + rng.normal(0, 1, (257, 203))).astype(np.float32)
    img[:, ::7] += 2.0
    res = correct_banding(img, **P512)
    assert res.corrected.shape == img.shape
    assert np.std(res.corrected.mean(axis=0)) < 0.5 * np.std(img.mean(axis=0))


try:
    from aspiics.simulate import make_calibration_set, simulate_acquisition

    HAVE_SIM = True
except ImportError:  # pragma: no cover - the simulator is optional
    HAVE_SIM = False


@pytest.mark.skipif(not HAVE_SIM, reason="aspiics.simulate not available")
def test_calibrate_with_banding_step(tmp_path):
    """``m.calibrate(cal, banding=correct_banding_step)`` runs the correction inside the L2 chain."""
    from aspiics.banding import correct_banding_step
    from aspiics.calibration import CalibrationSet
    from aspiics.map import ASPIICSMap

    shape = (256, 256)
    release = make_calibration_set(tmp_path, shape=shape, seed=2)
    acq = simulate_acquisition(
        "Wideband", (1.0,), shape=shape, calibration=release, seed=5, column_streamer=True
    )
    frame = acq.frames[0]
    l1 = ASPIICSMap(frame.data, frame.header)
    cal = CalibrationSet(release.path)
    plain = l1.calibrate(cal)
    fixed = l1.calibrate(cal, banding=correct_banding_step)
    assert any("aspiics.banding.correct_banding" in h for h in str(fixed.meta["history"]).splitlines())
    truth = frame.truth
    valid = np.isfinite(np.asarray(fixed.data)) & ~truth.hot & ~truth.unusual
    inj, _ = column_medians(truth.banding_msb, valid)

    def slope(m):
        left, _ = column_medians(np.asarray(m.data, float) - truth.l2, valid)
        ok = np.isfinite(left) & np.isfinite(inj)
        x, y = inj[ok] - inj[ok].mean(), left[ok] - left[ok].mean()
        return (x * y).sum() / (x * x).sum()

    assert slope(plain) > 0.9  # measured 1.07
    assert slope(fixed) < 0.3  # measured 0.18 (0.13 at 2048x2048)
    # The estimate's own error is part of the uncertainty; banding=True is the same step.
    both = valid & np.isfinite(plain.sigma) & np.isfinite(fixed.sigma)
    assert np.all(fixed.sigma[both] >= plain.sigma[both] * (1 - 1e-6))
    assert np.median(fixed.sigma[both] / plain.sigma[both]) > 1.0
    np.testing.assert_array_equal(l1.calibrate(cal, banding=True).data, fixed.data)


@pytest.mark.skipif(not HAVE_SIM, reason="aspiics.simulate not available")
def test_template_from_simulated_stack_beats_per_frame(tmp_path):
    """
    A template from L2 frames of different dates and exposures beats the per-frame estimate on a
    short, mostly blank exposure, through ``calibrate(banding_options={"template": ...})``.

    The stack: 3 acquisitions 1.7 days apart (the simulator's drifting columns differ between them)
    of 0.5, 1 and 3 s. The target: a 0.1 s frame 12 days later, where ~70 % of the pixels are lost
    (under-exposed tiles), leaving ~40 valid rows per column and parity, and the banding in MSB
    (constant in DN, so proportional to 1/t) is large compared with what per-frame fits can resolve.
    """
    import astropy.units as u
    from astropy.time import Time

    from aspiics.calibration import CalibrationSet
    from aspiics.map import ASPIICSMap

    shape = (256, 256)
    opts = {"block": 4}  # the 256x256 frame has the ASPIICS geometry scaled by 1/8
    release = make_calibration_set(tmp_path / "cal", shape=shape, seed=2)
    cal = CalibrationSet(release.path)
    t0 = Time("2025-08-12T00:00:00", scale="utc")
    images, variances, masks, exptimes = [], [], [], []
    for k in range(3):
        date = t0 + 1.7 * k * u.day
        acq = simulate_acquisition(
            "Wideband", (0.5, 1.0, 3.0), shape=shape, calibration=release, seed=20 + k, date_obs=date
        )
        for fr in acq.frames:
            m = ASPIICSMap(fr.data, fr.header).calibrate(cal)
            images.append(np.asarray(m.data))
            variances.append(np.asarray(m.uncertainty.array) ** 2)
            masks.append(~m.valid_mask)
            exptimes.append(m.exposure_time.to_value(u.s))
    tpl = estimate_banding_template(images, variances=variances, masks=masks, exposure_times=exptimes, **opts)
    assert tpl.nframes == 9
    assert tpl.offset_unit == "MSB s"

    # round trip through the FITS file
    path = tmp_path / "banding_template.fits"
    tpl.save(path)
    loaded = BandingTemplate.load(path)
    for name in ("offset", "gain", "offset_err", "gain_err"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(tpl, name))
    assert (loaded.nframes, loaded.offset_unit) == (tpl.nframes, tpl.offset_unit)

    fr = simulate_acquisition(
        "Wideband", (0.1,), shape=shape, calibration=release, seed=99, date_obs=t0 + 12.3 * u.day
    ).frames[0]
    truth = fr.truth
    l1 = ASPIICSMap(fr.data, fr.header)
    plain = l1.calibrate(cal)
    per_frame = l1.calibrate(cal, banding=True, banding_options=opts)
    with_tpl = l1.calibrate(cal, banding=True, banding_options={**opts, "template": loaded})
    np.testing.assert_array_equal(
        with_tpl.data, l1.calibrate(cal, banding=True, banding_options={**opts, "template": tpl}).data
    )
    assert "template=True" in str(with_tpl.meta["history"])

    valid = np.isfinite(np.asarray(per_frame.data)) & ~truth.hot & ~truth.unusual
    assert np.median(valid[0::2].sum(axis=0)) < 50  # few valid pixels per column and parity

    def column_error(m):
        """RMS over columns of the error of the removed pattern (per-column median, parity-wise)."""
        removed = np.asarray(plain.data, float) - np.asarray(m.data, float)
        err, _ = column_medians(np.where(valid, removed - truth.banding_msb, np.nan), valid)
        err = err[np.isfinite(err)]
        return np.sqrt(np.mean((err - err.mean()) ** 2))

    injected = np.std(truth.banding_msb[valid])
    e_frame, e_tpl = column_error(per_frame), column_error(with_tpl)
    # measured: per-frame 1.66x the injected RMS (worse than no correction), template 0.50x
    assert e_tpl < 0.7 * injected
    assert e_tpl < 0.5 * e_frame


# ----------------------------------------------------------------------------------------------
# Exposure sets: the additive pattern at all scales from exposure differences
# ----------------------------------------------------------------------------------------------
def make_set(n=1024, times=(0.5, 5.0), *, seed=3, banding=True, shifts=None, amp=0.6, gain_amp=3e-3):
    """
    Frames of one acquisition: the same scene (moved by ``shifts``), the additive column pattern
    constant in DN (so ``A / t`` in MSB, ``amp`` σ in the shortest frame), the same gain pattern in
    every frame, and noise ``σ sqrt(t0 / t)`` (shot-noise-like).
    """
    prng = np.random.default_rng(1234)
    big_a = prng.normal(0, amp * SIGMA, (2, n)) * times[0]  # MSB s
    g = prng.normal(0, gain_amp, (2, n))
    if not banding:
        big_a[:], g[:] = 0, 0
    par = np.arange(n) % 2
    frames = []
    for k, t in enumerate(times):
        truth, scol, srows = coronal_scene(n, seed=seed, shift=(0.0, 0.0) if shifts is None else shifts[k])
        finite = np.isfinite(truth)
        t0 = np.where(finite, truth, 0)
        band = (big_a[par] / t + g[par] * t0).astype(np.float32)
        band[~finite] = 0
        sk = SIGMA * np.sqrt(times[0] / t)
        rng = np.random.default_rng(seed + 10 * k + 1)
        data = (truth + band + rng.normal(0, sk, truth.shape)).astype(np.float32)
        data[~finite] = truth[~finite]
        frames.append(Frame(data, truth, band, big_a / t, g, np.zeros(n), scol, srows, sk))
    return frames


def pattern_slope(frame, removed, pattern=None):
    """
    The banding-left slope computed without the pixel noise of ``corrected - truth``.

    ``corrected - truth = banding - removed + noise``: the per-column medians of ``banding -
    removed`` are regressed on those of the injected banding (``pattern``, default all of it).
    The noise term, uncorrelated with the banding, only adds scatter to the literal metric
    (±0.015 on a 512 x 512 frame), so this is the same target measured more precisely.
    """
    valid = np.isfinite(frame.truth)
    pattern = frame.banding if pattern is None else pattern
    removed = np.where(valid, removed, 0)
    left, _ = column_medians(np.where(valid, pattern - removed, np.nan), valid)
    inj, _ = column_medians(np.where(valid, pattern, np.nan), valid)
    ok = np.isfinite(left) & np.isfinite(inj)
    x, y = inj[ok] - inj[ok].mean(), left[ok] - left[ok].mean()
    return float((x * y).sum() / (x * x).sum())


def run_set(frames, times=(0.5, 5.0), **kwargs):
    """The exposure-set stage on the frames, then stage 1 (`correct_banding`) on each."""
    variances = [np.full_like(f.data, f.sigma**2) for f in frames]
    res = exposure_banding([f.data for f in frames], times, variances=variances, **kwargs)
    final = [correct_banding(c, variance=v, **P512) for c, v in zip(res.corrected, variances, strict=True)]
    return res, final


def stage1_only(frames):
    return [correct_banding(f.data, variance=np.full_like(f.data, f.sigma**2), **P512) for f in frames]


@pytest.fixture(scope="module")
def exposure_set():
    frames = make_set(gain_amp=0.0)
    return frames, stage1_only(frames), *run_set(frames)


def additive(frame):
    return np.broadcast_to(frame.col_offset[np.arange(frame.data.shape[0]) % 2], frame.data.shape)


def test_exposure_set_meets_slope_target(exposure_set):
    """
    Two exposures 10x apart (1024 x 1024, the ASPIICS geometry at half size, ``block=4``): the
    additive banding is measured at all scales from their difference, so both frames reach the
    slope target (≤ 0.02) that stage 1 alone misses (0.10).
    """
    frames, stage1, res, final = exposure_set
    assert [p[:2] for p in res.pairs] == [(0, 1)]
    for f, s1, fin in zip(frames, stage1, final, strict=True):
        assert banding_slope(f, s1.corrected) > 0.08  # measured 0.104 / 0.110
        assert abs(banding_slope(f, fin.corrected)) <= 0.02  # measured 0.001 / 0.003
        assert abs(pattern_slope(f, sub(f.data, fin.corrected))) <= 0.02  # measured 0.003 / 0.004
        assert abs(structure_corr(f, sub(f.data, fin.corrected))) <= 0.05
        assert streamer_contrast(fin.corrected, f) >= 0.98 * streamer_contrast(f.truth, f)
    # the common pattern (MSB s) is the injected one
    inj = frames[0].col_offset * 0.5
    assert np.corrcoef(res.offset.ravel(), inj.ravel())[0, 1] > 0.98  # measured 0.990
    assert np.polyfit(inj.ravel(), res.offset.ravel(), 1)[0] == pytest.approx(1.0, abs=0.02)


def test_exposure_set_with_jitter_and_gain():
    """
    Pointing jitter between the exposures (1.5 px in y, which mixes the row parities, and 2 px in
    x) is followed through the pixel map; the gain banding (the same in MSB in both frames) moves
    with the jitter but is absorbed by the fit's scene-proportional term. The additive pattern is
    still recovered. What stays in the frames is the low-frequency part of the gain banding.
    """
    from aspiics.resample import PixelMap

    frames = make_set(shifts=[(0.0, 0.0), (1.5, -2.0)])
    pmap = {(0, 1): PixelMap(np.eye(2), np.array([1.5, -2.0]))}
    res, final = run_set(frames, pixel_maps=pmap)
    unaligned, _ = run_set(frames)
    inj = (frames[0].col_offset * 0.5).ravel()
    assert np.corrcoef(res.offset.ravel(), inj)[0, 1] > 0.97  # measured 0.986
    assert np.polyfit(inj, res.offset.ravel(), 1)[0] == pytest.approx(1.0, abs=0.03)  # measured 1.000
    s1 = stage1_only(frames[:1])[0]
    # measured 0.023 vs 0.13: what is left is the gain banding's low-frequency part
    assert banding_slope(frames[0], final[0].corrected) < 0.25 * banding_slope(frames[0], s1.corrected)
    # without the pixel map the misaligned corona leaks into the estimate (error 0.26 vs 0.05)
    err = np.std(res.offset.ravel() - inj)
    assert np.std(unaligned.offset.ravel() - inj) > 2 * err


def test_exposure_set_null():
    """No banding injected: what the exposure stage removes is estimation noise, as its variance says."""
    frames = make_set(banding=False)
    res, final = run_set(frames)
    for k, f in enumerate(frames):
        a, va = res.column_offset[k], res.column_variance[k]
        assert np.sqrt(np.mean(a**2)) <= 0.1 * f.sigma  # measured 0.058 / 0.018
        ok = va > 0
        assert ok.mean() > 0.9
        assert np.sqrt(np.mean(a[ok] ** 2 / va[ok])) <= 2.0  # measured 1.11 (the error is as stated)
        pv = res.pattern_variance(k)
        assert pv.shape == f.data.shape
        assert np.all(pv >= 0)
        assert abs(structure_corr(f, sub(f.data, final[k].corrected))) <= 0.05


def test_exposure_set_errors(caplog):
    frames = make_set(n=128)
    imgs = [f.data for f in frames]
    with pytest.raises(ProcessingError, match="at least two"):
        exposure_banding(imgs[:1], [1.0])
    with pytest.raises(ProcessingError, match="same length"):
        exposure_banding(imgs, [1.0])
    with pytest.raises(ProcessingError, match="positive"):
        exposure_banding(imgs, [1.0, 0.0])
    with pytest.raises(ProcessingError, match="shape"):
        exposure_banding([imgs[0], imgs[1][:64]], [1.0, 10.0])
    with pytest.raises(ProcessingError, match="Unknown banding parameter"):
        exposure_banding(imgs, [1.0, 10.0], bogus=1)
    with pytest.raises(ProcessingError, match="min_ratio"):
        exposure_banding(imgs, [1.0, 10.0], pairs="some")
    with caplog.at_level("INFO", logger="aspiics.banding"):
        # too close in exposure time: nothing to do, not even the gain (as the map step)
        res = exposure_banding(imgs, [1.0, 1.2], center=(64.0, 64.0))
    assert "no two exposures differ" in caplog.text
    assert res.pairs == []
    assert res.column_gain is None
    for got, img in zip(res.corrected, imgs, strict=True):
        np.testing.assert_array_equal(got, img)
    assert "pairs none" in res.history()


@pytest.mark.skipif(not HAVE_SIM, reason="aspiics.simulate not available")
def test_calibrate_acquisition_expbanding(tmp_path):
    """
    ``calibrate_acquisition`` runs the exposure-set step between ``msb`` and ``banding`` on a
    simulated Wideband acquisition (0.1, 1, 10 s, pointing jitter): the additive banding it
    measures is the injected one, the frames' banding slopes drop, and
    without the step the result is exactly that of ``calibrate_map``.
    """
    from aspiics.calibrate import calibrate_acquisition, calibrate_map
    from aspiics.calibration import CalibrationSet
    from aspiics.map import ASPIICSMap

    shape = (512, 512)
    opts = {"banding": True, "banding_options": {"block": 4}}
    release = make_calibration_set(tmp_path, shape=shape, seed=2)
    cal = CalibrationSet(release.path)
    acq = simulate_acquisition("Wideband", (0.1, 1.0, 10.0), shape=shape, calibration=release, seed=5)
    l1 = [ASPIICSMap(fr.data, fr.header) for fr in acq.frames]
    plain = calibrate_acquisition(l1, cal, exposure_banding=False, **opts)
    for m, p in zip(l1, plain, strict=True):
        np.testing.assert_array_equal(np.asarray(calibrate_map(m, cal, **opts).data), np.asarray(p.data))
    fixed = calibrate_acquisition(l1, cal, **opts)
    for fr, p, m in zip(acq.frames, plain, fixed, strict=True):
        assert m.meta["calsteps"] == "bias,nonlin,variance,dark,flat,msb,expbanding,banding,badpix"
        assert "aspiics L2 expbanding: aspiics.banding.exposure_banding: pairs 0-1 1-2" in m.meta["history"]
        truth = fr.truth
        valid = (
            np.isfinite(np.asarray(m.data)) & np.isfinite(np.asarray(p.data)) & ~truth.hot & ~truth.unusual
        )
        inj, _ = column_medians(truth.banding_msb, valid)

        def slope(img, valid=valid, inj=inj, truth=truth):
            left, _ = column_medians(np.asarray(img, float) - truth.l2, valid)
            ok = np.isfinite(left) & np.isfinite(inj)
            x, y = inj[ok] - inj[ok].mean(), left[ok] - left[ok].mean()
            return (x * y).sum() / (x * x).sum()

        before, after = slope(p.data), slope(m.data)
        assert after < before  # measured 0.191 -> 0.028, 0.208 -> 0.047, 0.425 -> 0.388
        both = valid & np.isfinite(m.sigma) & np.isfinite(p.sigma)
        # the exposure step adds its error (tested below); the per-frame step's term shrinks a bit
        assert 0.99 < np.median(m.sigma[both] / p.sigma[both]) < 1.05


def _to_msb(frame, cal):
    """The calibration steps up to ``msb`` of a simulated frame: the input of the exposure-set step."""
    from aspiics.map import ASPIICSMap

    m = ASPIICSMap(frame.data, frame.header)
    m = m.subtract_bias(cal).correct_nonlinearity(cal).estimate_variance(cal)
    return m.subtract_dark(cal).flat_field(cal).to_msb(cal)


@pytest.mark.skipif(not HAVE_SIM, reason="aspiics.simulate not available")
def test_correct_banding_exposures_maps(tmp_path):
    """The map step: variance added, CALSTEPS/HISTORY, and clear errors for wrong inputs."""
    from aspiics.calibration import CalibrationSet
    from aspiics.exceptions import HeaderError
    from aspiics.map import ASPIICSMap

    shape = (256, 256)
    release = make_calibration_set(tmp_path, shape=shape, seed=2)
    cal = CalibrationSet(release.path)
    acq = simulate_acquisition("Wideband", (0.5, 5.0), shape=shape, calibration=release, seed=7)
    msb = [_to_msb(fr, cal) for fr in acq.frames]
    out, res = correct_banding_exposures(msb, nseg=4, return_result=True)
    assert res.pairs[0][:2] == (0, 1)
    for before, after in zip(msb, out, strict=True):
        assert after.meta["calsteps"].endswith("msb,expbanding")
        assert "aspiics L2 expbanding" in after.meta["history"]
        vb, va = before.uncertainty.array, after.uncertainty.array
        ok = np.isfinite(vb)
        assert np.all(va[ok] >= vb[ok])
        assert np.any(va[ok] > vb[ok])
        removed = np.asarray(before.data) - np.asarray(after.data)
        fin = np.isfinite(removed)
        assert np.abs(removed[fin]).max() > 0
        # one value per column and row parity
        assert np.allclose(removed[0::2][:, :5][np.isfinite(removed[0::2][:, :5])].std(), 0, atol=1e-5)
    with pytest.raises(ProcessingError, match="already|before 'banding'"):
        correct_banding_exposures(out)
    with pytest.raises(ProcessingError, match="at least two"):
        correct_banding_exposures(msb[:1])
    with pytest.raises(ProcessingError, match="calibrate_acquisition"):
        correct_banding_exposures(
            [m.calibrate(cal) for m in (ASPIICSMap(f.data, f.header) for f in acq.frames)]
        )
    other = ASPIICSMap(np.asarray(msb[1].data), msb[1].meta.copy(), uncertainty=msb[1].uncertainty)
    other.meta["filter"] = "Fe XIV"
    with pytest.raises(ProcessingError, match="mixed filters"):
        correct_banding_exposures([msb[0], other])
    notime = ASPIICSMap(np.asarray(msb[1].data), msb[1].meta.copy(), uncertainty=msb[1].uncertainty)
    del notime.meta["exptime"]
    with pytest.raises(HeaderError, match="EXPTIME"):
        correct_banding_exposures([msb[0], notime])
    # exposure times too close: unchanged, and HISTORY says why
    same = correct_banding_exposures(msb, min_ratio=20)
    np.testing.assert_array_equal(np.asarray(same[0].data), np.asarray(msb[0].data))
    assert "expbanding: skipped" in same[0].meta["history"]
    assert "expbanding" not in same[0].meta["calsteps"]


def _gain_scene(g, sigma=0.02, seed=3):
    """The 1024 x 1024 test corona times (1 + g) per column, with noise sigma (a bright frame)."""
    truth, _, _ = coronal_scene(1024, seed=seed, column_streamer=False)
    rng = np.random.default_rng(seed + 7)
    data = (truth * (1 + g)[None, :] + rng.normal(0, sigma, truth.shape)).astype(np.float32)
    data[~np.isfinite(truth)] = truth[~np.isfinite(truth)]
    return data, np.full(truth.shape, sigma**2, np.float32), (1024 / 2 - 4.6, 1024 / 2 + 3.3)


def test_log_polar_gain_recovers_column_gain():
    """A white 0.2 % column gain on a bright frame is recovered at all column scales."""
    g = np.random.default_rng(5).normal(0, 2e-3, 1024)
    data, var, center = _gain_scene(g)
    est, vest = log_polar_gain(data, var, center)
    known = vest > 0
    assert known.mean() > 0.95  # measured 0.983 (columns next to the centre one have no estimate)
    truth = g[known] - g[known].mean()
    assert np.corrcoef(est[known], truth)[0, 1] > 0.9  # measured 0.934
    assert np.std(est[known] - truth) < 0.45 * np.std(g)  # measured 0.36
    # a fit that includes the pixel's own column absorbs part of its gain
    kept, v_kept = log_polar_gain(data, var, center, leave_column_out=False)
    both = known & (v_kept > 0)
    transfer = [np.polyfit(g[both], e[both], 1)[0] for e in (est, kept)]
    assert transfer[0] > 0.8  # measured 0.83
    assert transfer[1] < transfer[0] - 0.04  # measured 0.77
    # no gain: what is found is small (scene leak and noise)
    est0, v0 = log_polar_gain(*_gain_scene(np.zeros(1024)))
    assert np.std(est0[v0 > 0]) < 0.1 * np.std(g)  # measured 0.040
    # too few usable pixels: nothing estimated
    blank = np.full((64, 64), np.nan, np.float32)
    e, v = log_polar_gain(blank, np.ones_like(blank), (32, 32))
    assert not e.any()
    assert not v.any()


def test_exposure_banding_column_gain():
    """With the Sun centre, exposure_banding also removes the column gain (measured on the long frame)."""
    frames = make_set()
    center = (1024 / 2 - 4.6, 1024 / 2 + 3.3)
    res, final = run_set(frames, center=center)
    without, final0 = run_set(frames)
    assert without.column_gain is None
    assert res.column_gain.shape == (1024,)
    truth = frames[1].col_gain[0]
    known = res.column_gain_variance > 0
    # (this long frame has a modest S/N: 0.69; 0.93 on a bright frame, see above)
    assert np.corrcoef(res.column_gain[known], truth[known])[0, 1] > 0.6
    assert "column gain on" in res.history(1)
    for k, f in enumerate(frames):
        # measured 0.022 -> 0.014 and 0.58 -> 0.28 (the long frame's banding is mostly gain)
        assert abs(banding_slope(f, final[k].corrected)) <= abs(banding_slope(f, final0[k].corrected)) + 0.005
        assert streamer_contrast(final[k].corrected, f) >= 0.98 * streamer_contrast(f.truth, f)
    assert banding_slope(frames[1], final[1].corrected) < 0.7 * banding_slope(frames[1], final0[1].corrected)


def test_template_from_exposure_sets_corrects_single_frames(tmp_path):
    """
    A template from the exposure-set estimates of 3 acquisitions holds the additive pattern at all
    scales: a single frame of a 4th acquisition corrected with it reaches the slope target
    (stage 1 alone: 0.10).
    """
    results = [run_set(make_set(seed=seed, gain_amp=0.0))[0] for seed in (11, 12, 13)]
    tpl = template_from_exposure_sets(results)
    assert tpl.offset_unit == "MSB s"
    assert tpl.nframes == 3
    tpl.save(tmp_path / "tpl.fits")
    tpl = BandingTemplate.load(tmp_path / "tpl.fits")
    target = make_set(seed=20, gain_amp=0.0)
    assert np.corrcoef(tpl.offset.ravel(), (target[0].col_offset * 0.5).ravel())[0, 1] > 0.99  # 0.9985
    for f, t in zip(target, (0.5, 5.0), strict=True):
        var = np.full_like(f.data, f.sigma**2)
        alone = correct_banding(f.data, variance=var, **P512)
        fixed = correct_banding(f.data, variance=var, template=tpl, exposure_time=t, **P512)
        assert banding_slope(f, alone.corrected) > 0.08  # measured 0.103 / 0.105
        assert abs(banding_slope(f, fixed.corrected)) <= 0.02  # measured 0.002 / -0.009
    with pytest.raises(ProcessingError, match="no exposure-set estimate"):
        template_from_exposure_sets([exposure_banding([target[0].data] * 2, [1.0, 1.0])])
    # the filter is recorded (and saved), and a template never mixes filters
    assert tpl.filter is None
    named = template_from_exposure_sets(results, filter="Wideband")
    named.save(tmp_path / "named.fits")
    assert BandingTemplate.load(tmp_path / "named.fits").filter == "Wideband"
    with pytest.raises(OutputExistsError):
        named.save(tmp_path / "named.fits")
    mixed = [dataclasses.replace(r, filter=f) for r, f in zip(results, ("Wideband", "Fe XIV"), strict=False)]
    with pytest.raises(ProcessingError, match="several filters"):
        template_from_exposure_sets(mixed)


def test_calibrate_acquisition_with_template(tmp_path, caplog):
    """A banding template and the exposure-set step hold the same pattern: never both."""
    from aspiics.calibrate import calibrate_acquisition
    from aspiics.calibration import CalibrationSet
    from aspiics.map import ASPIICSMap

    shape = (128, 128)
    release = make_calibration_set(tmp_path, shape=shape, seed=2)
    cal = CalibrationSet(release.path)
    acq = simulate_acquisition("Wideband", (0.5, 5.0), shape=shape, calibration=release, seed=3)
    l1 = [ASPIICSMap(fr.data, fr.header) for fr in acq.frames]
    tpl = BandingTemplate(*(np.zeros((2, 128)) for _ in range(4)), nframes=1, offset_unit="MSB s")
    opts = {"banding": True, "banding_options": {"template": tpl, "block": 4}}
    with caplog.at_level("INFO", logger="aspiics.calibrate"):
        out = calibrate_acquisition(l1, cal, **opts)
    assert "exposure-set step is skipped" in caplog.text
    assert all("expbanding" not in m.meta["calsteps"] for m in out)
    with pytest.raises(ProcessingError, match="not both"):
        calibrate_acquisition(l1, cal, exposure_banding=True, **opts)


@pytest.mark.skipif(not HAVE_SIM, reason="aspiics.simulate not available")
def test_template_from_simulated_sets_meets_slope_target(tmp_path):
    """
    The full path on `aspiics.simulate` frames (additive offsets, column gain, drifting columns,
    row banding, a column-aligned streamer): a template from the exposure sets of 3 acquisitions
    of different rolls takes single 0.1, 1 and 10 s frames of a 4th to the slope target, and on
    banding-free data removes far less than the pixel noise.
    """
    from aspiics.calibration import CalibrationSet
    from aspiics.map import ASPIICSMap

    shape = (1024, 1024)
    release = make_calibration_set(tmp_path, shape=shape, seed=2)
    cal = CalibrationSet(release.path)
    exposures = (0.1, 1.0, 10.0)

    def template(banding):
        results = []
        for seed in (30, 31, 32):
            acq = simulate_acquisition(
                "Wideband", exposures, shape=shape, calibration=release, seed=seed,
                roll=(137 * seed) % 360, banding=banding,
            )  # fmt: skip
            msb = [_to_msb(fr, cal) for fr in acq.frames]
            results.append(correct_banding_exposures(msb, return_result=True)[1])
        return template_from_exposure_sets(results)

    tpl = template(True)
    test = simulate_acquisition(
        "Wideband", exposures, shape=shape, calibration=release, seed=5, column_streamer=True
    )
    for fr in test.frames:
        l1 = ASPIICSMap(fr.data, fr.header)
        alone = np.asarray(l1.calibrate(cal, banding=True).data)
        fixed = np.asarray(l1.calibrate(cal, banding=True, banding_options={"template": tpl}).data)
        truth = fr.truth
        valid = np.isfinite(alone) & np.isfinite(fixed) & ~truth.hot & ~truth.unusual
        inj, _ = column_medians(truth.banding_msb, valid)

        def slope(img, valid=valid, inj=inj, truth=truth):
            left, _ = column_medians(img - truth.l2, valid)
            ok = np.isfinite(left) & np.isfinite(inj)
            x, y = inj[ok] - inj[ok].mean(), left[ok] - left[ok].mean()
            return (x * y).sum() / (x * x).sum()

        assert slope(alone) > 0.1  # measured 0.18 / 0.13 / 0.48
        assert abs(slope(fixed)) <= 0.02  # measured -0.018 / -0.007 / 0.011
    null_tpl = template(False)
    null = simulate_acquisition(
        "Wideband", exposures, shape=shape, calibration=release, seed=6, banding=False,
        column_streamer=True,
    )  # fmt: skip
    for fr in null.frames:
        l1 = ASPIICSMap(fr.data, fr.header)
        plain = l1.calibrate(cal, banding=False)
        fixed = l1.calibrate(cal, banding=True, banding_options={"template": null_tpl})
        with np.errstate(invalid="ignore"):  # saturated pixels: inf - inf
            removed = (np.asarray(plain.data) - np.asarray(fixed.data)) / plain.sigma
        rms = np.sqrt(np.mean(removed[np.isfinite(removed)] ** 2))
        alone = l1.calibrate(cal, banding=True)
        with np.errstate(invalid="ignore"):
            removed_alone = (np.asarray(plain.data) - np.asarray(alone.data)) / plain.sigma
        rms_alone = np.sqrt(np.mean(removed_alone[np.isfinite(removed_alone)] ** 2))
        # measured 0.045 / 0.053 / 0.097 (the per-frame step alone: 0.18 / 0.067 / 0.12; at
        # 2048 x 2048 with 6 acquisitions 0.023 / 0.021 / 0.031, benchmarks/accuracy_banding_template.py)
        assert rms <= 0.1
        assert rms < rms_alone
