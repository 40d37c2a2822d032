import numpy as np
import pytest

from aspiics.optics import vignetting, vignetting_limits

PS = 2.8172 * 4  # plate scale of a 512² array covering the full field


def test_limits_release_numbers():
    w_min, w_max = vignetting_limits()
    assert w_min == pytest.approx(1059.42, abs=0.05)
    assert w_max == pytest.approx(1130.86, abs=0.05)


def _radius(shape, x0, y0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.hypot(xx - x0, yy - y0) * PS


def test_zero_inside_one_outside_and_monotonic():
    shape, x0, y0 = (512, 512), 250.3, 256.8
    v = vignetting(shape, x0, y0, plate_scale_arcsec=PS)
    assert v.dtype == np.float32
    assert v.shape == shape
    w = _radius(shape, x0, y0)
    w_min, w_max = vignetting_limits()
    assert np.all(v[w <= w_min] == 0)
    assert np.all(v[w >= w_max] == 1)
    zone = (w > w_min) & (w < w_max)
    assert zone.sum() > 100
    assert np.all((v[zone] > 0) & (v[zone] < 1))
    order = np.argsort(w.ravel())
    assert np.all(np.diff(v.ravel()[order]) >= -1e-6)


def test_half_transmission_at_the_chord_through_the_centre():
    # h = 0 -> beta = pi -> T = 1/2, at w = w_min + atan(r_ap / isd)
    w_min, _ = vignetting_limits()
    w_half = w_min + np.degrees(np.arctan(25.0 / 144348.0)) * 3600
    shape = (3, 400)
    x0 = 200 - w_half / PS  # pixel x=200 on row 1 sits at w_half
    v = vignetting(shape, x0, 1.0, plate_scale_arcsec=PS)
    assert v[1, 200] == pytest.approx(0.5, abs=1e-5)


def test_polar_fit_scales_the_io():
    ang = np.arange(0, 360, 2.0)
    fit = np.vstack([ang, np.full(ang.size, 1.01)])
    shape, x0, y0 = (512, 512), 255.5, 255.5
    v = vignetting(shape, x0, y0, plate_scale_arcsec=PS, polar_fit=fit)
    v_big = vignetting(shape, x0, y0, plate_scale_arcsec=PS, r_io_mm=1.758 * 1.01)
    np.testing.assert_allclose(v, v_big, atol=1e-6)
    # a polar dependence moves the edge with the polar angle
    fit2 = np.vstack([ang, 1.0 + 0.01 * np.cos(np.radians(ang))])
    v2 = vignetting(shape, x0, y0, plate_scale_arcsec=PS, polar_fit=fit2)
    row = int(y0 + 0.5)
    right = v2[row, 256 + 90 : 256 + 110]  # phi = 0: IO larger -> less transmission
    left = v2[row, 255 - 110 + 1 : 255 - 90 + 1][::-1]  # phi = 180: IO smaller
    assert right.sum() < left.sum()


def test_bad_polar_fit():
    with pytest.raises(ValueError, match="polar_fit"):
        vignetting((8, 8), 4, 4, plate_scale_arcsec=PS, polar_fit=np.ones(5))
