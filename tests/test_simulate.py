import copy
import dataclasses
import itertools
import json
import re
import time

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from aspiics.constants import BLANK_DN, SATURATION_DN, default_config
from aspiics.exceptions import OutputExistsError
from aspiics.simulate import (
    BandingModel,
    CoronaModel,
    exposure_time,
    make_calibration_set,
    simulate_acquisition,
    simulate_polarized_set,
)

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def cal():
    return make_calibration_set(shape=SHAPE, seed=7)


@pytest.fixture(scope="module")
def wb(cal):
    return simulate_acquisition("Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=cal, seed=11)


def _inverse_nonlin(measured, table):
    """measured -> linear, extrapolated linearly with the end slopes."""
    x, y = table[0].astype(float), table[1].astype(float)
    out = np.interp(measured, y, x)
    lo, hi = measured < y[0], measured > y[-1]
    out[lo] = x[0] + (measured[lo] - y[0]) * (x[1] - x[0]) / (y[1] - y[0])
    out[hi] = x[-1] + (measured[hi] - y[-1]) * (x[-1] - x[-2]) / (y[-1] - y[-2])
    return out


# --- calibration ------------------------------------------------------------------------------


def test_calibration_written_in_release_layout(tmp_path):
    c = make_calibration_set(tmp_path, shape=(64, 64), seed=1, valid_from="20250101000000")
    assert c.path == tmp_path / "calibration_data_20250101000000_20991231235959"
    cfg = json.loads((c.path / "l2_config.json").read_text())
    assert cfg == c.config
    cd = cfg["calib_data"]
    for key in ("bias", "dark_current", "flat", "vign"):
        assert (c.path / cd[key]).is_dir()
    assert (c.path / cd["nonlin"]).is_file()
    assert (c.path / cd["hotpixel"]).is_file()
    for stem, arr in c.arrays.items():
        with fits.open(c.path / f"{stem}.fits") as hdul:
            np.testing.assert_array_equal(hdul[0].data, arr)
    for key in ("gain", "readout_noise", "pixscale", "R_IO", "eta1", "eta2", "VERS_CAL"):
        assert key in cd
    for name in ("Wideband", "Fe XIV", "He I", "Polarizer 0", "Polarizer 60", "Polarizer 120"):
        assert set(cd[name]) >= {"Aphot", "MSB", "CONV_PHO", "Photon_energy", "x_IO", "y_IO"}
    with fits.open(c.path / "detector_nonlin.fits") as hdul:
        assert hdul[0].header["UNITS"] == "DN"
        assert hdul[0].data.shape == (2, 1000)
    with pytest.raises(OutputExistsError):
        make_calibration_set(tmp_path, shape=(64, 64), seed=2)
    c2 = make_calibration_set(tmp_path, shape=(64, 64), seed=2, overwrite=True)
    assert not np.array_equal(fits.getdata(c2.path / "bias_A.fits"), c.arrays["bias_A"])


def test_calibration_contents(cal):
    a = cal.arrays
    assert 180 < np.median(a["bias_A"]) < 220
    assert np.median(a["bias_B"]) == pytest.approx(0.3, abs=0.03)
    d15 = cal.dark(-15.0)
    assert 1.0 < np.median(d15) < 5.0
    assert np.all(cal.dark(-5.0) > d15)
    nl = a["detector_nonlin"]
    assert nl[1, -1] == pytest.approx(13190, abs=5)
    assert np.all(np.diff(nl[1]) > 0)
    assert np.max(np.abs(nl[1, 100:] / nl[0, 100:] - 1)) < 0.04
    hot = a["hotpixels_list"]
    assert hot.shape[0] == 2
    assert np.issubdtype(hot.dtype, np.integer)
    assert a["vign_polar_fit"].shape == (2, 180)
    np.testing.assert_allclose(a["vign_polar_fit"][0], np.arange(0, 360, 2))
    assert np.all(np.abs(a["vign_polar_fit"][1] - 1) <= 0.0031)
    for code, mean in (("p1", 64.65), ("p2", 5.26), ("p3", 125.1)):
        m = a[f"aspiics_{code}_angle"]
        assert np.mean(m) == pytest.approx(mean, abs=0.05)
        assert np.abs(m - mean).max() <= 1.05
    flat = a["flatfield_WB"]
    assert np.median(flat) == pytest.approx(1.0, abs=1e-3)
    # column gain: column means scatter by a few 0.1 %, and even/odd rows differ
    cols = flat.mean(axis=0)
    assert 0.001 < np.std(cols / np.convolve(cols, np.ones(9) / 9, "same"))
    assert not np.allclose(flat[0::2].mean(axis=0), flat[1::2].mean(axis=0), rtol=1e-4)


def test_scaled_geometry(cal):
    ref = default_config()["calib_data"]
    cd = cal.calib_data
    assert cd["pixscale"] == pytest.approx(ref["pixscale"] * 8)
    assert cd["Wideband"]["x_IO"] == pytest.approx((ref["Wideband"]["x_IO"] + 0.5) / 8 - 0.5, abs=1e-3)


# --- frames, headers, files -------------------------------------------------------------------


def test_headers_and_files_round_trip(tmp_path, cal):
    acq = simulate_acquisition(
        "Polarizer 60", (0.1, 1.0, 10.0), shape=SHAPE, calibration=cal, seed=3, outdir=tmp_path
    )
    names = [f.path.name for f in acq.frames]
    pat = re.compile(r"^aspiics_p1_l1_([0-9A-F]{8}[0-9A-F]{4}[1-6])([1-3])_(\d{8}T\d{6})\.fits$")
    ids = [pat.match(n) for n in names]
    assert all(ids)
    assert len({m.group(1) for m in ids}) == 1
    assert [m.group(2) for m in ids] == ["1", "2", "3"]
    keys = (
        "BLANK TELESCOP OBSRVTRY INSTRUME DETECTOR LEVEL FILENAME PARENT ORIGIN DATE DATE-OBS DATE-BEG "
        "DATE-END TIMESYS EXPTIME FILTER POLAR FILT_POS APS_TEMP CTYPE1 CTYPE2 CUNIT1 CUNIT2 CDELT1 CDELT2 "
        "CRPIX1 CRPIX2 CRVAL1 CRVAL2 CROTA PC1_1 PC1_2 PC2_1 PC2_2 RSUN_ARC RSUN_REF DSUN_OBS HGLN_OBS "
        "HGLT_OBS OPLF_X OPLF_Y OPLF_Z ISD QUALITY SCI_OBJ OBS_MODE OBS_PRGM ORBIT_ID VERSION"
    ).split()
    starts = []
    for f in acq.frames:
        with fits.open(f.path, do_not_scale_image_data=True) as hdul:
            h = hdul[0].header
            data = hdul[0].data
            assert data.dtype == np.dtype(">i2")
            np.testing.assert_array_equal(data, f.data)
        for k in keys:
            assert k in h, k
        assert "BZERO" not in h
        assert "BSCALE" not in h
        assert h["BLANK"] == BLANK_DN
        assert h["LEVEL"] == "L1"
        assert h["FILTER"] == "Polarizer 60"
        assert h["POLAR"] == 60
        assert h["FILT_POS"] == "filter1"
        assert h["TELESCOP"] == "PROBA-3"
        assert h["FILENAME"] == f.path.name
        n = h["EXPTIME"] / 1.23e-4
        assert n == pytest.approx(round(n), abs=1e-6)
        beg, end = Time(h["DATE-BEG"]), Time(h["DATE-END"])
        assert (end - beg).to_value(u.s) == pytest.approx(h["EXPTIME"], abs=1e-3)
        assert h["DATE-OBS"] == h["DATE-BEG"]
        assert 940 < h["RSUN_ARC"] < 980
        assert 1.45e11 < h["DSUN_OBS"] < 1.53e11
        assert h["ISD"] == pytest.approx(144.348, abs=0.02)
        assert h["CRPIX1"] == (SHAPE[1] + 1) / 2
        th = np.radians(h["CROTA"])
        assert h["PC1_2"] == pytest.approx(-np.sin(th))
        assert h["PC2_1"] == pytest.approx(np.sin(th))
        assert h["CROTA"] == pytest.approx(10.0, abs=0.1)
        # missing tiles are BLANK in the file, and only they
        assert np.array_equal(data == BLANK_DN, f.truth.missing)
        starts.append(beg)
    assert all((b - a).to_value(u.s) > 0 for a, b in itertools.pairwise(starts))
    assert acq.frames[0].truth.missing.any()
    assert acq.frames[2].truth.missing.any()
    with pytest.raises(OutputExistsError):
        simulate_acquisition(
            "Polarizer 60", (0.1, 1.0, 10.0), shape=SHAPE, calibration=cal, seed=3, outdir=tmp_path
        )


def test_exposure_times():
    assert exposure_time(0.1) == 0.099999
    assert exposure_time(1.0) == 0.99999
    assert exposure_time(10.0) == pytest.approx(10.000023)


def test_wcs_puts_sun_centre_at_truth(wb):
    for f in wb.frames:
        w = f.wcs
        sx, sy = w.world_to_pixel_values(0.0, 0.0)
        assert (sx, sy) == pytest.approx(f.truth.sun_center, abs=1e-6)
        # CRVAL is the offset of the reference pixel from Sun centre
        h = f.header
        dx = (h["CRPIX1"] - 1 - sx) * h["CDELT1"]
        dy = (h["CRPIX2"] - 1 - sy) * h["CDELT2"]
        assert np.hypot(h["CRVAL1"], h["CRVAL2"]) == pytest.approx(np.hypot(dx, dy), rel=1e-4)
    suns = {f.truth.sun_center for f in wb.frames}
    assert len(suns) == 3  # per-exposure jitter
    x_io = wb.calibration.calib_data["Wideband"]["x_IO"]
    assert all(abs(s[0] - x_io) < 3 for s in suns)


def test_render_on_a_north_up_sun_centred_grid(wb):
    corona = wb.corona
    f = wb.frames[1]
    rsun = f.header["RSUN_ARC"]
    ps = f.header["CDELT1"]
    w3 = WCS(naxis=2)
    w3.wcs.ctype = ["HPLN-TAN", "HPLT-TAN"]
    w3.wcs.cunit = ["arcsec", "arcsec"]
    w3.wcs.cdelt = [ps, ps]
    w3.wcs.crpix = [128.5, 128.5]
    w3.wcs.crval = [0.0, 0.0]
    w3.wcs.set()
    l3 = corona.render(w3, SHAPE, rsun_arcsec=rsun)
    assert l3.sun_pixel == pytest.approx((127.5, 127.5), abs=1e-9)
    # same sky point in both renderings: detector pixel -> world -> L3 pixel (integer)
    y3, x3 = 40, 200
    tx, ty = w3.pixel_to_world_values(x3, y3)
    xd, yd = f.wcs.world_to_pixel_values(tx, ty)
    g = corona.render(f.wcs, SHAPE, rsun_arcsec=rsun)
    # evaluate at exactly that detector position with a 1-pixel WCS shifted onto it
    wpt = f.wcs.deepcopy()
    wpt.wcs.crpix = [wpt.wcs.crpix[0] - xd, wpt.wcs.crpix[1] - yd]
    wpt.wcs.set()
    pt = corona.render(wpt, (1, 1), rsun_arcsec=rsun)
    assert pt.B[0, 0] == pytest.approx(l3.B[y3, x3], rel=1e-4)
    assert pt.pB[0, 0] == pytest.approx(l3.pB[y3, x3], rel=1e-4)
    # north-up grid: position angle of a pixel straight above Sun centre is 0, of one to the right 270
    assert l3.position_angle[200, 127] == pytest.approx(0.0, abs=0.5) or l3.position_angle[200, 127] > 359.5
    assert l3.position_angle[127, 250] == pytest.approx(270.0, abs=0.5)
    # tangential polarization: horizontal above Sun centre, vertical to the right
    assert l3.alpha[200, 127] == pytest.approx(0.0, abs=0.5) or l3.alpha[200, 127] > 179.5
    assert l3.alpha[127, 250] == pytest.approx(90.0, abs=0.5)
    assert np.all(g.pB <= g.B)


@pytest.fixture(scope="module")
def cal_same_io(cal):
    """The polarizers' IO centres (hence Sun centres without jitter) differ by ~1 px: align them."""
    cfg = copy.deepcopy(cal.config)
    for name in ("Polarizer 60", "Polarizer 120"):
        cfg["calib_data"][name]["x_IO"] = cfg["calib_data"]["Polarizer 0"]["x_IO"]
        cfg["calib_data"][name]["y_IO"] = cfg["calib_data"]["Polarizer 0"]["y_IO"]
    return dataclasses.replace(cal, config=cfg)


def test_polarizers_recombine_to_B_nominal(cal_same_io):
    accs = simulate_polarized_set(
        (1.0,), shape=SHAPE, calibration=cal_same_io, seed=5, noise=False, jitter=None, nominal_angles=True
    )
    assert [a.filter for a in accs] == ["Polarizer 0", "Polarizer 60", "Polarizer 120"]
    ids = [a.frames[0].header["EXP_ID"] for a in accs]
    assert len({i[:8] for i in ids}) == 1
    assert len({i[:13] for i in ids}) == 3
    scenes = [a.frames[0].truth.scene.astype(np.float64) for a in accs]
    B = accs[0].frames[0].truth.B
    np.testing.assert_allclose(2.0 / 3.0 * sum(scenes), B, rtol=1e-5)


def test_polarizers_solve_with_angle_maps(cal_same_io):
    accs = simulate_polarized_set(
        (1.0,), shape=SHAPE, calibration=cal_same_io, seed=5, noise=False, jitter=None
    )
    tr = [a.frames[0].truth for a in accs]
    psi = np.stack([np.radians(t.psi.astype(np.float64)) for t in tr])  # (3, ny, nx)
    i_k = np.stack([t.scene.astype(np.float64) for t in tr])
    m = 0.5 * np.stack([np.ones_like(psi), np.cos(2 * psi), np.sin(2 * psi)], axis=-1)  # (3, ny, nx, 3)
    m = np.moveaxis(m, 0, -2)  # (ny, nx, 3, 3)
    sol = np.linalg.solve(m, np.moveaxis(i_k, 0, -1)[..., None])[..., 0]
    B, Q, U = sol[..., 0], sol[..., 1], sol[..., 2]
    np.testing.assert_allclose(B, tr[0].B, rtol=2e-5)
    np.testing.assert_allclose(np.hypot(Q, U), tr[0].pB, rtol=1e-4, atol=1e-6 * tr[0].pB.max())
    alpha = np.degrees(0.5 * np.arctan2(U, Q)) % 180
    d = (alpha - tr[0].alpha + 90) % 180 - 90
    strong = tr[0].pB > 1e-3 * tr[0].pB.max()
    assert np.abs(d[strong]).max() < 0.01
    # the angle maps are not the nominal angles: ignoring them biases pB by ~1 %
    assert not np.allclose(tr[1].psi, 60.0, atol=0.5)


def test_banding_injected_exactly(cal):
    kw = dict(shape=SHAPE, calibration=cal, seed=9, noise=False, tiles=False)
    a = simulate_acquisition("Wideband", (1.0, 10.0), banding=True, **kw)
    b = simulate_acquisition("Wideband", (1.0, 10.0), banding=False, **kw)
    table = cal.nonlin_table
    for fa, fb in zip(a.frames, b.frames, strict=True):
        ta, tb = fa.truth, fb.truth
        band = ta.banding_dn
        assert np.abs(band).max() > 1.0
        comps = ta.banding_components
        np.testing.assert_allclose(
            comps["static"] + comps["drift"] + comps["gain"] + comps["row"], band, atol=1e-4
        )
        # float32 round-off of DN_lin (up to ~1e5 DN in saturated areas)
        tol = 1e-6 * np.abs(ta.dn_linear).max()
        np.testing.assert_allclose(ta.dn_linear - tb.dn_linear, band, rtol=0, atol=tol)
        assert np.all(tb.banding_dn == 0)
        # L2 equivalent is exact
        resp = cal.flat("Wideband") * cal.filter_config("Wideband")["Aphot"] * ta.exptime
        np.testing.assert_allclose(ta.banding_msb * resp, band, rtol=1e-5, atol=1e-4)
        # in the raw data: invert the non-linearity; only rounding (<= 0.5 DN each) remains
        ok = ~(ta.saturated | tb.saturated | ta.beyond_nonlin | tb.beyond_nonlin)
        bias = cal.bias(ta.aps_temp)
        la = _inverse_nonlin(fa.data.astype(float) - bias, table)
        lb = _inverse_nonlin(fb.data.astype(float) - bias, table)
        assert np.abs((la - lb - band)[ok]).max() < 1.1
        # scene truth is banding-free
        np.testing.assert_array_equal(ta.l2, tb.l2)
    # the row component follows the saturated rows of the long exposure
    row = a.frames[1].truth.banding_components["row"][:, 0]
    assert row.max() > 1.0


def test_saturation_only_where_forward_model_exceeds(cal):
    acq = simulate_acquisition("Wideband", (10.0,), shape=SHAPE, calibration=cal, seed=4, tiles=False)
    f = acq.frames[0]
    t = f.truth
    assert t.saturated.sum() > 100
    np.testing.assert_array_equal(f.data == SATURATION_DN, t.saturated)
    assert f.data.max() == SATURATION_DN
    # beyond the table range implies bright, and saturation implies beyond the table
    assert np.all(t.beyond_nonlin[t.saturated])
    assert t.beyond_nonlin.sum() >= t.saturated.sum()
    # noise-free expectation agrees with the flags away from the threshold
    assert np.all(t.dn_expected[t.saturated] > SATURATION_DN - 200)


def test_tiles_dropped_for_saturation_and_underexposure(wb):
    short, _mid, long_ = wb.frames
    # short exposure: the faint outer corona and the occulter are under-exposed
    assert short.truth.missing.mean() > 0.3
    r = np.hypot(*(np.mgrid[0:256, 0:256][::-1] - np.array(short.truth.sun_center)[:, None, None]))
    assert short.truth.missing[r < 20].all()
    # long exposure: saturated inner corona dropped
    assert long_.truth.missing[long_.truth.saturated].mean() > 0.9
    for f in wb.frames:
        assert np.all(f.data[f.truth.missing] == BLANK_DN)
        assert np.all(f.data[~f.truth.missing] != BLANK_DN)
        assert np.all(f.data[~f.truth.missing] == f.data[~f.truth.missing].clip(0, SATURATION_DN))


def test_noise_model_matches_sigma_l2(cal):
    acq = simulate_acquisition("Wideband", (1.0,), shape=SHAPE, calibration=cal, seed=21, tiles=False)
    f = acq.frames[0]
    t = f.truth
    bias = cal.bias(t.aps_temp)
    lin = _inverse_nonlin(f.data.astype(float) - bias, cal.nonlin_table)
    resp = cal.flat("Wideband") * cal.filter_config("Wideband")["Aphot"] * t.exptime
    l2 = (lin - cal.dark(t.aps_temp) * t.exptime) / resp
    ok = ~(t.saturated | t.beyond_nonlin | t.hot | t.unusual)
    z = ((l2 - t.l2 - t.banding_msb) / t.sigma_l2)[ok]
    assert ok.sum() > 10000
    assert abs(np.mean(z)) < 0.05
    assert np.std(z) == pytest.approx(1.0, abs=0.05)


def test_hot_pixels(cal):
    acq = simulate_acquisition(
        "Wideband", (1.0,), shape=SHAPE, calibration=cal, seed=2, tiles=False, noise=False
    )
    t = acq.frames[0].truth
    x, y = cal.hot_pixels
    assert t.hot[y, x].all()
    assert t.hot.sum() == x.size
    nohot = simulate_acquisition(
        "Wideband", (1.0,), shape=SHAPE, calibration=cal, seed=2, tiles=False, noise=False, hot_pixels=False
    )
    d = t.dn_linear - nohot.frames[0].truth.dn_linear
    assert np.all(d[y, x] > 20)
    d[y, x] = 0
    assert np.abs(d).max() < 1e-3


def test_column_streamer_along_one_column(cal):
    kw = dict(shape=SHAPE, calibration=cal, seed=8, noise=False, tiles=False, banding=False)
    a = simulate_acquisition("Wideband", (1.0,), column_streamer=True, **kw)
    b = simulate_acquisition("Wideband", (1.0,), **kw)
    diff = a.frames[0].truth.B - b.frames[0].truth.B
    col = round(cal.calib_data["Wideband"]["x_IO"])
    rows = np.arange(170, 250)  # above Sun centre (roll 10°: detector +y is PA 10°)
    assert np.all(np.argmax(diff[rows], axis=1) == col)
    assert np.all(diff[rows, col] > 3 * diff[rows, col + 2])
    assert np.all(diff[60:90] == 0)  # the other side of the Sun


def test_seed_reproducibility(cal):
    kw = dict(shape=(128, 128), exposures=(0.1, 1.0))
    a = simulate_acquisition(seed=1, **kw)
    b = simulate_acquisition(seed=1, **kw)
    c = simulate_acquisition(seed=2, **kw)
    for fa, fb, fc in zip(a.frames, b.frames, c.frames, strict=True):
        np.testing.assert_array_equal(fa.data, fb.data)
        assert fa.header["FILENAME"] == fb.header["FILENAME"]
        assert not np.array_equal(fa.data, fc.data)
    gen = simulate_acquisition(seed=np.random.default_rng(3), **kw)
    assert gen.frames[0].data.shape == (128, 128)


def test_bad_arguments(cal):
    with pytest.raises(ValueError, match="exposures"):
        simulate_acquisition("Wideband", (1, 2, 3, 4), shape=SHAPE, calibration=cal)
    with pytest.raises(ValueError, match="acquisition_id"):
        simulate_acquisition("Wideband", (1.0,), shape=SHAPE, calibration=cal, acquisition_id="XYZ")
    with pytest.raises(ValueError, match="shape"):
        simulate_acquisition("Wideband", (1.0,), shape=(128, 128), calibration=cal)
    with pytest.raises(ValueError, match="filter"):
        simulate_acquisition("Unknown", (1.0,), shape=SHAPE, calibration=cal)


def test_banding_model_drift_depends_on_date():
    m = BandingModel()
    sig = np.zeros(SHAPE, np.float32)
    rows = np.zeros(SHAPE[0])
    c1 = m.components(SHAPE, Time("2025-08-12T00:00:00"), sig, rows)
    c2 = m.components(SHAPE, Time("2025-08-13T12:00:00"), sig, rows)
    np.testing.assert_array_equal(c1["static"], c2["static"])
    assert not np.array_equal(c1["drift"], c2["drift"])
    assert np.count_nonzero(c1["drift"][0]) <= 2
    assert not np.allclose(c1["static"][0], c1["static"][1])


def test_banding_model_column_gain_is_the_injected_one():
    m = BandingModel()
    sig = np.full(SHAPE, 1000.0, np.float32)
    comp = m.components(SHAPE, Time("2025-08-12T00:00:00"), sig, np.zeros(SHAPE[0]))
    g = m.column_gain(SHAPE[1])
    assert g.shape == (SHAPE[1],)
    assert g.dtype == np.float32
    np.testing.assert_allclose(comp["gain"][5], 1000.0 * g, rtol=1e-6)
    assert np.std(g) == pytest.approx(m.column_gain_rms, rel=0.2)


def test_corona_model_profiles():
    cm = CoronaModel(seed=0, ray_amplitude=0, hole_depth=0, n_streamers=0, f_corona=False)
    r = np.array([1.1, 2.0, 3.0], np.float32)
    b_k, b_f, p = cm.evaluate(r, np.zeros(3))
    np.testing.assert_allclose(b_k, 1e-6 * (1.425 * r**-7.0 + 2.565 * r**-17.0), rtol=1e-5)
    assert np.all(b_f == 0)
    assert p[0] == pytest.approx(0.30, abs=0.01)
    assert cm.polarization_degree(2.5) == pytest.approx(0.59, abs=0.02)
    full = CoronaModel(seed=0)
    pa = np.radians(np.arange(0, 360, 0.5, dtype=np.float32))
    m = full.modulation(np.full(pa.shape, 1.2, np.float32), np.degrees(pa))
    assert m.max() > 2.0
    assert m.min() < 0.6


def test_full_frame_timing():
    t0 = time.perf_counter()
    acq = simulate_acquisition("Wideband", (0.1, 1.0, 10.0), seed=0)
    elapsed = time.perf_counter() - t0
    assert acq.frames[0].data.shape == (2048, 2048)
    assert elapsed < 10.0
