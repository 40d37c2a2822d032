import logging
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import NDData, StdDevUncertainty
from astropy.wcs import WCS
from reproject import reproject_interp
from scipy import ndimage

from aspiics.exceptions import ProcessingError
from aspiics.resample import (
    PixelMap,
    affine_resample,
    fill_invalid,
    find_affine_mapping,
    find_pixel_mapping,
    frames_match,
    reproject_affine,
)

PLATE = 2.8172


def make_header(n, crval=(0.0, 0.0), rot_deg=0.0, shift=(0.0, 0.0), cdelt=PLATE, proj="TAN", **extra):
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = n
    h["NAXIS2"] = n
    h["CTYPE1"], h["CTYPE2"] = f"HPLN-{proj}", f"HPLT-{proj}"
    h["CUNIT1"] = h["CUNIT2"] = "arcsec"
    h["CDELT1"] = h["CDELT2"] = cdelt
    h["CRPIX1"] = (n + 1) / 2 + shift[0]
    h["CRPIX2"] = (n + 1) / 2 + shift[1]
    h["CRVAL1"], h["CRVAL2"] = crval
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = c, -s, s, c
    for k, v in extra.items():
        h[k] = v
    return h


def world_arcsec(wcs, shape):
    yy, xx = np.indices(shape)
    lon, lat = wcs.pixel_to_world_values(xx, yy)
    return ((lon + 180.0) % 360.0 - 180.0) * 3600.0, lat * 3600.0


def scene(wcs, shape):
    lon, lat = world_arcsec(wcs, shape)
    r = np.hypot(lon, lat) / 960.0
    phi = np.arctan2(lat, lon)
    return (r + 0.5) ** -3 * (1 + 0.3 * np.cos(4 * phi)) * (1 + 0.1 * np.sin(lon / 11.0) * np.cos(lat / 13.0))


@pytest.fixture
def pair():
    n = 256
    h_in = make_header(n, crval=(40.0, -25.0), rot_deg=0.2)
    h_out = make_header(n, rot_deg=0.7, shift=(0.37, -0.21))
    img = scene(WCS(h_in), (n, n))
    return n, h_in, h_out, img


def test_affine_detected_and_accurate(pair):
    n, h_in, h_out, img = pair
    matrix, _offset, residual = find_affine_mapping(WCS(h_in), WCS(h_out), (n, n), (n, n))
    assert residual < 1e-3
    np.testing.assert_allclose(np.linalg.det(matrix), 1.0, atol=1e-6)
    truth = scene(WCS(h_out), (n, n))
    out, fp = reproject_affine((img, h_in), h_out)
    ref, fp_ref = reproject_interp((img, h_in), h_out, order="bicubic")
    inner = np.zeros((n, n), bool)
    inner[6:-6, 6:-6] = True
    ok = inner & (fp > 0) & (fp_ref > 0)
    err = np.median(np.abs(out - truth)[ok] / truth[ok])
    err_ref = np.median(np.abs(ref - truth)[ok] / truth[ok])
    assert err < 1e-4
    # same spline: equal errors, up to the effect of the ~1e-5 px affine residual (~1e-7 here)
    assert err <= 1.05 * err_ref + 2e-7


