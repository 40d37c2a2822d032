import warnings

import astropy.units as u
import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
import sunpy.map
from astropy.io import fits
from astropy.wcs import WCS

import aspiics
from aspiics import ASPIICSMap
from aspiics.io import write_fits
from aspiics.units import MSB

from .helpers import l1_data, l1_header


@pytest.fixture
def l1_file(tmp_path):
    path = tmp_path / "aspiics_wb_l1_1320404D000212_20250812T181424.fits"
    write_fits(path, l1_data(), l1_header())
    return path


def test_map_factory_returns_aspiics_map(l1_file):
    m = sunpy.map.Map(l1_file)
    assert isinstance(m, ASPIICSMap)
    assert m.observatory == "Proba-3"
    assert m.instrument == "ASPIICS"
    assert m.nickname == "ASPIICS"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"INSTRUME": "aspiics", "TELESCOP": "Proba3", "OBSRVTRY": None}, True),
        ({"TELESCOP": "proba-3", "OBSRVTRY": "PROBA_3"}, True),
        ({"TELESCOP": None, "OBSRVTRY": None}, True),
        ({"INSTRUME": None, "DETECTOR": "ASPIICS"}, True),
        ({"INSTRUME": "LASCO", "DETECTOR": "C2", "TELESCOP": "SOHO", "OBSRVTRY": None}, False),
        ({"TELESCOP": "SOHO", "OBSRVTRY": None}, False),  # an ASPIICS-named instrument elsewhere
        ({"INSTRUME": "ASPIICS-like", "DETECTOR": None}, False),
    ],
)
def test_is_datasource_for(changes, expected):
    header = {k.lower(): v for k, v in l1_header(**changes).items()}
    assert ASPIICSMap.is_datasource_for(None, header) is expected


def test_non_aspiics_file_loads_as_generic(tmp_path):
    header = l1_header(
        INSTRUME="LASCO", DETECTOR="C2", TELESCOP="SOHO", OBSRVTRY=None, CROTA=None, BLANK=None
    )
    path = tmp_path / "lasco.fits"
    fits.PrimaryHDU(np.ones((16, 16), np.float32), header).writeto(path)
    m = sunpy.map.Map(path)
    assert not isinstance(m, ASPIICSMap)
    assert isinstance(m, sunpy.map.GenericMap)


def test_properties(l1_file):
    m = sunpy.map.Map(l1_file)
    assert m.filter.name == "Wideband"
    assert m.filter.code == "wb"
    assert m.exposure_time == 1.000113 * u.s
    assert m.processing_level == 1
    assert u.allclose(m.aps_temperature, -15.2 * u.deg_C)
    assert m.exposure_id == "1320404D000212"
    assert m.acquisition_id == "1320404D00021"
    assert m.is_polarizer is False
    assert m.polarizer_angle is None
    assert u.allclose(m.rsun_obs, 948.2 * u.arcsec)
    assert m.unit == u.DN
    assert m.wavelength == 551 * u.nm
    # The release-1.0 IO centre of Wideband, 0-based.
    assert u.allclose(u.Quantity(m.io_center), [1002.43, 1027.04] * u.pix)


def test_polarizer_properties():
    header = l1_header(
        FILTER="Polarizer 60", POLAR=60.0, FILENAME="aspiics_p1_l1_1320404D000221_20250812T181424.fits"
    )
    m = ASPIICSMap(l1_data(), header)
    assert m.is_polarizer
    assert m.polarizer_angle == 60 * u.deg
    assert m.filter.code == "p1"
    assert m.plot_settings["cmap"] == "aspiics_p1"


def test_unknown_filter_is_not_guessed():
    m = ASPIICSMap(l1_data(), l1_header(FILTER="Unknown"))
    assert m.filter is None
    assert m.wavelength is None


def test_missing_aps_temperature_and_filename():
    m = ASPIICSMap(l1_data(), l1_header(APS_TEMP=None, FILENAME=None))
    assert m.aps_temperature is None
    assert m.exposure_id is None
    assert m.acquisition_id is None


def test_io_center_from_level2_header():
    header = l1_header(LEVEL="L2", X_IO=1003.43, Y_IO=1028.04, BUNIT="MSB", BLANK=None)
    m = ASPIICSMap(np.ones((2048, 2048), np.float32), header)
    assert u.allclose(u.Quantity(m.io_center), [1002.43, 1027.04] * u.pix)


