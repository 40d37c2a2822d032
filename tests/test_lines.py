"""Tests of aspiics.lines.line_emission."""

import numpy as np
import pytest
from astropy.nddata import StdDevUncertainty

from aspiics.exceptions import AspiicsUserWarning, ProcessingError
from aspiics.fcorona import f_corona_model, subtract_f_corona
from aspiics.lines import DEFAULT_CONTINUUM_RATIO, LINE_PRODUCTS, line_emission
from aspiics.map import ASPIICSMap
from tests.test_fcorona_maps import N, make_map


def _pair(filter="Fe XIV", roll_wb=0.0, sigma=True):
    rng = np.random.default_rng(2)
    nb = rng.uniform(1e-9, 1e-8, (N, N)).astype(np.float32)
    wb = rng.uniform(1e-9, 1e-8, (N, N)).astype(np.float32)
    nb[3, 4] = np.nan
    wb[5, 6] = np.inf
    code = {"Fe XIV": "fe", "He I": "he"}.get(filter, "wb")
    a = make_map(filter=filter, data=nb, FILENAME=f"aspiics_{code}_l2_1320404D000242_20250812T181524.fits")
    b = make_map(filter="Wideband", data=wb, roll=roll_wb)
    if sigma:
        a = ASPIICSMap(a.data, a.meta, uncertainty=StdDevUncertainty(np.full((N, N), 3e-11, np.float32)))
        b = ASPIICSMap(b.data, b.meta, uncertainty=StdDevUncertainty(np.full((N, N), 4e-11, np.float32)))
    return a, b


@pytest.mark.parametrize(("filter", "prod_id"), [("Fe XIV", "Green line"), ("He I", "He I D3 line")])
def test_arithmetic_exact(filter, prod_id):
    nb, wb = _pair(filter)
    out = line_emission(nb, wb, continuum_ratio=0.8, line_scale=2.0)
    expected = (nb.data.astype(np.float32) - np.float32(0.8) * wb.data) / np.float32(2.0)
    ok = np.isfinite(expected)
    np.testing.assert_array_equal(out.data[ok], expected[ok].astype(np.float32))
    assert np.isnan(out.data[3, 4])
    assert np.isposinf(out.data[5, 6])
    assert out.mask[3, 4]
    assert out.mask[5, 6]
    assert out.meta["prod_id"] == prod_id
    assert out.meta["level"] == "L3"
    assert out.meta["cont_rat"] == 0.8
    assert out.meta["line_scl"] == 2.0
    assert nb.meta["filename"] in out.meta["parent"]
    assert wb.meta["filename"] in out.meta["parent"]
    assert "C = 0.8" in out.meta["history"]
    np.testing.assert_allclose(out.sigma, np.hypot(3e-11, 0.8 * 4e-11) / 2.0, rtol=1e-6)


def test_defaults_are_one():
    assert DEFAULT_CONTINUUM_RATIO == {"Fe XIV": 1.0, "He I": 1.0}
    nb, wb = _pair(sigma=False)
    out = line_emission(nb, wb)
    ok = np.isfinite(out.data)
    np.testing.assert_array_equal(out.data[ok], (nb.data - wb.data)[ok])
    assert out.uncertainty is None


def test_f_corona_subtraction():
    nb, wb = _pair()
    wb_k = subtract_f_corona(wb, "koutchmy")
    out = line_emission(nb, wb_k, continuum_ratio=0.9, f_corona="koutchmy", f_corona_ratio=0.7)
    f = f_corona_model(nb, "koutchmy", as_map=False)
    expected = nb.data - np.float32(0.9) * wb_k.data - np.float32(0.7) * f
    ok = np.isfinite(expected)
    np.testing.assert_allclose(out.data[ok], expected[ok], rtol=1e-5, atol=1e-15)
    assert out.meta["fcor_rat"] == 0.7
    fmap = f_corona_model(nb, "allen")
    out2 = line_emission(nb, wb_k, f_corona=fmap)
    expected2 = nb.data - wb_k.data - fmap.data
    np.testing.assert_allclose(out2.data[ok], expected2[ok], rtol=1e-5, atol=1e-15)
    with pytest.warns(AspiicsUserWarning, match="twice"):
        line_emission(nb, wb, f_corona="allen")
    with pytest.warns(AspiicsUserWarning, match="stays"):
        line_emission(nb, wb_k)


def test_wideband_resampled_onto_narrowband_grid():
    nb = make_map(filter="Fe XIV", data=np.full((N, N), 3e-9, np.float32))
    wb = make_map(filter="Wideband", roll=3.0, data=np.full((N, N), 1e-9, np.float32))
    out = line_emission(nb, wb)
    inner = out.data[10:-10, 10:-10]
    np.testing.assert_allclose(inner, 2e-9, rtol=1e-5)
    assert np.isnan(out.data).any()  # corners outside the rotated wideband frame


def test_bad_filters():
    nb, wb = _pair()
    with pytest.raises(ProcessingError, match="narrowband"):
        line_emission(wb, wb)
    with pytest.raises(ProcessingError, match="'Wideband'"):
        line_emission(nb, nb)
    pol = make_map(filter="Polarizer 0")
    with pytest.raises(ProcessingError, match="narrowband"):
        line_emission(pol, wb)
    l1 = make_map(filter="Fe XIV", BUNIT="DN")
    with pytest.raises(ProcessingError, match="MSB"):
        line_emission(l1, wb)