def test_signature_and_dtypes_match_reproject(pair):
    n, h_in, h_out, img = pair
    out, fp = reproject_affine((img, h_in), h_out)
    ref, fp_ref = reproject_interp((img, h_in), h_out, order="bicubic")
    assert out.shape == ref.shape
    assert out.dtype == ref.dtype
    assert fp.shape == fp_ref.shape
    assert fp.dtype == fp_ref.dtype
    assert np.mean(fp == fp_ref) > 0.999
    only = reproject_affine((img, WCS(h_in)), WCS(h_out), shape_out=(n, n), return_footprint=False)
    assert isinstance(only, np.ndarray)
    np.testing.assert_allclose(only, out, equal_nan=True)
    # HDU and NDData-like inputs, bicubic given by name
    hdu_out = reproject_affine(fits.PrimaryHDU(img, h_in), h_out, order="bicubic")[0]
    nd_out = reproject_affine(NDData(img, wcs=WCS(h_in)), h_out)[0]
    np.testing.assert_allclose(hdu_out, out, equal_nan=True)
    np.testing.assert_allclose(nd_out, out, equal_nan=True)
    # broadcasting over a leading axis, like reproject
    stack, fps = reproject_affine((np.stack([img, 2 * img]), h_in), h_out, shape_out=(2, n, n))
    assert stack.shape == (2, n, n)
    assert fps.shape == (2, n, n)
    np.testing.assert_allclose(stack[1], 2 * out, equal_nan=True)


def test_float32_path(pair):
    _, h_in, h_out, img = pair
    out, fp = reproject_affine((img.astype(np.float32), h_in), h_out)
    ref, _ = reproject_affine((img, h_in), h_out)
    assert out.dtype == np.float32
    assert fp.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, equal_nan=True)


def test_nan_and_inf_restored_without_poisoning(pair):
    n, h_in, h_out, img = pair
    lon, lat = world_arcsec(WCS(h_in), (n, n))
    r_in = np.hypot(lon, lat) / PLATE
    occ = img.copy()
    occ[r_in < 40] = np.nan  # occulter
    occ[(r_in > 41) & (r_in < 50) & (lon > 0)] = np.inf  # saturated crescent
    occ[200, 30] = np.nan  # isolated bad pixel
    clean, _ = reproject_affine((img, h_in), h_out)
    out, fp = reproject_affine((occ, h_in), h_out)
    lon_o, lat_o = world_arcsec(WCS(h_out), (n, n))
    r_out = np.hypot(lon_o, lat_o) / PLATE
    assert np.all(np.isnan(out[r_out < 39.5]))
    assert np.all(
        np.isfinite(out[(r_out > 40.6) & (r_out < 41)]) | np.isinf(out[(r_out > 40.6) & (r_out < 41)])
    )
    sat = (r_out > 42) & (r_out < 49) & (lon_o > 2 * PLATE)
    assert np.all(np.isposinf(out[sat]))
    assert np.array_equal(fp > 0, ~np.isnan(out))
    # valid data beyond 3 px of every invalid region are unchanged (no NaN poisoning)
    invalid_out = reproject_interp((~np.isfinite(occ) * 1.0, h_in), h_out, order="nearest-neighbor")[0] > 0
    far = ~ndimage.binary_dilation(invalid_out, iterations=3) & np.isfinite(clean)
    np.testing.assert_allclose(out[far], clean[far], rtol=1e-3)


def test_fill_invalid_is_finite_and_linear():
    y, x = np.mgrid[:64, :64].astype(float)
    plane = 0.5 * x + 0.25 * y + 3
    holed = plane.copy()
    holed[20:40, 25:35] = np.nan
    holed[0, 0] = np.inf
    filled = fill_invalid(holed)
    assert np.all(np.isfinite(filled))
    # the odd mirror continues a plane exactly within the reflection depth
    np.testing.assert_allclose(filled[20:40, 25:35], plane[20:40, 25:35], atol=1e-9)
    assert np.all(fill_invalid(np.full((4, 4), np.nan)) == 0)


def test_uncertainty_resampled(pair):
    _n, h_in, h_out, img = pair
    occ = img.copy()
    occ[100:150, 100:150] = np.nan
    sigma = np.full_like(img, 0.01)
    sigma[100:150, 100:150] = np.nan
    out, fp, sig = reproject_affine((occ, h_in), h_out, uncertainty=StdDevUncertainty(sigma))
    assert sig.shape == out.shape
    assert np.array_equal(np.isnan(sig), np.isnan(out))
    np.testing.assert_allclose(sig[fp > 0], 0.01, rtol=1e-6)


