import astropy.units as u
import numpy as np
import pytest

from aspiics.fcorona import (
    ALLEN_LOG_F,
    ALLEN_R,
    KOUTCHMY_LOG_F1,
    KOUTCHMY_LOG_F2,
    KOUTCHMY_R,
    allen_f_corona,
    koutchmy_f_corona,
)


def test_koutchmy_nodes_equator_and_pole():
    np.testing.assert_allclose(koutchmy_f_corona(KOUTCHMY_R, np.pi / 2), 10**KOUTCHMY_LOG_F1, rtol=1e-12)
    np.testing.assert_allclose(koutchmy_f_corona(KOUTCHMY_R, 270 * u.deg), 10**KOUTCHMY_LOG_F1, rtol=1e-12)
    np.testing.assert_allclose(koutchmy_f_corona(KOUTCHMY_R, 0.0), 10**KOUTCHMY_LOG_F2, rtol=1e-12)
    np.testing.assert_allclose(koutchmy_f_corona(KOUTCHMY_R, 180 * u.deg), 10**KOUTCHMY_LOG_F2, rtol=1e-12)
    assert koutchmy_f_corona(2.0, 90 * u.deg) == pytest.approx(10 ** (1.91 - 10))
    assert koutchmy_f_corona(2.0 * u.R_sun, 0 * u.deg) == pytest.approx(10 ** (1.82 - 10))


def test_koutchmy_mixing_is_linear_in_angle_and_log():
    # 45° from the pole: weight 1/2 in log space
    expected = 10 ** (0.5 * (1.66 + 1.56) - 10)
    assert koutchmy_f_corona(2.5, 45 * u.deg) == pytest.approx(expected, rel=1e-12)
    assert koutchmy_f_corona(2.5, -45 * u.deg) == pytest.approx(expected, rel=1e-12)
    assert koutchmy_f_corona(2.5, 135 * u.deg) == pytest.approx(expected, rel=1e-12)
    # between nodes: linear in log B
    assert koutchmy_f_corona(1.8, 90 * u.deg) == pytest.approx(10 ** ((2.25 + 1.91) / 2 - 10), rel=1e-12)


def test_koutchmy_broadcast_and_dtype():
    r = np.linspace(1.1, 3.5, 20, dtype=np.float32)[:, None]
    pa = np.linspace(0, 2 * np.pi, 7, dtype=np.float32)[None, :]
    out = koutchmy_f_corona(r, pa)
    assert out.shape == (20, 7)
    assert out.dtype == np.float32
    assert np.all(np.diff(out, axis=0) < 0)
    np.testing.assert_allclose(out, koutchmy_f_corona(r.astype(float), pa.astype(float)), rtol=1e-5)


def test_extrapolation_beyond_table():
    assert koutchmy_f_corona(12.0, np.pi / 2) < koutchmy_f_corona(10.0, np.pi / 2)
    assert allen_f_corona(15.0) < allen_f_corona(10.0)


def test_allen_nodes():
    np.testing.assert_allclose(allen_f_corona(ALLEN_R), 10**ALLEN_LOG_F, rtol=1e-12)
    assert allen_f_corona(2.0) == pytest.approx(10 ** (1.93 - 10))
    assert allen_f_corona(3.0 * u.R_sun) == pytest.approx(10 ** (1.43 - 10))
