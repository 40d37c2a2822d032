"""Tests of aspiics.lines.line_emission."""

import numpy as np
import pytest
from astropy.nddata import StdDevUncertainty

from aspiics.exceptions import AspiicsUserWarning, ProcessingError
from aspiics.fcorona import f_corona_model, subtract_f_corona
from aspiics.lines import DEFAULT_CONTINUUM_RATIO, line_emission
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
