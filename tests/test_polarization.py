"""Tests of aspiics.polarization: closed-form demodulation, noise, estimators, map products."""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from aspiics.exceptions import AspiicsUserWarning, CalibrationError, ProcessingError
from aspiics.map import ASPIICSMap
from aspiics.polarization import (
    PolarizationProducts,
    demodulate,
    demodulate_arrays,
    demodulation_weights,
    tangential_angle,
    to_ndcollection,
)

NOMINAL = (0.0, 60.0, 120.0)
RSUN = 948.2  # arcsec


def _model(B, pB, alpha, psi):
    return 0.5 * (B + pB * np.cos(np.radians(2.0 * (np.asarray(psi) - alpha))))


def _angle_diff(a, b):
    """Difference of two axial angles (deg), wrapped to [-90, 90)."""
    return np.mod(np.asarray(a) - np.asarray(b) + 90.0, 180.0) - 90.0


# ----------------------------------------------------------------------------------------------------
# Pure arrays
# ----------------------------------------------------------------------------------------------------
def test_nominal_weights():
    wB, wQ, wU, det = demodulation_weights(NOMINAL)
    np.testing.assert_allclose(wB, [2 / 3] * 3, atol=1e-14)
    np.testing.assert_allclose(wQ, [4 / 3, -2 / 3, -2 / 3], atol=1e-14)
    np.testing.assert_allclose(wU, [0, 2 / np.sqrt(3), -2 / np.sqrt(3)], atol=1e-14)
    assert det == pytest.approx(3 * np.sin(np.radians(120)))


def test_round_trip_exact_with_per_pixel_angles():
    rng = np.random.default_rng(1)
    shape = (64, 96)
    B = rng.uniform(1e-8, 1e-6, shape)
    pB = B * rng.uniform(0.0, 0.8, shape)
    alpha = rng.uniform(-90, 90, shape)
    # non-nominal, per-pixel angle maps like the calibration's (means 5.26, 64.65, ~125 deg)
    psi = [
        64.65 + rng.normal(0, 1, shape),
        5.26 + rng.normal(0, 1, shape),
        124.8 + rng.normal(0, 1, shape),
    ]
    I = [_model(B, pB, alpha, p) for p in psi]  # noqa: E741
    for method in ("closed-form", "linalg"):
        r = demodulate_arrays(I, psi, method=method)
        assert r.B.dtype == np.float64
        np.testing.assert_allclose(r.B, B, rtol=1e-6)
        assert np.max(np.abs(r.pB - pB) / B) < 1e-6
        big = pB > 0.01 * B
        assert np.max(np.abs(_angle_diff(r.angle[big], alpha[big]))) < 1e-4
        assert np.max(np.abs(r.Q - pB * np.cos(np.radians(2 * alpha))) / B) < 1e-6
        assert np.max(np.abs(r.U - pB * np.sin(np.radians(2 * alpha))) / B) < 1e-6
        assert r.valid.all()


def test_angle_is_degrees_in_half_open_range():
    alpha = np.array([-90.0, -89.5, -45.0, 0.0, 30.0, 89.9, 90.0, 135.0])
    I = [_model(1.0, 0.5, alpha, p) for p in NOMINAL]  # noqa: E741
    r = demodulate_arrays(I, NOMINAL)
    assert np.all(r.angle > -90)
    assert np.all(r.angle <= 90)
    np.testing.assert_allclose(r.angle, [90, -89.5, -45, 0, 30, 89.9, 90, -45], atol=1e-9)


def test_scalar_and_float32():
    I = [np.float32(_model(2.0, 0.5, 30.0, p)) for p in NOMINAL]  # noqa: E741
    r = demodulate_arrays([np.full((3, 3), i, np.float32) for i in I], NOMINAL)
    assert r.B.dtype == np.float32
    assert r.B.shape == (3, 3)
    r0 = demodulate_arrays(I, NOMINAL)
    assert r0.B.shape == ()
    assert float(r0.pB) == pytest.approx(0.5, rel=1e-6)


