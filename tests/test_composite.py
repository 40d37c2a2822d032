"""Tests of aspiics.composite: map-level alignment, the exposure stack and the L3 HDR composite."""

import copy
import logging
import warnings

import astropy.units as u
import numpy as np
import pytest
import sunpy.map
from astropy.coordinates import SkyCoord
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import StdDevUncertainty
from scipy import ndimage
from sunpy.util.exceptions import SunpyMetadataWarning

from aspiics import ASPIICSMap
from aspiics.calibrate import calibrate_map
from aspiics.calibration import CalibrationSet
from aspiics.composite import (
    Composite,
    ExposureStack,
    align,
    composite,
    merge_exposures,
    reproject_map,
    sun_centered_wcs,
)
from aspiics.exceptions import AspiicsUserWarning, HeaderError, ProcessingError
from aspiics.io import parse_filename, read_map

simulate = pytest.importorskip("aspiics.simulate")
log = logging.getLogger(__name__)

N = 512
#: The reference processor's blend width and island size are pixels of the 2048² detector.
BLEND = 30 * N / 2048
ISLAND = int(350 * (N / 2048) ** 2)
SEAM = 40 * N / 2048


def _l2_maps(acq, release):
    cal = CalibrationSet(release.path)
    return [calibrate_map(ASPIICSMap(f.data, f.header), cal) for f in acq.frames]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A Wideband acquisition (0.1, 1, 10 s) of 512², calibrated to L2."""
    tmp = tmp_path_factory.mktemp("composite")
    release = simulate.make_calibration_set(tmp, shape=(N, N), seed=2)
    acq = simulate.simulate_acquisition(
        "Wideband", (0.1, 1.0, 10.0), shape=(N, N), calibration=release, seed=5
    )
    return acq, release, _l2_maps(acq, release)


@pytest.fixture(scope="module")
def merged(simulated):
    acq, _, maps = simulated
    fill = composite(maps, blend=BLEND, island_size=ISLAND)
    ivar = composite(fill.stack, weighting="inverse-variance")
    truth = acq.corona.render(fill.map.wcs, fill.map.data.shape, rsun_arcsec=fill.map.rsun_obs)
    return fill, ivar, truth


@pytest.fixture(scope="module")
def smooth_frame(tmp_path_factory):
    """A noise-free single exposure of 256² (for resampling accuracy)."""
    tmp = tmp_path_factory.mktemp("smooth")
    release = simulate.make_calibration_set(tmp, shape=(256, 256), seed=3)
    acq = simulate.simulate_acquisition(
        "Wideband", (1.0,), shape=(256, 256), calibration=release, seed=3, noise=False, banding=False,
        hot_pixels=False, tiles=False,
    )  # fmt: skip
    return acq, _l2_maps(acq, release)[0]


def _relerr(data, truth):
    return np.abs(data - truth) / truth


# ============================================================================= grids and reproject_map


def test_sun_centered_wcs(simulated):
    _, _, maps = simulated
    m = maps[-1]
    w, shape = sun_centered_wcs(m)
    assert shape == m.data.shape
    assert w.array_shape == shape
    np.testing.assert_allclose(w.wcs.crpix, [(N + 1) / 2, (N + 1) / 2])
    np.testing.assert_allclose(w.wcs.crval, [0, 0])
    np.testing.assert_allclose(w.wcs.get_pc(), np.eye(2))
    np.testing.assert_allclose(u.Quantity(w.wcs.cdelt, w.wcs.cunit[0]).to_value(u.arcsec), m.scale[0].value)
    # Sun centre at the image centre, for the map's own observer
    sun = SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=m.coordinate_frame)
    x, y = w.world_to_pixel(sun)
    np.testing.assert_allclose([x, y], [(N - 1) / 2, (N - 1) / 2], atol=1e-6)
    np.testing.assert_allclose(w.wcs.aux.dsun_obs, m.dsun.to_value(u.m), rtol=1e-9)
    w2, shape2 = sun_centered_wcs(m, shape=(100, 120), scale=5 * u.arcsec)
    assert shape2 == (100, 120)
    np.testing.assert_allclose(w2.wcs.crpix, [60.5, 50.5])
    np.testing.assert_allclose(u.Quantity(w2.wcs.cdelt, w2.wcs.cunit[0]).to_value(u.arcsec), [5, 5])


def test_reproject_map_keeps_class_mask_uncertainty_meta(simulated):
    acq, _, maps = simulated
    m = maps[-1]
    out = reproject_map(m)
    assert type(out) is ASPIICSMap
    assert out.data.dtype == np.float32
    assert out.sigma is not None
    assert out.sigma.shape == out.data.shape
    np.testing.assert_array_equal(out.mask, ~np.isfinite(out.data))
    assert np.isnan(out.sigma[out.mask]).all()
    assert np.isfinite(out.sigma[~out.mask]).all()
    # saturation is carried through as +Inf, missing as NaN
    assert np.isposinf(m.data).any()
    assert np.isposinf(out.data).any()
    assert np.isnan(out.data).any()
    for key in ("filter", "exptime", "filename", "level", "date-obs", "bunit", "hgln_obs", "dsun_obs"):
        assert out.meta[key] == m.meta[key]
    assert out.meta["crota"] == 0
    assert out.meta["naxis1"] == N
    assert out.meta["naxis2"] == N
    assert out.meta["crval1"] == 0
    assert out.meta["crval2"] == 0
    assert "reproject" in out.meta["history"]
    # sunpy reads the new grid: Sun centre at the image centre, north up
    np.testing.assert_allclose(u.Quantity(out.reference_pixel).value, [(N - 1) / 2] * 2)
    np.testing.assert_allclose(out.rotation_matrix, np.eye(2))
    # the IO centre follows the Sun: same helioprojective position on both grids
    io_old = m.wcs.pixel_to_world(m.meta["x_io"] - 1, m.meta["y_io"] - 1)
    io_new = out.wcs.pixel_to_world(out.meta["x_io"] - 1, out.meta["y_io"] - 1)
    assert io_old.separation(io_new) < 0.01 * u.arcsec
    # the result agrees with the truth rendered on the new grid
    truth = acq.corona.render(out.wcs, out.data.shape, rsun_arcsec=out.rsun_obs)
    ok = np.isfinite(out.data) & (truth.r > 1.2) & (truth.r < 2.9)
    valid = np.isfinite(m.data)
    native = acq.corona.render(m.wcs, m.data.shape, rsun_arcsec=m.rsun_obs)
    ok_in = valid & (native.r > 1.2) & (native.r < 2.9)
    assert np.median(_relerr(out.data[ok], truth.B[ok])) < 1.05 * np.median(
        _relerr(m.data[ok_in], native.B[ok_in])
    )
    # the stats describe the new data
    assert out.meta["datamedn"] == pytest.approx(float(np.median(out.data[np.isfinite(out.data)])), rel=1e-6)


def test_reproject_round_trip(smooth_frame):
    acq, m = smooth_frame
    there = reproject_map(m, "sun", shape_out=(320, 320))  # large enough for the rolled frame
    back = reproject_map(there, m)
    assert type(back) is ASPIICSMap
    assert back.meta["crota"] == pytest.approx(m.meta["crota"])
    assert back.meta["crpix1"] == pytest.approx(m.meta["crpix1"])
    ok = np.isfinite(back.data) & np.isfinite(m.data)
    assert ok.sum() > 0.99 * np.isfinite(m.data).sum()
    r = acq.corona.render(m.wcs, m.data.shape, rsun_arcsec=m.rsun_obs).r
    ok &= (r > 1.2) & (r < 2.9)  # outside the occulter shadow, where the brightness is not ~0
    err = _relerr(back.data[ok], m.data[ok])
    # two cubic-spline resamplings of a noise-free 256² frame (8x coarser than the detector)
    assert np.median(err) < 3e-3, np.median(err)
    assert np.percentile(err, 99) < 0.06  # steep gradients next to the occulter shadow


def test_reproject_onto_other_sunpy_map(simulated):
    """A wider-field map of another 'instrument' (same observer), made by sunpy."""
    acq, _, maps = simulated
    m = maps[-1]
    centre = SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=m.coordinate_frame)
    header = sunpy.map.make_fitswcs_header(
        (300, 320), centre, scale=u.Quantity([2.5 * m.scale[0], 2.5 * m.scale[1]]), rotation_angle=0 * u.deg
    )
    other = sunpy.map.Map(np.zeros((300, 320), dtype=np.float32), header)
    out = reproject_map(m, other)
    assert type(out) is ASPIICSMap
    assert out.data.shape == (300, 320)
    np.testing.assert_allclose(u.Quantity(out.scale).value, u.Quantity(other.scale).value)
    assert out.sigma is not None
    np.testing.assert_allclose(out.wcs.pixel_to_world_values(10, 20), other.wcs.pixel_to_world_values(10, 20))
    truth = acq.corona.render(out.wcs, out.data.shape, rsun_arcsec=out.rsun_obs)
    ok = np.isfinite(out.data) & (truth.r > 1.3) & (truth.r < 2.9)
    assert ok.sum() > 1000
    # a coarser grid: the cubic spline samples the noisy frame, the error stays at the noise level
    assert np.median(_relerr(out.data[ok], truth.B[ok])) < 0.02
    # and sunpy can use the result (e.g. a submap in world coordinates)
    frame = out.coordinate_frame
    sub = out.submap(
        SkyCoord(-1500 * u.arcsec, -1500 * u.arcsec, frame=frame),
        top_right=SkyCoord(1500 * u.arcsec, 1500 * u.arcsec, frame=frame),
    )
    assert isinstance(sub, ASPIICSMap)
    assert 0 < sub.data.size < out.data.size


def test_reproject_onto_other_observer(smooth_frame):
    """A grid seen from 30 deg away (e.g. a STEREO-like spacecraft): the observer keywords follow it."""
    from sunpy.coordinates import HeliographicStonyhurst

    _, m = smooth_frame
    observer = SkyCoord(30 * u.deg, 0 * u.deg, 0.97 * u.AU, frame=HeliographicStonyhurst(obstime=m.date))
    centre = SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame="helioprojective", observer=observer, obstime=m.date)
    header = sunpy.map.make_fitswcs_header((200, 200), centre, scale=[30, 30] * u.arcsec / u.pix)
    other = sunpy.map.Map(np.zeros((200, 200), dtype=np.float32), header)
    out = reproject_map(m, other)
    assert out.meta["hgln_obs"] == pytest.approx(other.observer_coordinate.lon.to_value(u.deg))
    assert out.meta["dsun_obs"] == pytest.approx(other.dsun.to_value(u.m))
    assert out.meta["rsun_arc"] == pytest.approx(other.rsun_obs.to_value(u.arcsec), rel=1e-3)
    assert "x_io" not in out.meta
    assert np.isfinite(out.data).sum() > 1000


def test_reproject_map_targets(smooth_frame):
    _, m = smooth_frame
    same = reproject_map(m, "longest")
    ok = np.isfinite(same.data) & np.isfinite(m.data)
    np.testing.assert_allclose(same.data[ok], m.data[ok], rtol=1e-5)
    w, _shape = sun_centered_wcs(m, shape=(128, 128), scale=8 * u.arcsec)
    assert reproject_map(m, w).data.shape == (128, 128)
    w.array_shape = None
    with pytest.raises(ProcessingError, match="shape_out"):
        reproject_map(m, w)
    assert reproject_map(m, w, shape_out=(64, 96)).data.shape == (64, 96)
    header = w.to_header()
    header["NAXIS1"], header["NAXIS2"] = 96, 64
    assert reproject_map(m, header).data.shape == (64, 96)
    with pytest.raises(ProcessingError, match="Unknown target"):
        reproject_map(m, "moon")
    with pytest.raises(TypeError):
        reproject_map(m, 42)
    # no overlap: a grid far off the Sun
    far = sunpy.map.make_fitswcs_header(
        (64, 64),
        SkyCoord(30000 * u.arcsec, 0 * u.arcsec, frame=m.coordinate_frame),
        scale=[5, 5] * u.arcsec / u.pix,
    )
    with pytest.raises(ProcessingError, match=m.meta["filename"]):
        reproject_map(m, sunpy.map.Map(np.zeros((64, 64)), far))


# ============================================================================= align / ExposureStack


def test_align_builds_exposure_stack(simulated):
    _, _, maps = simulated
    stack = align(maps[::-1])  # any input order
    assert isinstance(stack, ExposureStack)
    assert stack.data.shape == (3, N, N)
    assert stack.data.dtype == np.float32
    np.testing.assert_allclose(
        stack.exposure_times.to_value(u.s), sorted(m.exposure_time.value for m in maps)
    )
    assert stack.filenames == [m.meta["filename"] for m in maps]
    assert stack.filter.name == "Wideband"
    assert isinstance(stack.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(stack.mask, ~np.isfinite(stack.data))
    # the WCS: exposure time along the first array axis, helioprojective on the other two
    types = stack.array_axis_physical_types
    assert types[0] == ("time.duration",)
    assert "custom:pos.helioprojective.lon" in types[1]
    (times,) = stack.axis_world_coords("time.duration")
    np.testing.assert_allclose(times.to_value(u.s), stack.exposure_times.to_value(u.s))
    # slicing keeps the per-exposure metadata consistent
    last = stack[1:]
    assert isinstance(last, ExposureStack)
    assert last.filenames == stack.filenames[1:]
    np.testing.assert_allclose(last.exposure_times.value, stack.exposure_times.value[1:])
    one = stack[2]
    assert one.data.shape == (N, N)
    sun = one.wcs.world_to_pixel(SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=maps[-1].coordinate_frame))
    np.testing.assert_allclose([float(p) for p in sun], [(N - 1) / 2] * 2, atol=1e-6)
    # the celestial WCS follows a spatial crop
    crop = stack[:, 10:200, 30:300]
    np.testing.assert_allclose(crop.celestial_wcs.wcs.crpix, stack.celestial_wcs.wcs.crpix - [30, 10])
    # back to maps
    back = stack.maps
    assert [type(b) for b in back] == [ASPIICSMap] * 3
    assert back[2].meta["filename"] == maps[2].meta["filename"]
    assert back[2].sigma is not None


def test_align_longest_grid(simulated):
    _, _, maps = simulated
    stack = align(maps, target="longest")
    # the longest exposure is (almost) untouched on its own grid
    ok = np.isfinite(stack.data[2]) & np.isfinite(maps[2].data)
    np.testing.assert_allclose(stack.data[2][ok], maps[2].data[ok], rtol=1e-4)
    assert stack.celestial_wcs.wcs.crpix[0] == pytest.approx(maps[2].meta["crpix1"])


# ============================================================================= the composite


def test_composite_accuracy_fill(simulated, merged):
    fill, _, truth = merged
    out, stack = fill.map, fill.stack
    ring = (truth.r >= 1.2) & (truth.r <= 2.9)
    covered = ring & (~np.isnan(stack.data)).any(axis=0)
    # every pixel of 1.2-2.9 Rsun that an exposure covers is in the composite
    assert np.count_nonzero(covered & np.isnan(out.data)) == 0
    ok = covered & np.isfinite(out.data)
    err = _relerr(out.data, truth.B)
    comp = np.median(err[ok])
    singles = []
    for k in range(stack.data.shape[0]):
        own = ring & np.isfinite(stack.data[k])
        singles.append(np.median(_relerr(stack.data[k][own], truth.B[own])))
    best = int(np.argmin(singles))
    log.info("fill: composite %.5f, singles %s, ratio %.3f", comp, np.round(singles, 5), comp / singles[best])
    assert comp <= 1.1 * singles[best]
    # on the best exposure's own area the composite is as good as it
    own = ring & np.isfinite(stack.data[best]) & ok
    assert np.median(err[own]) <= 1.05 * singles[best]
    # no seam: near the blend zones the error is no worse than elsewhere, and not biased
    w = fill.weights
    seams = ((w > 0) & (w < 1)).any(axis=0)
    dominant = np.argmax(w, axis=0)
    seams[:, 1:] |= dominant[:, 1:] != dominant[:, :-1]
    seams[1:, :] |= dominant[1:, :] != dominant[:-1, :]
    seams &= np.isfinite(out.data) & (w.sum(axis=0) > 0)
    near = ndimage.distance_transform_edt(~seams) <= SEAM
    e_near, e_else = np.median(err[ok & near]), np.median(err[ok & ~near])
    log.info(
        f"seams: within {SEAM:.0f} px {e_near:.5f} ({np.count_nonzero(ok & near)} px), elsewhere {e_else:.5f}"
    )
    assert e_near <= 1.1 * e_else
    signed = (out.data - truth.B) / truth.B
    assert abs(np.median(signed[ok & near])) < 0.1 * e_near
    # the weights sum to 1 where the composite is valid
    valid = np.isfinite(out.data)
    np.testing.assert_allclose(w.sum(axis=0)[valid], 1, atol=1e-5)


def test_composite_inverse_variance_beats_single(simulated, merged):
    fill, ivar, truth = merged
    stack = fill.stack
    ring = (truth.r >= 1.2) & (truth.r <= 2.9)
    err = _relerr(ivar.map.data, truth.B)
    err_fill = _relerr(fill.map.data, truth.B)
    ok = ring & np.isfinite(ivar.map.data) & np.isfinite(fill.map.data)
    singles = []
    for k in range(stack.data.shape[0]):
        own = ring & np.isfinite(stack.data[k])
        singles.append(np.median(_relerr(stack.data[k][own], truth.B[own])))
    best = int(np.argmin(singles))
    own = ring & np.isfinite(stack.data[best]) & np.isfinite(ivar.map.data)
    log.info(
        "inverse-variance: %.5f overall (fill %.5f); on the best exposure's area %.5f vs %.5f",
        np.median(err[ok]),
        np.median(err_fill[ok]),
        np.median(err[own]),
        singles[best],
    )
    assert np.median(err[own]) < singles[best]
    assert np.median(err[ok]) < np.median(err_fill[ok])
    assert np.median(err[ok]) <= 1.1 * singles[best]
    # its uncertainty is consistent with the errors
    z = (ivar.map.data - truth.B)[ok] / ivar.map.sigma[ok]
    assert 0.8 < 1.4826 * np.median(np.abs(z)) < 1.2


def test_composite_header_and_file(simulated, merged, tmp_path):
    _, _, maps = simulated
    fill, _, _ = merged
    out = fill.map
    assert isinstance(fill, Composite)
    assert type(out) is ASPIICSMap
    meta = out.meta
    assert meta["level"] == "L3"
    assert out.processing_level == 3
    assert meta["prod_id"] == "Total brightness"
    assert meta["bunit"] == "MSB"
    parsed = parse_filename(meta["filename"])
    assert parsed.level == 3
    assert parsed.code == "wb"
    assert parsed.identifier == maps[0].acquisition_id == out.acquisition_id
    assert parsed.time.strftime("%Y%m%dT%H%M%S") == maps[-1].date.strftime("%Y%m%dT%H%M%S")
    assert meta["parent"] == ", ".join(m.meta["filename"] for m in maps)
    assert meta["exptime"] == pytest.approx(sum(m.exposure_time.value for m in maps))
    assert meta["nexp"] == 3
    assert meta["date-obs"] == maps[-1].meta["date-obs"]
    assert meta["crval1"] == 0
    assert meta["crota"] == 0
    valid = np.isfinite(out.data)
    assert meta["datamedn"] == pytest.approx(float(np.median(out.data[valid])), rel=1e-6)
    assert meta["datamax"] == pytest.approx(float(out.data[valid].max()))
    assert "weighting 'fill'" in meta["history"]
    assert f"blend {BLEND}" in meta["history"]
    np.testing.assert_array_equal(out.mask, ~np.isfinite(out.data))
    assert fill.weights.shape == (3, N, N)
    # round trip through FITS: the long PARENT survives as a CONTINUE card
    path = out.save(tmp_path / meta["filename"])
    back = read_map(path)
    assert back.meta["parent"] == meta["parent"]
    assert back.meta["level"] == "L3"
    np.testing.assert_array_equal(back.mask, out.mask)
    np.testing.assert_allclose(back.sigma[valid], out.sigma[valid])


def test_merge_exposures_from_files(simulated, tmp_path):
    _, _, maps = simulated
    with warnings.catch_warnings():
        # calibrate writes a CONV_PHO comment too long for its card (not this module's header)
        warnings.simplefilter("ignore", VerifyWarning)
        paths = [m.save(tmp_path / m.meta["filename"]) for m in maps]
    out = merge_exposures(paths[::-1], target="longest", blend=BLEND, island_size=ISLAND)
    assert type(out) is ASPIICSMap
    assert out.meta["crpix1"] == pytest.approx(maps[-1].meta["crpix1"])
    assert out.meta["crota"] == pytest.approx(maps[-1].meta["crota"])
    assert np.isfinite(out.data).mean() > np.isfinite(maps[-1].data).mean()


def test_single_exposure(simulated):
    _, _, maps = simulated
    out = merge_exposures(maps[1:2])
    assert out.meta["nexp"] == 1
    assert out.meta["parent"] == maps[1].meta["filename"]


# ============================================================================= bad input


def _variant(m, data=None, **changes):
    meta = copy.deepcopy(m.meta)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    data = m.data if data is None else data
    unc = None if m.sigma is None or m.sigma.shape != data.shape else StdDevUncertainty(m.sigma)
    return ASPIICSMap(data, meta, uncertainty=unc)


def test_bad_mixed_filters(smooth_frame):
    _, m = smooth_frame
    other = _variant(m, filter="Fe XIV", exptime=0.5)
    with pytest.raises(ProcessingError, match="mixed filters"):
        align([m, other])


def test_bad_different_shapes(smooth_frame):
    _, m = smooth_frame
    small = _variant(m, data=m.data[:200, :200], exptime=0.5)
    with pytest.raises(ProcessingError, match="different shapes"):
        merge_exposures([m, small])


def test_bad_no_wcs(smooth_frame):
    _, m = smooth_frame
    with pytest.warns(SunpyMetadataWarning, match="CTYPE"):  # sunpy warns, and guesses HPLN-TAN
        bare = _variant(
            m, ctype1=None, ctype2=None, filename="aspiics_wb_l2_0133800C000612_20250812T181427.fits"
        )
    with pytest.raises(HeaderError, match="aspiics_wb_l2_0133800C000612_20250812T181427.fits.*CTYPE1"):
        align([m, bare])


def test_bad_no_overlap(smooth_frame):
    _, m = smooth_frame
    # pointing off by two field widths: the frame cannot be placed on the common grid
    far = _variant(m, crval1=m.meta["crval1"] + 2 * 256 * m.meta["cdelt1"], exptime=0.5, filename="far.fits")
    with pytest.raises(ProcessingError, match="far.fits"):
        align([m, far])
    # most of a field off: some pixels land on the grid, but the frames hardly overlap
    near = _variant(
        m, crval1=m.meta["crval1"] + 0.8 * 256 * m.meta["cdelt1"], exptime=0.5, filename="near.fits"
    )
    with pytest.raises(ProcessingError, match="near.fits.*overlap"):
        align([m, near])


def test_bad_all_nan_frame(smooth_frame):
    _, m = smooth_frame
    empty = _variant(m, data=np.full(m.data.shape, np.nan, np.float32), exptime=0.5, filename="empty.fits")
    with pytest.warns(AspiicsUserWarning, match="empty.fits"):
        stack = align([m, empty])
    assert stack.data.shape[0] == 1
    with pytest.raises(ProcessingError, match="empty"):
        align([empty])


def test_bad_level1(smooth_frame):
    acq, _ = smooth_frame
    l1 = ASPIICSMap(acq.frames[0].data, acq.frames[0].header)
    with pytest.raises(ProcessingError, match="calibrate"):
        align([l1])