def test_io_center_scales_with_frame_size():
    m = ASPIICSMap(l1_data(shape=(512, 512), blank_tile=16), l1_header())
    assert u.allclose(u.Quantity(m.io_center), [1002.43 / 4, 1027.04 / 4] * u.pix)


def test_observer_from_header(l1_file):
    m = sunpy.map.Map(l1_file)
    obs = m.observer_coordinate
    assert u.allclose(obs.lon, 0.012 * u.deg)
    assert u.allclose(obs.lat, 6.43 * u.deg)
    assert u.allclose(obs.radius, 1.5135e11 * u.m)


def test_crota_is_read_without_warnings(l1_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = sunpy.map.Map(l1_file)
        header = m.fits_header
        wcs = WCS(header, fix=False)
        _ = m.wcs
    assert "CROTA" not in header
    np.testing.assert_allclose(wcs.wcs.get_pc(), m.rotation_matrix, atol=1e-12)
    assert u.allclose(
        m.rotation_matrix,
        [[np.cos(np.radians(10)), -np.sin(np.radians(10))], [np.sin(np.radians(10)), np.cos(np.radians(10))]],
    )


def test_crota_without_pc_matrix():
    header = l1_header(PC1_1=None, PC1_2=None, PC2_1=None, PC2_2=None, CROTA=25.0)
    m = ASPIICSMap(l1_data(), header)
    angle = np.radians(25.0)
    np.testing.assert_allclose(
        m.rotation_matrix, [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    )
    assert m.fits_header["CROTA2"] == 25.0


def test_pc_matrix_is_authoritative_over_crota():
    m = ASPIICSMap(l1_data(), l1_header(CROTA=99.0))  # PC says 10 degrees
    np.testing.assert_allclose(m.rotation_matrix[1, 0], np.sin(np.radians(10)))


def test_l1_raw_dn_with_blank(l1_file):
    m = sunpy.map.Map(l1_file)
    assert m.data.dtype.kind == "i"
    assert m.mask.sum() == 64 * 64
    assert m.mask[:64, :64].all()
    assert np.all(m.data[~m.mask] == 500)


@pytest.mark.parametrize(("bzero", "bscale"), [(0, 1), (32768, 1), (0.0, 2.0), (100.0, 0.5)])
def test_l1_never_rescaled(tmp_path, bzero, bscale):
    """Raw integers come back whatever scaling keywords the file carries."""
    path = tmp_path / "scaled.fits"
    data = l1_data()
    data[100, 100] = 16383
    header = l1_header(BZERO=bzero, BSCALE=bscale)
    hdu = fits.PrimaryHDU(data, header, do_not_scale_image_data=True)
    hdu.writeto(path)
    m = sunpy.map.Map(path)
    assert m.data.dtype.kind == "i"
    assert m.data[100, 100] == 16383
    assert m.data[500, 500] == 500
    assert m.mask.sum() == 64 * 64
    assert "bzero" not in m.meta


def test_l1_trivial_scaling_keywords_in_memory():
    header = l1_header(BZERO=0, BSCALE=1)
    m = ASPIICSMap(l1_data(), header)
    assert m.mask.sum() == 64 * 64
    assert m.data[500, 500] == 500


def test_l2_nan_and_inf_are_masked():
    data = np.full((64, 64), 1e-8, np.float32)
    data[0, 0] = np.nan
    data[1, 1] = np.inf
    m = ASPIICSMap(data, l1_header(LEVEL="L2", BUNIT="MSB", BLANK=None, FILENAME=None))
    assert m.unit == MSB
    assert m.processing_level == 2
    assert m.mask.sum() == 2
    assert m.mask[0, 0]
    assert m.mask[1, 1]
    assert m.valid_mask.sum() == 64 * 64 - 2


def test_colormaps_registered():
    for code in ("wb", "fe", "he", "p1", "p2", "p3", "pb", "pa"):
        cmap = mpl.colormaps[f"aspiics_{code}"]
        rgb = cmap(np.linspace(0, 1, 64))[:, :3]
        if code != "pa":
            lightness = rgb @ [0.299, 0.587, 0.114]
            assert np.all(np.diff(lightness) > -1e-3), code  # monotonic: brightness reads right


def test_plot_and_peek(l1_file):
    m = sunpy.map.Map(l1_file)
    fig = plt.figure()
    ax = fig.add_subplot(projection=m)
    image = m.plot(axes=ax)
    assert image.get_cmap().name == "aspiics_wb"
    m.draw_limb(axes=ax)
    plt.close(fig)
    m.peek()
    plt.close("all")


def test_version():
    assert isinstance(aspiics.__version__, str)