def test_noise_gains_nominal_monte_carlo():
    rng = np.random.default_rng(7)
    n = 200_000
    sigma = 0.01
    I = [_model(1.0, 0.3, 20.0, p) + rng.normal(0, sigma, n) for p in NOMINAL]  # noqa: E741
    r = demodulate_arrays(I, NOMINAL, sigmas=[np.full(n, sigma)] * 3)
    assert np.var(r.B) / sigma**2 == pytest.approx(4 / 3, rel=0.05)
    assert np.var(r.Q) / sigma**2 == pytest.approx(8 / 3, rel=0.05)
    assert np.var(r.U) / sigma**2 == pytest.approx(8 / 3, rel=0.05)
    # propagated σ agree with theory and with the scatter
    np.testing.assert_allclose(r.sigma_B, sigma * np.sqrt(4 / 3), rtol=1e-6)
    np.testing.assert_allclose(r.sigma_Q, sigma * np.sqrt(8 / 3), rtol=1e-6)
    np.testing.assert_allclose(r.cov_QU, 0.0, atol=1e-12)
    assert np.std(r.pB) == pytest.approx(np.median(r.sigma_pB), rel=0.05)
    assert np.std(r.angle) == pytest.approx(np.median(r.sigma_angle), rel=0.05)


def test_noise_propagation_non_nominal():
    rng = np.random.default_rng(8)
    n = 200_000
    psi = (64.65, 5.26, 124.8)
    sig = (0.01, 0.02, 0.015)
    I = [_model(1.0, 0.3, 70.0, p) + rng.normal(0, s, n) for p, s in zip(psi, sig, strict=True)]  # noqa: E741
    r = demodulate_arrays(I, psi, sigmas=[np.full(n, s) for s in sig])
    for name in ("B", "Q", "U", "pB", "angle"):
        assert np.std(r[name]) == pytest.approx(np.median(r["sigma_" + name]), rel=0.05), name
    assert np.cov(r.Q, r.U)[0, 1] == pytest.approx(np.median(r.cov_QU), rel=0.1, abs=1e-6)


def test_tangential_estimator_unbiased_norm_biased():
    rng = np.random.default_rng(11)
    n = 400_000
    sigma = 1.0
    pB_true = 0.5  # S/N of pB ~ 0.3
    alpha = rng.uniform(-90, 90, n)
    I = [_model(10.0, pB_true, alpha, p) + rng.normal(0, sigma, n) for p in NOMINAL]  # noqa: E741
    rt = demodulate_arrays(I, NOMINAL, pb_estimator="tangential", tangential_angle=alpha)
    rn = demodulate_arrays(I, NOMINAL, pb_estimator="norm")
    sem = np.sqrt(8 / 3) * sigma / np.sqrt(n)
    assert abs(np.mean(rt.pB) - pB_true) < 4 * sem
    assert np.mean(rn.pB) - pB_true > 100 * sem  # biased high
    # sign convention: projection on the radial direction phi = alpha - 90 is -pB
    I0 = [_model(1.0, 0.4, 30.0, p) for p in NOMINAL]
    r = demodulate_arrays(I0, NOMINAL)
    phi = np.radians(2 * (30.0 - 90.0))
    assert -(r.Q * np.cos(phi) + r.U * np.sin(phi)) == pytest.approx(0.4)
    r = demodulate_arrays(I0, NOMINAL, pb_estimator="tangential", tangential_angle=30.0)
    assert float(r.pB) == pytest.approx(0.4)
    # radial polarization gives a negative tangential pB
    r = demodulate_arrays(I0, NOMINAL, pb_estimator="tangential", tangential_angle=120.0)
    assert float(r.pB) == pytest.approx(-0.4)


def test_tangential_angle_helper():
    t = tangential_angle((5, 5), (2.0, 2.0))
    assert t[2, 4] == pytest.approx(90.0)  # east/west of centre: tangential is vertical
    assert t[4, 2] == pytest.approx(0.0)  # above centre: horizontal
    assert t[4, 4] == pytest.approx(-45.0)