# ----------------------------------------------------------------------------------------------------
# Simulated line emission: truth and recovery
# ----------------------------------------------------------------------------------------------------
def test_simulator_line_truth():
    import astropy.units as u

    from aspiics.simulate import CoronaModel, make_calibration_set, simulate_acquisition

    n = 128
    cal = make_calibration_set(shape=(n, n), seed=1)
    kw = {"shape": (n, n), "calibration": cal, "seed": 1, "noise": False, "jitter": None}
    fe = simulate_acquisition("Fe XIV", (1.0,), **kw).frames[0].truth
    he = simulate_acquisition("He I", (1.0,), **kw).frames[0].truth
    wb = simulate_acquisition("Wideband", (1.0,), **kw).frames[0].truth
    p0 = simulate_acquisition("Polarizer 0", (1.0,), **kw).frames[0].truth
    for t in (wb, p0):
        assert t.line.shape == (n, n)
        assert not t.line.any()
    np.testing.assert_array_equal(wb.scene, wb.B)
    np.testing.assert_allclose(fe.scene, fe.B + fe.line, rtol=1e-6)
    np.testing.assert_allclose(fe.l2, fe.scene * fe.vignetting, rtol=1e-6)
    # a few per cent of the continuum near the limb in streamers, steep fall-off
    corona = CoronaModel(seed=1)
    pa = np.radians(np.arange(0.0, 360.0, 0.25))
    ratio = {}
    for r in (1.1, 1.5, 2.0):
        bk, bf, _ = corona.evaluate(np.full(pa.shape, r), pa)
        ratio[r] = corona.line_brightness(r, pa, "Fe XIV") / (bk + bf)
    assert 0.01 < ratio[1.1].max() < 0.06
    assert ratio[2.0].max() < 0.1 * ratio[1.1].max()
    # He I D3: prominences close to the limb only, weaker than Fe XIV over the field
    he_line = corona.line_brightness(np.full(pa.shape, 1.5), pa * u.rad, "he")
    assert he_line.max() < 0.01 * corona.line_brightness(1.1, pa, "He I").max()
    assert fe.line.sum() > he.line.sum() > 0
    # off: the continuum only, and the continuum does not depend on the line settings
    off = simulate_acquisition("Fe XIV", (1.0,), corona=CoronaModel(seed=1, lines=False), **kw)
    assert not off.frames[0].truth.line.any()
    np.testing.assert_array_equal(off.frames[0].truth.B, fe.B)


@pytest.fixture(scope="module")
def simulated_l2(tmp_path_factory):
    """Calibrated 1024² Wideband (1 s), Fe XIV (20 s) and He I (20 s) frames with their truth."""
    import aspiics
    from aspiics.simulate import make_calibration_set, simulate_acquisition

    n = 1024
    cal = make_calibration_set(tmp_path_factory.mktemp("cal") / "calibration", shape=(n, n), seed=4)
    cal_set = aspiics.CalibrationSet(cal.path)
    out = {}
    for name, t in (("Wideband", 1.0), ("Fe XIV", 20.0), ("He I", 20.0)):
        acq = simulate_acquisition(name, (t,), seed=4, shape=(n, n), calibration=cal, banding=False)
        frame = acq.frames[0]
        out[name] = (ASPIICSMap(frame.data, frame.header).calibrate(cal_set), frame.truth)
    return out


def _radius(m, truth):
    ny, nx = m.data.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    scale = m.scale.axis1.value / m.rsun_obs.value
    return np.hypot(xx - truth.sun_center[0], yy - truth.sun_center[1]) * scale


@pytest.mark.parametrize(("filter", "r_range"), [("Fe XIV", (1.2, 1.6)), ("He I", (1.2, 1.3))])
def test_line_recovered_from_simulated_frames(simulated_l2, filter, r_range):
    """
    line_emission of calibrated L2 frames recovers the injected line within the noise.

    The simulator renders the same continuum B (MSB) in every filter and the L2 calibration uses
    each filter's Aphot, so the continuum ratio C = 1 is exact here. Above 1.2 R☉ the vignetting
    is 1: the L2 line is the injected line. The wideband frame (different IO centre and jitter) is
    resampled onto the narrowband grid by line_emission.
    """
    nb, truth = simulated_l2[filter]
    wb, wb_truth = simulated_l2["Wideband"]
    out = line_emission(nb, wb)
    assert out.meta["prod_id"] == LINE_PRODUCTS[filter]
    r = _radius(nb, truth)
    line = truth.line * truth.vignetting
    ok = np.isfinite(out.data) & np.isfinite(out.sigma)
    sel = ok & (r > r_range[0]) & (r < r_range[1])
    z = (out.data - line)[sel] / out.sigma[sel]
    assert sel.sum() > 5000
    assert abs(z.mean()) < 0.05
    assert 0.8 < z.std() < 1.1  # propagated σ: √(σ_N² + σ_W²) (resampling smooths σ_W a little)
    # the line is detected where it is bright: mean recovered / injected within 3 standard errors
    bright = sel & (line > np.percentile(line[sel], 95 if filter == "He I" else 90))
    sem = out.data[bright].std() / np.sqrt(bright.sum())
    assert sem < 0.05 * line[bright].mean()
    assert abs(out.data[bright].mean() - line[bright].mean()) < 3 * sem
    # C = 1: far from the limb (no line) the continuum cancels to < 3e-4 of B on average
    far = ok & (r > 1.6) & (r < 2.5)
    assert abs(np.mean(out.data[far] - line[far], dtype=np.float64)) < 3e-4 * np.mean(truth.B[far])
    assert wb_truth.line is not None
    assert not wb_truth.line.any()
