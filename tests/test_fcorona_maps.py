"""Tests of the map-level F-corona functions of aspiics.fcorona."""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from aspiics.exceptions import ProcessingError
from aspiics.fcorona import (
    allen_f_corona,
    f_corona_model,
    helioprojective_polar,
    koutchmy_f_corona,
    subtract_f_corona,
)
from aspiics.map import ASPIICSMap

N = 128
SCALE = 2.8172 * 2048 / N


def make_map(roll=0.0, rsun=948.2, crval=(0.0, 0.0), filter="Wideband", data=None, **extra):
    th = np.radians(roll)
    h = fits.Header()
    h.update(
        {
            "TELESCOP": "PROBA-3",
            "INSTRUME": "ASPIICS",
            "LEVEL": "L2",
            "BUNIT": "MSB",
            "FILTER": filter,
            "FILENAME": "aspiics_wb_l2_1320404D000212_20250812T181424.fits",
            "DATE-OBS": "2025-08-12T18:14:24.000",
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
            "PC1_1": np.cos(th),
            "PC1_2": -np.sin(th),
            "PC2_1": np.sin(th),
            "PC2_2": np.cos(th),
            "HGLN_OBS": 0.0,
            "HGLT_OBS": 6.43,
            "DSUN_OBS": 1.5135e11,
            "RSUN_ARC": rsun,
        }
    )
    h.update(extra)
    if data is None:
        data = np.full((N, N), 1e-8, np.float32)
    return ASPIICSMap(data, h)


def _rho_arcsec(m, x, y):
    c = m.pixel_to_world(x * u.pix, y * u.pix)
    tx, ty = c.Tx.to_value(u.rad), c.Ty.to_value(u.rad)
    return np.degrees(np.arccos(np.cos(tx) * np.cos(ty))) * 3600


def test_model_map_matches_pure_model_at_pixels():
    m = make_map(roll=33.0, crval=(40.0, -25.0))
    f = f_corona_model(m, "koutchmy")
    assert isinstance(f, ASPIICSMap)
    assert f.meta["prod_id"] == "F-corona model"
    assert f.meta["bunit"] == "MSB"
    assert "Koutchmy" in f.meta["history"]
    ys, xs = np.array([5, 64, 100, 127]), np.array([3, 90, 17, 127])
    c = m.pixel_to_world(xs * u.pix, ys * u.pix)
    tx, ty = c.Tx.to_value(u.rad), c.Ty.to_value(u.rad)
    r = np.arccos(np.cos(tx) * np.cos(ty)) / m.rsun_obs.to_value(u.rad)
    pa = np.arctan2(-tx, ty)
    np.testing.assert_allclose(f.data[ys, xs], koutchmy_f_corona(r, pa), rtol=1e-6)
    a = f_corona_model(m, "allen", as_map=False)
    np.testing.assert_allclose(a[ys, xs], allen_f_corona(r), rtol=1e-6)
    with pytest.raises(ProcessingError, match="unknown F-corona model"):
        f_corona_model(m, "dust")


@pytest.mark.parametrize(
    ("node", "log_f1", "log_f2", "log_allen"),
    [(1.2, 2.90, 2.90, 2.80), (1.6, 2.25, 2.25, 2.24), (2.0, 1.91, 1.82, 1.93), (2.5, 1.66, 1.56, 1.65)],
)
def test_table_nodes_on_equator_and_pole(node, log_f1, log_f2, log_allen):
    """On an odd-size north-up grid the Sun is on a pixel centre; put r = node at 40 px."""
    n = 129
    h = make_map().meta.copy()
    h.update({"crpix1": (n + 1) / 2, "crpix2": (n + 1) / 2, "naxis1": n, "naxis2": n})
    probe = ASPIICSMap(np.zeros((n, n), np.float32), h)
    c = (n - 1) // 2
    h["rsun_arc"] = _rho_arcsec(probe, c + 40, c) / node
    m = ASPIICSMap(np.zeros((n, n), np.float32), h)
    f = f_corona_model(m).data
    eq, pole = 10 ** (log_f1 - 10), 10 ** (log_f2 - 10)
    assert f[c, c + 40] == pytest.approx(eq, rel=1e-5)  # west limb direction: equator
    assert f[c, c - 40] == pytest.approx(eq, rel=1e-5)  # east
    assert f[c + 40, c] == pytest.approx(pole, rel=1e-5)  # north pole
    assert f[c - 40, c] == pytest.approx(pole, rel=1e-5)  # south pole
    allen = f_corona_model(m, "allen").data
    for y, x in ((c + 40, c), (c, c - 40)):
        assert allen[y, x] == pytest.approx(10 ** (log_allen - 10), rel=1e-5)