def test_invalid_pixels_and_errors():
    I = [np.array([1.0, np.nan, 1.0]), np.array([1.0, 1.0, np.inf]), np.ones(3)]  # noqa: E741
    r = demodulate_arrays(I, NOMINAL)
    assert r.valid.tolist() == [True, False, False]
    assert np.isnan(r.B[1:]).all()
    r = demodulate_arrays([np.ones(2)] * 3, (0.0, 0.0, 60.0))  # two parallel polarizers: singular
    assert not r.valid.any()
    with pytest.raises(ProcessingError, match="three"):
        demodulate_arrays([np.ones(2)] * 2, NOMINAL)
    with pytest.raises(ProcessingError, match="tangential_angle"):
        demodulate_arrays([np.ones(2)] * 3, NOMINAL, pb_estimator="tangential")
    with pytest.raises(ProcessingError, match="pb_estimator"):
        demodulate_arrays([np.ones(2)] * 3, NOMINAL, pb_estimator="rice")
    with pytest.raises(ProcessingError, match="broadcast"):
        demodulate_arrays([np.ones(2), np.ones(3), np.ones(2)], NOMINAL)


# ----------------------------------------------------------------------------------------------------
# Map level: synthetic frames with an analytic corona
# ----------------------------------------------------------------------------------------------------
N = 192
SCALE = 2.8172 * 2048 / N  # keeps the 1.1-3 Rsun field


def _frame_wcs(roll_deg, sun_xy):
    th = np.radians(roll_deg)
    pc = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    crpix0 = np.array([(N - 1) / 2.0, (N - 1) / 2.0])
    crval = pc @ (crpix0 - np.asarray(sun_xy)) * SCALE  # small-angle: exact enough for the header
    return crval, pc


def _corona(tx, ty):
    """Analytic corona on helioprojective arcsec: B, pB, tangential angle on the sky (from west to north)."""
    r = np.hypot(tx, ty) / RSUN
    pa = np.arctan2(ty, tx)
    B = 1e-6 * r**-3.0 * (1 + 0.3 * np.cos(2 * pa))
    pB = 0.4 * B * np.clip(1.5 - 0.3 * r, 0.1, 1)
    alpha_sky = np.degrees(pa) + 90.0
    return r, B, pB, alpha_sky


def _polarizer_maps(roll=0.0, sun_xy=(93.3, 97.8), psi=None, nominal=False, sigma=True, names=None):
    """Three L2 polarizer maps of the analytic corona; psi = detector angle maps (Polarizer 0, 60, 120)."""
    names = names or ("Polarizer 0", "Polarizer 60", "Polarizer 120")
    crval, pc = _frame_wcs(roll, sun_xy)
    if psi is None:
        yy, xx = np.mgrid[0:N, 0:N] / N
        psi = (
            5.26 + 0.8 * np.sin(3 * xx) - 0.5 * yy,
            64.65 + 0.7 * np.cos(2 * yy) + 0.4 * xx,
            124.8 - 0.6 * xx * yy + 0.3,
        )
    maps = []
    for k, name in enumerate(names):
        h = fits.Header()
        h.update(
            {
                "TELESCOP": "PROBA-3",
                "INSTRUME": "ASPIICS",
                "LEVEL": "L2",
                "BUNIT": "MSB",
                "FILTER": name,
                "POLAR": float(name.split()[-1]) if name.startswith("Pol") else 0.0,
                "FILENAME": f"aspiics_p{k + 1}_l2_1320404D000{k + 1}11_20250812T18142{k}.fits",
                "DATE-OBS": f"2025-08-12T18:14:2{k}.000",
                "EXPTIME": 1.0,
                "CTYPE1": "HPLN-TAN",
                "CTYPE2": "HPLT-TAN",
                "CUNIT1": "arcsec",
                "CUNIT2": "arcsec",
                "CDELT1": SCALE,
                "CDELT2": SCALE,
                "CRPIX1": (N + 1) / 2,
                "CRPIX2": (N + 1) / 2,
                "CRVAL1": crval[0],
                "CRVAL2": crval[1],
                "PC1_1": pc[0, 0],
                "PC1_2": pc[0, 1],
                "PC2_1": pc[1, 0],
                "PC2_2": pc[1, 1],
                "HGLN_OBS": 0.0,
                "HGLT_OBS": 6.43,
                "DSUN_OBS": 1.5135e11,
                "RSUN_ARC": RSUN,
            }
        )
        r, B, pB, alpha_sky = _truth_on(ASPIICSMap(np.zeros((N, N), np.float32), h))
        alpha_det = alpha_sky - roll  # sky angle = detector angle + roll
        p = NOMINAL[("Polarizer 0", "Polarizer 60", "Polarizer 120").index(name)] if nominal else psi[k]
        data = _model(B, pB, alpha_det, p).astype(np.float32)
        data[r < 1.15] = np.nan
        sig = (0.01 * np.sqrt(np.abs(data) * 1e-6) + 1e-10).astype(np.float32) if sigma else None
        maps.append(ASPIICSMap(data, h, uncertainty=None if sig is None else StdDevUncertainty(sig)))
    return maps, psi