def test_polynomial_path_for_recentring():
    n = 512
    h_in = make_header(n, crval=(700.0, 500.0), rot_deg=5.0)
    h_out = make_header(n)
    pmap = find_pixel_mapping(WCS(h_in), WCS(h_out), (n, n), (n, n), tolerance=1e-5)
    assert pmap is not None
    assert not pmap.is_affine
    assert pmap.residual < 1e-5
    img = scene(WCS(h_in), (n, n))
    out, fp = reproject_affine((img, h_in), h_out, tolerance=1e-5)
    truth = scene(WCS(h_out), (n, n))
    ok = fp > 0
    ok[:6], ok[-6:], ok[:, :6], ok[:, -6:] = False, False, False, False
    assert np.median(np.abs(out - truth)[ok] / truth[ok]) < 1e-4


def test_non_affine_falls_back_and_logs(caplog):
    n = 64
    h_in = make_header(n, cdelt=3600.0)  # 64 degrees wide, gnomonic
    h_out = make_header(n, cdelt=3000.0, proj="CAR", rot_deg=10)
    img = np.ones((n, n))
    img[30:34, 30:34] = np.nan
    with caplog.at_level(logging.INFO, logger="aspiics.resample"):
        out, fp = reproject_affine((img, h_in), h_out)
    assert any("falling back to reproject_interp" in r.getMessage() for r in caplog.records)
    assert find_pixel_mapping(WCS(h_in), WCS(h_out), (n, n), (n, n)) is None
    np.testing.assert_allclose(out[fp > 0], 1.0, atol=1e-9)
    assert np.isnan(out[32, 32])


def test_no_overlap_raises():
    h_in = make_header(64)
    h_out = make_header(64, crval=(5000.0, 0.0))
    with pytest.raises(ProcessingError, match="does not overlap"):
        reproject_affine((np.ones((64, 64)), h_in), h_out)


def test_frames_match_observers():
    obs = {"HGLN_OBS": 0.0, "HGLT_OBS": 0.0, "DSUN_OBS": 1.47e11, "RSUN_REF": 6.96e8}
    h1 = make_header(64, **{"DATE-OBS": "2025-04-01T12:00:00", "MJD-OBS": 60766.5, **obs})
    h2 = make_header(64, **{"DATE-OBS": "2025-04-01T12:00:05", "MJD-OBS": 60766.50005787, **obs})
    h3 = make_header(
        64, **{"DATE-OBS": "2025-04-01T12:00:05", "MJD-OBS": 60766.50005787, **obs, "HGLN_OBS": 10.0}
    )
    assert frames_match(WCS(h1), WCS(h2))
    assert not frames_match(WCS(h1), WCS(h3))
    # different observer: the high-level (sunpy, spherical screen) path gives finite off-limb values
    img = np.ones((64, 64))
    _out, fp = reproject_affine((img, h1), h3, tolerance=0.05)
    assert fp.mean() > 0.5


def test_affine_resample_identity():
    img = np.random.default_rng(0).random((32, 40))
    out, fp = affine_resample(img, np.eye(2), [0.0, 0.0], img.shape)
    np.testing.assert_allclose(out, img, atol=1e-12)
    assert fp.all()
    assert "affine" in repr(PixelMap(np.eye(2), [0, 0]))


def test_speed_vs_reproject_interp():
    n = 1024
    h_in = make_header(n, crval=(40.0, -25.0), rot_deg=0.2)
    h_out = make_header(n, rot_deg=0.7, shift=(0.37, -0.21))
    img = scene(WCS(h_in), (n, n))
    reproject_affine((img[:64, :64], make_header(64)), make_header(64))  # warm-up
    t0 = time.perf_counter()
    reproject_affine((img, h_in), h_out)
    t_aff = time.perf_counter() - t0
    t0 = time.perf_counter()
    reproject_interp((img, h_in), h_out, order="bicubic")
    t_ref = time.perf_counter() - t0
    assert t_ref / t_aff > 3