def test_rotation_invariance():
    """A frame rolled by 90 deg sees the same F-corona at the same sky points."""
    m0 = make_map(roll=0.0)
    m90 = make_map(roll=90.0)
    f0 = f_corona_model(m0, as_map=False)
    f90 = f_corona_model(m90, as_map=False)
    # roll 90: pixel offset (dx, dy) -> world (-dy, dx) = pixel offset (-dy, dx) of the unrolled map
    c = (N - 1) / 2
    yy, xx = np.mgrid[0:N, 0:N]
    dx, dy = xx - c, yy - c
    x0 = np.rint(c - dy).astype(int)
    y0 = np.rint(c + dx).astype(int)
    np.testing.assert_allclose(f90, f0[y0, x0], rtol=2e-6)
    assert not np.allclose(f90, f0, rtol=1e-3, atol=0)  # the model is not circularly symmetric
    # and an arbitrary roll equals the pure model evaluated at the sky position of each pixel
    m = make_map(roll=-61.0)
    r, pa = helioprojective_polar(m)
    np.testing.assert_allclose(f_corona_model(m, as_map=False), koutchmy_f_corona(r, pa), rtol=1e-6)


def test_subtract_f_corona():
    data = np.full((N, N), 5e-8, np.float32)
    data[0, 0] = np.nan
    data[1, 1] = np.inf
    m = make_map(data=data)
    m = ASPIICSMap(m.data, m.meta, uncertainty=StdDevUncertainty(np.full((N, N), 1e-10, np.float32)))
    out = subtract_f_corona(m, model="allen")
    f = f_corona_model(m, "allen", as_map=False)
    np.testing.assert_allclose(out.data[2:, 2:], (data - f)[2:, 2:], rtol=1e-6)
    assert np.isnan(out.data[0, 0])
    assert np.isposinf(out.data[1, 1])
    assert out.mask[0, 0]
    assert out.meta["prod_id"] == "Total brightness"
    assert out.meta["level"] == "L3"
    assert out.meta["fcor_mod"] == "allen"
    assert out.meta["parent"] == m.meta["filename"]
    assert "F-corona removed: Allen" in out.meta["history"]
    assert out.meta["datamax"] == pytest.approx(np.nanmax(out.data[np.isfinite(out.data)]))
    np.testing.assert_array_equal(out.sigma, m.sigma)
    with pytest.raises(ProcessingError, match="already"):
        subtract_f_corona(out)
    with pytest.raises(ProcessingError, match="Fe XIV"):
        subtract_f_corona(make_map(filter="Fe XIV"))
    pb = make_map(PROD_ID="Polarized brightness", LEVEL="L3")
    with pytest.raises(ProcessingError, match="total brightness only"):
        subtract_f_corona(pb)


def test_products_carry_official_names():
    """bt/fe/pb products are named per SPEC §2 from their input's cycle + sequence and date."""
    from aspiics.io import parse_filename, product_filename

    meta = {
        "filename": "aspiics_wb_l3_1320404D00021_20250812T181432.fits",
        "date-obs": "2025-08-12T18:14:32.3",
    }
    name = product_filename("bt", meta)
    assert name == "aspiics_bt_l3_1320404D0002_20250812T181432.fits"
    assert parse_filename(name).level == 3
    assert product_filename("bt", {"date-obs": "2025-08-12T18:14:32"}) is None
    assert product_filename("bt", {"filename": "other.fits", "date-obs": "2025-08-12T18:14:32"}) is None