def _truth_on(product):
    w = product.wcs
    yy, xx = np.mgrid[0:N, 0:N]
    c = w.pixel_to_world(xx, yy)
    tx, ty = c.Tx.to_value(u.arcsec), c.Ty.to_value(u.arcsec)
    return _corona(tx, ty)


def test_map_round_trip_on_own_grid_exact():
    maps, psi = _polarizer_maps(roll=0.0, sun_xy=((N - 1) / 2, (N - 1) / 2))
    prods = demodulate(maps[::-1], angle_maps=dict(zip(("Polarizer 0", "p1", "p3"), psi, strict=True)))
    assert isinstance(prods, PolarizationProducts)
    _r, B, pB, alpha = _truth_on(prods.B)
    ok = np.isfinite(prods.B.data)
    assert ok.sum() > 0.7 * N * N
    np.testing.assert_allclose(prods.B.data[ok], B[ok], rtol=2e-6)
    np.testing.assert_allclose(prods.pB.data[ok], pB[ok], rtol=2e-6)
    assert np.max(np.abs(_angle_diff(prods.angle.data[ok], alpha[ok]))) < 1e-3
    for key, prod_id, unit in (
        ("B", "Total brightness", "MSB"),
        ("pB", "Polarized brightness", "MSB"),
        ("angle", "Polarization angle", "deg"),
    ):
        m = prods[key]
        assert isinstance(m, ASPIICSMap)
        assert m.meta["prod_id"] == prod_id
        assert m.meta["bunit"] == unit
        assert m.meta["level"] == "L3"
        assert m.processing_level == 3
        for mp in maps:
            assert mp.meta["filename"] in m.meta["parent"]
        assert "demodulate" in m.meta["history"]
        assert m.meta["datamin"] == pytest.approx(np.nanmin(m.data))
        assert m.meta["datamedn"] == pytest.approx(np.nanmedian(m.data))
        assert m.uncertainty is not None
        np.testing.assert_array_equal(m.mask, ~np.isfinite(m.data))
    assert prods.angle.unit == u.deg
    assert np.nanmax(np.abs(prods.angle.data)) <= 90.0
    assert prods.angle.wcs.wcs.crval[0] == 0.0


@pytest.mark.parametrize("roll", [0.0, 25.0, -140.0])
def test_roll_handling_north_up(roll):
    """Frames rolled by a known CROTA give the same north-up products (angle sign derived from PC)."""
    maps, psi = _polarizer_maps(roll=roll, sun_xy=(90.7, 99.2))
    prods = demodulate(maps, angle_maps=psi)
    # north-up grid: Sun at centre, PC identity
    np.testing.assert_allclose(prods.B.rotation_matrix, np.eye(2), atol=1e-12)
    sx, sy = prods.B.wcs.world_to_pixel(prods.B.center)
    assert (float(sx), float(sy)) == pytest.approx(((N - 1) / 2, (N - 1) / 2), abs=1e-6)
    r, B, pB, alpha = _truth_on(prods.B)
    ok = np.isfinite(prods.B.data) & (r > 1.3) & (r < 2.8)
    assert ok.sum() > 0.4 * N * N
    assert np.median(np.abs(prods.B.data[ok] / B[ok] - 1)) < 2e-3
    assert np.median(np.abs(prods.pB.data[ok] / pB[ok] - 1)) < 2e-3
    dang = _angle_diff(prods.angle.data[ok], alpha[ok])
    assert np.median(np.abs(dang)) < 0.05
    assert abs(np.mean(dang)) < 0.02  # a wrong roll sign would give 2 x roll
    hist = prods.B.meta["history"]
    assert f"{roll:+.1f}" in hist or f"{roll - 360:+.1f}" in hist or f"{roll + 360:+.1f}" in hist


