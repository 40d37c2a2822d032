from datetime import datetime

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from aspiics.exceptions import FilenameError, HeaderError, InputFileError, OutputExistsError, ProcessingError
from aspiics.io import (
    ASPIICSFilename,
    atomic_output,
    check_readable,
    format_filename,
    group_acquisitions,
    parse_filename,
    read_header,
    write_fits,
)

from .helpers import l1_header


def test_parse_spec_examples():
    f = parse_filename("aspiics_wb_l1_1320404D000212_20250812T181424.fits")
    assert f.code == "wb"
    assert f.level == 1
    assert f.filter.name == "Wideband"
    assert f.cycle == "1320404D"
    assert f.sequence == "0002"
    assert f.acquisition == 1
    assert f.exposure == 2
    assert f.acquisition_id == "1320404D00021"
    assert f.sequence_id == "1320404D0002"
    assert f.time == datetime(2025, 8, 12, 18, 14, 24)
    l3 = parse_filename("/some/dir/aspiics_pb_l3_1320607D0001_20250812T201607.fits")
    assert (l3.code, l3.level, l3.identifier, l3.exposure) == ("pb", 3, "1320607D0001", None)
    assert l3.filter is None


def test_polarizer_codes_follow_flight_naming():
    assert parse_filename("aspiics_p1_l2_1320404D000211_20250812T181424.fits").filter.name == "Polarizer 60"
    assert parse_filename("aspiics_p2_l2_1320404D000211_20250812T181424.fits").filter.name == "Polarizer 0"
    assert parse_filename("aspiics_p3_l2_1320404D000211_20250812T181424.fits").filter.name == "Polarizer 120"


def test_hex_ids_are_case_insensitive_and_normalised():
    f = parse_filename("aspiics_fe_l2_abcdef0100ff31_20250812T181424.fits")
    assert f.identifier == "ABCDEF0100FF31"
    assert f.name == "aspiics_fe_l2_ABCDEF0100FF31_20250812T181424.fits"


@pytest.mark.parametrize(
    "name",
    [
        "aspiics_wb_l1_1320404D00021_20250812T181424.fits",  # 13 characters at level 1
        "aspiics_wb_l1_1320404G000212_20250812T181424.fits",  # not hex
        "aspiics_wb_l1_1320404D000272_20250812T181424.fits",  # acquisition digit 7
        "aspiics_wb_l1_1320404D000214_20250812T181424.fits",  # exposure digit 4
        "aspiics_xx_l1_1320404D000212_20250812T181424.fits",  # unknown filter code
        "aspiics_bt_l2_1320404D000212_20250812T181424.fits",  # L3 product at level 2
        "aspiics_wb_l4_1320404D000212_20250812T181424.fits",  # level 4
        "aspiics_wb_l1_1320404D000212_20251312T181424.fits",  # month 13
        "lasco_c2_20250812.fits",
    ],
)
def test_parse_rejects_bad_names(name):
    with pytest.raises(FilenameError, match="aspiics|identifier|digit|code|time|level"):
        parse_filename(name)


def test_format_filename():
    assert (
        format_filename("Wideband", 1, "1320404d000212", "2025-08-12T18:14:24.512")
        == "aspiics_wb_l1_1320404D000212_20250812T181424.fits"
    )
    assert format_filename("Polarizer 0", 2, "1320404D000211", datetime(2025, 8, 12)).startswith(
        "aspiics_p2_l2_"
    )
    assert format_filename("pb", 3, "1320607D0001", "2025-08-12T20:16:07") == (
        "aspiics_pb_l3_1320607D0001_20250812T201607.fits"
    )
    with pytest.raises(HeaderError):
        format_filename("Unknownish", 1, "1320404D000212", "2025-08-12T18:14:24")


def test_replace_to_level2():
    l1 = parse_filename("aspiics_he_l1_1320404D000212_20250812T181424.fits")
    assert l1.replace(level=2).name == "aspiics_he_l2_1320404D000212_20250812T181424.fits"


@given(
    cycle=st.integers(0, 16**8 - 1),
    seq=st.integers(0, 16**4 - 1),
    acq=st.integers(1, 6),
    exp=st.integers(1, 3),
    code=st.sampled_from(["wb", "fe", "he", "p1", "p2", "p3", "unknown"]),
    level=st.sampled_from([1, 2]),
    seconds=st.integers(0, 10**9),
)
def test_round_trip(cycle, seq, acq, exp, code, level, seconds):
    ident = f"{cycle:08X}{seq:04X}{acq}{exp}"
    time = datetime.fromtimestamp(1.6e9 + seconds).replace(microsecond=0)
    name = ASPIICSFilename(time, code, level, ident).name
    parsed = parse_filename(name)
    assert parsed.name == name
    assert (parsed.identifier, parsed.code, parsed.level, parsed.time) == (ident, code, level, time)
    assert parsed.acquisition_id == ident[:13]


def _write_frame(folder, code, ident, exptime, filt, date="20250812T181424"):
    name = f"aspiics_{code}_l1_{ident}_{date}.fits"
    header = l1_header(FILENAME=name, EXPTIME=exptime, FILTER=filt)
    write_fits(folder / name, np.zeros((8, 8), np.int16), header)
    return folder / name


