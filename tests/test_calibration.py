"""Tests of aspiics.calibration: loading, validating and caching calibration releases."""

import json
import logging
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from scipy.interpolate import CubicSpline

import aspiics.calibration as calmod
from aspiics.calibration import (
    ENV_VAR,
    CalibrationArchive,
    CalibrationSet,
    NonlinearityTable,
    find_releases,
)
from aspiics.exceptions import AspiicsUserWarning, CalibrationError

SHAPE = (16, 20)
REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference-calibration"
GAIN = 0.1


def nonlin_table_dn(n=200, top=13000.0):
    """A smooth monotone table (DN): measured = linear · (1 − 0.02·(linear/top)²)."""
    linear = np.linspace(0.0, top / 0.98, n)
    measured = linear * (1 - 0.02 * (linear / (top / 0.98)) ** 2)
    return np.vstack([linear, measured]).astype(np.float32)


def write_release(folder, shape=SHAPE, *, flat_names=None, units="DN", skip=(), config=None):
    """Write a tiny release with known numbers; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ny, nx = shape
    _yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    arrays = {
        "bias_A": 100.0 + xx,
        "bias_B": 0.5 + 0 * xx,
        "dark_A2": 2.0 + 0 * xx,
        "dark_B2": 0.1 + 0 * xx,
        "dark_C2": 0.01 + 0 * xx,
        "aspiics_p1_angle": 64.65 + 0 * xx,
        "aspiics_p2_angle": 5.26 + 0 * xx,
        "aspiics_p3_angle": 125.0 + 0 * xx,
    }
    flats = flat_names or {
        "WB": "flatfield_WB",
        "Fe": "flatfield_Fe",
        "He": "flatfield_He",
        "P1": "flatfield_P1",
        "P2": "flatfield_P2",
        "P3": "flatfield_P3",
    }
    for i, (_suffix, stem) in enumerate(flats.items()):
        arrays[stem] = 1.0 + 0.01 * (i + 1) + 0 * xx
    for stem, data in arrays.items():
        if stem not in skip:
            fits.writeto(folder / f"{stem}.fits", np.asarray(data, dtype=np.float32))
    if "detector_nonlin" not in skip:
        hdr = fits.Header()
        hdr["UNITS"] = units
        fits.writeto(folder / "detector_nonlin.fits", nonlin_table_dn(), hdr)
    if "hotpixels_list" not in skip:
        fits.writeto(folder / "hotpixels_list.fits", np.array([[3, 7], [2, 5]], dtype=np.int16))
    angles = np.arange(0, 360, 2, dtype=np.float32)
    fits.writeto(folder / "vign_polar_fit.fits", np.vstack([angles, np.ones_like(angles)]))
    fits.writeto(folder / "unusual_list.fits", np.array([[1], [2]], dtype=np.int32))
    if config is not None:
        (folder / "l2_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "calibration_data_20250101000000_20260101000000")


# ------------------------------------------------------------------------------ sources


def test_release_folder_defaults(release):
    cal = CalibrationSet(release)
    assert cal.gain == 0.1
    assert cal.read_noise == 7.0
    assert cal.eta1 == 15.0
    assert cal.eta2 == 20.0
    assert cal.aphot("Wideband") == 2.36e10
    assert cal.io_center("Fe XIV") == (1002.15, 1026.26)
    assert cal.version == "1.0"
    assert cal.release.valid_from.year == 2025
    assert cal.files_read == []  # nothing read yet: lazy


def test_config_in_release_folder_overrides(tmp_path):
    cfg = {"calib_data": {"gain": 0.119, "VERS_CAL": "9.9", "Wideband": {"Aphot": 1.0e10, "MSB": 1.0e20}}}
    folder = write_release(tmp_path / "calibration_data_20250101000000_20260101000000", config=cfg)
    cal = CalibrationSet(folder)
    assert cal.gain == 0.119
    assert cal.version == "9.9"
    assert cal.aphot("Wideband") == 1.0e10
    assert cal.io_center("Wideband") == (1002.43, 1027.04)  # merged with the defaults


def test_json_config_relative_and_absolute_paths(tmp_path):
    data = write_release(tmp_path / "somewhere" / "files")
    cfg = {
        "calib_data": {
            "bias": "somewhere/files",
            "dark_current": str(data),  # absolute
            "flat": "./somewhere/files/",
            "vign": "somewhere/files",
            "nonlin": "somewhere/files/detector_nonlin.fits",
            "hotpixel": str(data / "hotpixels_list.fits"),
            "readout_noise": 6.0,
        }
    }
    path = tmp_path / "l2_config.json"
    path.write_text(json.dumps(cfg))
    cal = CalibrationSet(path)
    assert cal.read_noise == 6.0
    np.testing.assert_allclose(cal.bias(0.0)[0, :3], [100, 101, 102])
    assert cal.flat("Wideband").shape == SHAPE
    assert len(cal.hot_pixels[0]) == 2
    assert cal.nonlinearity.max_measured > 0


def test_environment_variable_read_at_call_time(release, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(CalibrationError, match=ENV_VAR):
        CalibrationSet()
    monkeypatch.setenv(ENV_VAR, str(release))
    assert CalibrationSet().path == release


def test_missing_source():
    with pytest.raises(CalibrationError, match="does not exist"):
        CalibrationSet("/nonexistent/calibration")


def test_release_selection_by_date(tmp_path):
    a = write_release(tmp_path / "calibration_data_20100101000000_20241205000000")
    b = write_release(tmp_path / "calibration_data_20241205000000_20991231000000")
    write_release(tmp_path / "not_a_release")
    assert [r.path for r in find_releases(tmp_path)] == [a, b]
    assert CalibrationSet.for_date(tmp_path, "2023-06-01T00:00:00").path == a
    assert CalibrationSet(tmp_path, date="2025-08-12T18:14:24").path == b
    with pytest.raises(CalibrationError, match="date"):
        CalibrationSet(tmp_path)  # two releases, no date
    with pytest.raises(CalibrationError, match="no calibration release"):
        CalibrationSet(tmp_path, date="2005-01-01")
    archive = CalibrationArchive(tmp_path)
    s1 = archive.for_date("2025-01-01")
    assert archive.for_date("2026-01-01") is s1
    assert archive.for_date("2020-01-01").path == a


def test_release_outside_validity_warns(release):
    with pytest.warns(AspiicsUserWarning, match="not valid"):
        CalibrationSet(release, date="2030-01-01")


# ------------------------------------------------------------------------------ arrays


def test_bias_and_dark_models(release):
    cal = CalibrationSet(release)
    t = -15.0
    bias = cal.bias(t)
    assert bias.dtype == np.float32
    np.testing.assert_allclose(bias[4, 5], 100 + 5 + 0.5 * t, rtol=1e-6)
    dark = cal.dark(t)
    np.testing.assert_allclose(dark, 2.0 + 0.1 * t + 0.01 * t * t, rtol=1e-5)
    assert cal.shape == SHAPE


def test_arrays_are_cached_and_read_once(release, monkeypatch):
    calls = []
    real = calmod._read_fits

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(calmod, "_read_fits", counting)
    cal = CalibrationSet(release)
    for temperature in (-15.0, -14.0, -20.0):
        cal.bias(temperature)
        cal.dark(temperature)
        cal.flat("Wideband")
        _ = cal.nonlinearity
        _ = cal.hot_pixels
    assert sorted(calls) == sorted(
        [
            "bias_A.fits",
            "bias_B.fits",
            "dark_A2.fits",
            "dark_B2.fits",
            "dark_C2.fits",
            "flatfield_WB.fits",
            "detector_nonlin.fits",
            "hotpixels_list.fits",
        ]
    )
    assert len(cal.files_read) == len(calls)
    assert cal.flat("Wideband") is cal.flat("Wideband")
    assert not cal.flat("Wideband").flags.writeable


def test_flat_mapping_case_insensitive_and_logged(tmp_path, caplog):
    names = {
        "WB": "FLATFIELD_wb",
        "Fe": "flatfield_fe",
        "He": "FlatField_He",
        "P1": "flatfield_p1",
        "P2": "flatfield_P2",
        "P3": "flatfield_P3",
    }
    folder = write_release(tmp_path / "calibration_data_20250101000000_20260101000000", flat_names=names)
    cal = CalibrationSet(folder)
    with caplog.at_level(logging.INFO, logger="aspiics"):
        assert cal.flat("Wideband")[0, 0] == pytest.approx(1.01)
    assert "flatfield_wb" in caplog.text.lower()
    # in-flight mapping: P1 = Polarizer 60 (5th written, 1.05), P2 = Polarizer 0 (1.06)
    assert cal.flat("Polarizer 60")[0, 0] == pytest.approx(1.04)
    assert cal.flat("Polarizer 0")[0, 0] == pytest.approx(1.05)
    assert cal.flat("Polarizer 120")[0, 0] == pytest.approx(1.06)
    old = CalibrationSet(folder, flat_map={"Polarizer 0": "P1", "p1": "P2"})
    assert old.flat("Polarizer 0")[0, 0] == pytest.approx(1.04)
    assert old.flat("Polarizer 60")[0, 0] == pytest.approx(1.05)
    assert old.file_path("flat:Polarizer 0").name.lower() == "flatfield_p1.fits"


def test_hot_pixels_angles_unusual(release):
    cal = CalibrationSet(release)
    rows, cols = cal.hot_pixels
    np.testing.assert_array_equal(rows, [2, 5])  # row 1 of the file = y
    np.testing.assert_array_equal(cols, [3, 7])
    assert cal.angle_map("Polarizer 60").mean() == pytest.approx(64.65)
    assert cal.angle_map("p2").mean() == pytest.approx(5.26)
    with pytest.raises(CalibrationError, match="not a polarizer"):
        cal.angle_map("Wideband")
    assert cal.unusual_pixels[0][0] == 2


def test_vignetting_cached(release):
    cal = CalibrationSet(release)
    v = cal.vignetting("Wideband", (64, 64))
    assert v.shape == (64, 64)
    assert v.dtype == np.float32
    assert 0 <= v.min()
    assert v.max() <= 1
    assert cal.vignetting("Wideband", (64, 64)) is v


# ------------------------------------------------------------------------------ non-linearity


@pytest.mark.parametrize(("units", "factor"), [("DN", 1 / GAIN), ("electron", 1.0), ("electrons", 1.0)])
def test_nonlinearity_units(tmp_path, units, factor):
    folder = write_release(tmp_path / "calibration_data_20250101000000_20260101000000", units=units)
    table = CalibrationSet(folder).nonlinearity
    raw = nonlin_table_dn()
    np.testing.assert_allclose(table.max_measured, raw[1].max() * factor, rtol=1e-6)
    np.testing.assert_allclose(table.linear[-1], raw[0].max() * factor, rtol=1e-6)


def test_nonlinearity_bad_units(tmp_path):
    folder = write_release(tmp_path / "calibration_data_20250101000000_20260101000000", units="volts")
    with pytest.raises(CalibrationError, match="UNITS"):
        _ = CalibrationSet(folder).nonlinearity


def test_nonlinearity_table_made_monotonic():
    linear = np.array([0, 1, 2, 3, 4, 5, 6], dtype=float)
    measured = np.array([0, 1, 2, 2, 3.5, 4, 5], dtype=float)  # a flat step
    table = NonlinearityTable(linear, measured)
    assert np.all(np.diff(table.measured) > 0)
    assert np.all(np.diff(table.linear) > 0)
    y, beyond = table.linearize(np.array([0.5, 4.5, 7.0, -1.0]))
    assert beyond.tolist() == [False, False, True, False]
    assert y[2] == pytest.approx(table.linear[-1])
    assert y[3] == pytest.approx(-1.0, abs=0.05)  # linear extension below the table


def test_nonlinearity_inversion_synthetic():
    raw = nonlin_table_dn(n=1000)
    table = NonlinearityTable(raw[0] / GAIN, raw[1] / GAIN)
    # forward model: measured(linear) analytic; inversion must recover linear
    top = 13000.0 / 0.98 / GAIN
    truth = np.linspace(10.0, 0.99 * top, 5000)
    measured = truth * (1 - 0.02 * (truth / top) ** 2)
    fast, beyond = table.linearize(measured)
    exact, _ = table.linearize(measured, exact=True)
    assert not beyond.any()
    np.testing.assert_allclose(exact, truth, rtol=2e-5, atol=0.05)
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=0.02)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference calibration files not available")
def test_nonlinearity_inversion_reference_file():
    data, header = calmod._read_fits(REFERENCE / "detector_nonlin.fits")
    assert header["UNITS"].strip() == "DN"
    table = NonlinearityTable(data[0] / GAIN, data[1] / GAIN)
    # at the table's own points the inverse returns the linear signal
    y, beyond = table.linearize(data[1] / GAIN)
    assert beyond.sum() == 0
    np.testing.assert_allclose(y, data[0] / GAIN, rtol=1e-5, atol=0.05)
    # in between: agrees with an interpolating cubic spline (the reference's splrep, s=0)
    cs = CubicSpline(data[1].astype(float) / GAIN, data[0].astype(float) / GAIN)
    x = np.linspace(data[1].min() / GAIN, data[1].max() / GAIN * 0.9999, 20001)
    fast, _ = table.linearize(x)
    np.testing.assert_allclose(fast, cs(x), rtol=1e-4, atol=0.5)
    assert np.all(np.diff(fast.astype(float)) >= -1e-3 * np.abs(fast[1:]) * 1e-4)  # monotone (float32)
    # beyond the measured range: saturated
    _, beyond = table.linearize(np.array([data[1].max() / GAIN + 1.0]))
    assert beyond.all()


# ------------------------------------------------------------------------------ validation


def test_missing_file_names_file(release):
    (release / "dark_C2.fits").unlink()
    cal = CalibrationSet(release)
    with pytest.raises(CalibrationError, match=r"dark_C2\.fits.*(download|complete)"):
        cal.dark(-15.0)


def test_corrupt_file(release):
    (release / "bias_B.fits").write_bytes(b"SIMPLE  = this is not a FITS file" * 10)
    cal = CalibrationSet(release)
    with pytest.raises(CalibrationError, match="bias_B.fits"):
        cal.bias(-15.0)


def test_inconsistent_shapes(release):
    (release / "bias_B.fits").unlink()
    fits.writeto(release / "bias_B.fits", np.zeros((8, 8), dtype=np.float32))
    cal = CalibrationSet(release)
    with pytest.raises(CalibrationError, match=r"bias_B\.fits.*shape"):
        cal.bias(-15.0)


def test_check_shape(release):
    cal = CalibrationSet(release)
    cal.check_shape(SHAPE)
    with pytest.raises(CalibrationError, match=r"frame\.fits.*bias_A"):
        cal.check_shape((2048, 2048), "frame.fits")


def test_bad_config_json(tmp_path):
    path = tmp_path / "l2_config.json"
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="l2_config.json"):
        CalibrationSet(path)
    path.write_text(json.dumps({"something": 1}))
    with pytest.raises(CalibrationError, match="calib_data"):
        CalibrationSet(path)


# ------------------------------------------------------------------------------ conversion factors


def test_conversion_factors_dimensions(release):
    cal = CalibrationSet(release)
    conv = cal.conversion_factors("Wideband")
    aphot = 2.36e10 * u.DN / u.s  # per MSB
    msb = 2.082e20 * u.ph / (u.s * u.cm**2 * u.sr)  # per MSB
    e_ph = 3.636e-19 * u.J / u.ph
    expected_pho = aphot / msb
    assert conv["CONV_PHO"].unit.is_equivalent(expected_pho.unit)
    assert conv["CONV_PHO"].to_value(expected_pho.unit) == pytest.approx(expected_pho.value)
    # reference formulas: CONV_WAT = CONV_PHO/E/1e4, CONV_ERG = CONV_PHO/(E*1e7)
    assert conv["CONV_WAT"].value == pytest.approx(expected_pho.value / 3.636e-19 / 1e4)
    assert conv["CONV_ERG"].value == pytest.approx(expected_pho.value / (3.636e-19 * 1e7))
    # direction: (DN/s) / CONV_WAT is an energy radiance; 1 MSB in W m-2 sr-1 = MSB_phot * E
    one_msb = (aphot / conv["CONV_WAT"]).to(u.W / (u.m**2 * u.sr))
    assert one_msb.value == pytest.approx((msb * e_ph).to_value(u.W / (u.m**2 * u.sr)))
    erg = (aphot / conv["CONV_ERG"]).to(u.erg / (u.s * u.cm**2 * u.sr))
    assert erg.value == pytest.approx((msb * e_ph).to_value(u.erg / (u.s * u.cm**2 * u.sr)))


def test_conv_pho_inconsistency_warns_once_per_filter(release):
    cal = CalibrationSet(release)
    with pytest.warns(AspiicsUserWarning, match="Polarizer 0") as record:
        first = cal.conversion_factors("Polarizer 0")
    assert len(record) == 1
    cal.conversion_factors("Polarizer 0")  # second call: no warning (warnings are errors)
    # the consistent value Aphot/MSB is used
    assert first["CONV_PHO"].value == pytest.approx(2.11e10 / 2.082e20)
    with pytest.warns(AspiicsUserWarning, match="Polarizer 60"):
        cal.conversion_factors("Polarizer 60")
    cal.conversion_factors("Polarizer 120")  # consistent: no warning (warnings are errors)