def test_tangential_estimator_on_maps():
    maps, psi = _polarizer_maps(roll=12.0)
    pn = demodulate(maps, angle_maps=psi)
    pt = demodulate(maps, angle_maps=psi, pb_estimator="tangential")
    ok = np.isfinite(pn.pB.data)
    # the corona is exactly tangential: both estimators agree
    np.testing.assert_allclose(pt.pB.data[ok], pn.pB.data[ok], rtol=2e-3)
    assert "tangential" in pt.pB.meta["history"]


def test_nominal_angles_fallback_only_when_asked():
    maps, _ = _polarizer_maps(nominal=True)

    class NoAngles:
        def angle_map(self, filter):
            raise CalibrationError("aspiics_p2_angle.fits not found in /nowhere")

    with pytest.raises(CalibrationError, match="not found"):
        demodulate(maps, NoAngles())
    with pytest.warns(AspiicsUserWarning, match="nominal"):
        prods = demodulate(maps, NoAngles(), nominal_angles=True)
    r, _B, pB, _alpha = _truth_on(prods.B)
    ok = np.isfinite(prods.B.data) & (r > 1.3) & (r < 2.8)
    assert np.median(np.abs(prods.pB.data[ok] / pB[ok] - 1)) < 2e-3


def test_calibration_angle_maps_used():
    maps, psi = _polarizer_maps(roll=5.0)

    class Cal:
        def angle_map(self, filter):
            from aspiics.constants import filter_info

            return psi[("Polarizer 0", "Polarizer 60", "Polarizer 120").index(filter_info(filter).name)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = demodulate(maps, Cal())
    b = demodulate(maps, angle_maps=psi)
    np.testing.assert_array_equal(a.pB.data, b.pB.data)


def test_saturation_and_missing_combine():
    maps, psi = _polarizer_maps(roll=0.0, sun_xy=((N - 1) / 2, (N - 1) / 2))
    maps[1].data[150, 150] = np.inf
    maps[2].data[40, 150] = np.nan
    prods = demodulate(maps, angle_maps=psi)
    assert np.isposinf(prods.B.data[150, 150])
    assert np.isposinf(prods.pB.data[150, 150])
    assert np.isnan(prods.angle.data[150, 150])
    assert np.isnan(prods.B.data[40, 150])
    assert prods.B.mask[40, 150]


def test_bad_inputs():
    maps, psi = _polarizer_maps()
    with pytest.raises(ProcessingError, match=r"two frames of 'Polarizer 60'.*p2_l2.*p2_l2"):
        demodulate([maps[0], maps[1], maps[1]], angle_maps=psi)
    with pytest.raises(ProcessingError, match="missing polarizer.*Polarizer 120"):
        demodulate(maps[:2], angle_maps=psi)
    wb, _ = _polarizer_maps(names=("Wideband", "Polarizer 60", "Polarizer 120"))
    with pytest.raises(ProcessingError, match="not a polarizer"):
        demodulate(wb, angle_maps=psi)
    with pytest.raises(CalibrationError, match="shape"):
        demodulate(maps, angle_maps=[p[:100] for p in psi])
    with pytest.raises(ProcessingError):
        demodulate(maps, angle_maps=psi, pb_estimator="rice")
    with pytest.raises(ProcessingError):
        demodulate("not maps")


def test_ndcollection_round_trip():
    maps, psi = _polarizer_maps(roll=7.0)
    coll = to_ndcollection(maps)
    assert set(coll.keys()) == {"0.0 deg", "60.0 deg", "120.0 deg"}
    assert coll["60.0 deg"].meta["POLAR"] == 60 * u.deg
    a = demodulate(coll, angle_maps=psi)
    b = demodulate(maps, angle_maps=psi)
    np.testing.assert_allclose(a.pB.data, b.pB.data, rtol=1e-6, equal_nan=True)
    out = b.to_ndcollection()
    assert list(out.keys()) == ["B", "pB", "angle"]
    assert out["pB"].meta["POLAR"] == "pB"
    assert out["angle"].unit == u.deg


def test_end_to_end_simulator():
    sim = pytest.importorskip("aspiics.simulate.detector")
    acqs = sim.simulate_polarized_set(
        (1.0,), seed=3, shape=(256, 256), noise=False, banding=False, hot_pixels=False, tiles=False
    )
    maps = []
    for acq in acqs:
        f = acq.frames[0]
        h = f.header.copy()
        h["LEVEL"] = "L2"
        h["BUNIT"] = "MSB"
        for key in ("BLANK", "BZERO", "BSCALE"):
            h.pop(key, None)
        maps.append(ASPIICSMap(f.truth.scene.astype(np.float32), h))
    cal = acqs[0].calibration
    # on the Polarizer 0 grid: compare with the truth of that frame
    prods = demodulate(maps, cal, target="first")
    truth = acqs[0].frames[0].truth
    r = np.hypot(*(np.mgrid[0:256, 0:256][::-1] - np.array(truth.sun_center)[:, None, None])) * (
        maps[0].scale.axis1.value / maps[0].rsun_obs.to_value(u.arcsec)
    )
    ok = np.isfinite(prods.B.data) & (r > 1.3) & (r < 2.5)
    assert ok.sum() > 10000
    assert np.median(np.abs(prods.B.data[ok] / truth.B[ok] - 1)) < 5e-3
    assert np.median(np.abs(prods.pB.data[ok] / truth.pB[ok] - 1)) < 5e-3
    assert np.median(np.abs(_angle_diff(prods.angle.data[ok], truth.alpha[ok]))) < 0.2
    # north-up products against the corona model rendered on the output grid
    prods = demodulate(maps, cal)
    rc = acqs[0].corona.render(prods.B.wcs, (256, 256), rsun_arcsec=maps[0].rsun_obs)
    ok = np.isfinite(prods.B.data) & (rc.r > 1.3) & (rc.r < 2.5)
    # at 256² (22.5"/px) resampling the structured corona costs ~0.3 % (B) / ~0.65 % (pB): the
    # same as resampling the truth itself; no bias
    err_b = prods.B.data[ok] / rc.B[ok] - 1
    err_pb = prods.pB.data[ok] / rc.pB[ok] - 1
    assert np.median(np.abs(err_b)) < 5e-3
    assert abs(np.mean(err_b)) < 1e-3
    assert np.median(np.abs(err_pb)) < 1e-2
    assert abs(np.mean(err_pb)) < 2e-3
    assert np.median(np.abs(_angle_diff(prods.angle.data[ok], rc.alpha[ok]))) < 0.1


# ----------------------------------------------------------------------------------------------------
# Noise floor on simulated polarizer sets (issue target)
# ----------------------------------------------------------------------------------------------------
def _accuracy_module():
    """`benchmarks/accuracy_polarization.py` (the measurement is shared with the full-size benchmark)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_polarization.py"
    if not path.is_file():  # pragma: no cover - installed package without the benchmarks
        pytest.skip(f"{path} not found")
    spec = importlib.util.spec_from_file_location("aspiics_accuracy_polarization", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_products_at_the_noise_floor(tmp_path):
    """
    1024², 5 s exposures, realistic noise, calibrated L2: within 1.1x the exact-demodulation floor.

    The floor demodulates, on the same output pixels, the true polarizer intensities (exact angle
    maps, vignetting, the noise model of the detector pixel that sees the point) plus Gaussian
    noise, without resampling. Ours is a little *below* it (~0.88x): the cubic-spline alignment
    smooths the noise slightly. The lower bound guards against over-smoothing.
    """
    res = _accuracy_module().measure((1024, 1024), exposure=5.0, seed=5, tmpdir=tmp_path)
    floor, ours = res["floor"], res["tangential"]
    assert res["n_pixels"] > 300_000
    # the floor itself is sane: photon-noise limited, unbiased
    assert 0.002 < floor["B"] < 0.01
    assert abs(floor["pB_bias"]) < 1e-3
    for key in ("B", "pB", "angle"):
        assert 0.75 * floor[key] < ours[key] <= 1.1 * floor[key], (key, ours[key], floor[key])
    assert abs(ours["pB_bias"]) <= 2e-3
    assert abs(ours["B_bias"]) <= 2e-3