def test_group_acquisitions(tmp_path):
    files = [
        _write_frame(tmp_path, "wb", "1320404D000213", 10.0047, "Wideband"),
        _write_frame(tmp_path, "wb", "1320404D000211", 0.1003, "Wideband"),
        _write_frame(tmp_path, "wb", "1320404D000212", 1.0001, "Wideband"),
        _write_frame(tmp_path, "p1", "1320404D000221", 5.0, "Polarizer 60"),
        _write_frame(tmp_path, "fe", "ABCDEF01000A31", 3.0, "Fe XIV"),
        _write_frame(tmp_path, "fe", "ABCDEF01000A32", 0.3, "Fe XIV"),
    ]
    groups = group_acquisitions(files)
    assert [g.acquisition_id for g in groups] == ["1320404D00021", "1320404D00022", "ABCDEF01000A3"]
    wb, p1, fe = groups
    assert wb.filter.name == "Wideband"
    assert wb.complete
    assert wb.exposure_times == (0.1003, 1.0001, 10.0047)
    assert [p.name[14:28] for p in wb.members] == ["1320404D000211", "1320404D000212", "1320404D000213"]
    assert len(p1) == 1
    assert not p1.complete
    assert fe.exposure_times == (0.3, 3.0)


def test_group_rejects_mixed_filters(tmp_path):
    files = [
        _write_frame(tmp_path, "wb", "1320404D000211", 0.1, "Wideband"),
        _write_frame(tmp_path, "fe", "1320404D000212", 1.0, "Fe XIV"),
    ]
    with pytest.raises(ProcessingError, match="mixes filters"):
        group_acquisitions(files)


def test_group_rejects_duplicate_exposure(tmp_path):
    a = _write_frame(tmp_path, "wb", "1320404D000211", 0.1, "Wideband")
    b = _write_frame(tmp_path, "wb", "1320404D000211", 0.1, "Wideband", date="20250812T181430")
    with pytest.raises(ProcessingError, match="same exposure twice"):
        group_acquisitions([a, b])


def test_atomic_write_refuses_overwrite(tmp_path):
    path = tmp_path / "out.fits"
    header = l1_header()
    write_fits(path, np.ones((4, 4), np.int16), header)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_fits(path, np.zeros((4, 4), np.int16), header)
    assert path.read_bytes() == before
    write_fits(path, np.zeros((4, 4), np.int16), header, overwrite=True)
    assert np.all(fits.getdata(path) == 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]  # no temporary left


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "x.fits"
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_never_clobbers_a_file_that_appears(tmp_path):
    path = tmp_path / "x.fits"
    with pytest.raises(OutputExistsError, match="appeared"), atomic_output(path) as tmp:
        tmp.write_bytes(b"mine")
        path.write_bytes(b"theirs")
    assert path.read_bytes() == b"theirs"


def test_write_keeps_raw_integers(tmp_path):
    path = tmp_path / "raw.fits"
    data = np.array([[-32768, 0], [16383, 7]], dtype=np.int16)
    write_fits(path, data, l1_header())
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert hdul[0].data.dtype.kind == "i"
        np.testing.assert_array_equal(hdul[0].data, data)


def test_read_header_errors(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_header(tmp_path / "missing.fits")
    text = tmp_path / "notes.fits"
    text.write_text("this is not FITS")
    with pytest.raises(InputFileError, match="not a readable FITS"):
        read_header(text)


def test_check_readable_detects_truncation(tmp_path):
    path = tmp_path / "cut.fits"
    write_fits(path, np.ones((256, 256), np.int16), l1_header())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputFileError, match="truncated|not a readable"):
        check_readable(path)


def _l2_map(shape=(64, 64)):
    from astropy.nddata import StdDevUncertainty

    from aspiics import ASPIICSMap

    rng = np.random.default_rng(3)
    data = rng.uniform(1e-9, 1e-7, shape).astype(np.float32)
    data[0, :5] = np.nan
    data[10, 10] = np.inf
    sigma = (0.01 * data).astype(np.float32)
    mask = ~np.isfinite(data)
    mask[20, 20] = True  # a flag that is not implied by the data
    header = l1_header(
        LEVEL="L2", BUNIT="MSB", BLANK=None, FILENAME="aspiics_wb_l2_1320404D000212_20250812T181424.fits"
    )
    header["HISTORY"] = "aspiics L2: first step"
    header["HISTORY"] = "aspiics L2: second step"
    return ASPIICSMap(data, header, uncertainty=StdDevUncertainty(sigma), mask=mask)


def test_write_and_read_map_round_trip(tmp_path):
    import sunpy.map

    from aspiics import ASPIICSMap
    from aspiics.io import read_map, write_map

    m = _l2_map()
    path = write_map(m, tmp_path / "aspiics_wb_l2_1320404D000212_20250812T181424.fits")
    back = read_map(path)
    assert isinstance(back, ASPIICSMap)
    np.testing.assert_array_equal(back.data, m.data)
    np.testing.assert_array_equal(back.sigma, m.sigma)
    np.testing.assert_array_equal(back.mask, m.mask)
    assert back.meta["crota"] == m.meta["crota"]  # the official keyword is kept in the file
    assert "second step" in back.meta["history"]
    # Plain sunpy sees one official L2 image: NaN missing, +Inf saturated.
    plain = sunpy.map.Map(path)
    assert isinstance(plain, ASPIICSMap)
    assert plain.data.dtype.newbyteorder("=") == np.float32
    assert np.isnan(plain.data[0, 0])
    assert np.isposinf(plain.data[10, 10])
    with fits.open(path) as hdul:
        assert hdul[0].header["BITPIX"] == -32
        assert "BLANK" not in hdul[0].header


def test_map_save_refuses_overwrite(tmp_path):
    m = _l2_map()
    path = tmp_path / "x.fits"
    m.save(path)
    with pytest.raises(OutputExistsError):
        m.save(path)
    m.save(path, overwrite=True)
    from aspiics import ASPIICSMap

    assert ASPIICSMap.read(path).sigma is not None
