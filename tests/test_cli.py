import numpy as np
import pytest
from astropy.io import fits

from aspiics.cli import main
from aspiics.io import write_fits

from .helpers import l1_data, l1_header


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "aspiics_wb_l1_1320404D000212_20250812T181424.fits"
    write_fits(path, l1_data(shape=(128, 128), blank_tile=16), l1_header())
    return path


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "simulate", "demo"):
        assert command in out


@pytest.mark.parametrize("command", ["info", "simulate", "demo"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: aspiics " + command in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_info_table(good_file, capsys):
    assert main(["info", str(good_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["FILE", "LEVEL", "FILTER", "EXPTIME"]
    row = lines[1].split()
    assert row[0] == good_file.name
    assert row[1] == "L1"
    assert row[2] == "Wideband"
    assert row[3] == "1"
    assert "128×128" in lines[1]


def _bad_files(tmp_path, good_file):
    missing = tmp_path / "missing.fits"
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n" * 10)
    truncated = tmp_path / "truncated.fits"
    raw = good_file.read_bytes()
    truncated.write_bytes(raw[: len(raw) - 8000])
    other = tmp_path / "lasco.fits"
    fits.PrimaryHDU(
        np.zeros((8, 8), np.float32), fits.Header({"INSTRUME": "LASCO", "TELESCOP": "SOHO"})
    ).writeto(other)
    return {
        "no such file": missing,
        "not a readable FITS": text,
        "truncated": truncated,
        "not an ASPIICS": other,
    }


def test_info_bad_inputs_one_line_each(tmp_path, good_file, capsys):
    bad = _bad_files(tmp_path, good_file)
    status = main(["info", str(good_file), *map(str, bad.values())])
    captured = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in captured.out + captured.err
    rows = captured.out.splitlines()[1:]
    assert len(rows) == 1 + len(bad)  # one row per file, errors included
    assert "ERROR" not in rows[0]
    for row, (expected, path) in zip(rows[1:], bad.items(), strict=True):
        assert row.startswith(path.name)
        assert "ERROR" in row
        assert expected in row
    assert captured.err.strip().splitlines() == ["aspiics: error: 4 of 5 files could not be read"]


@pytest.mark.parametrize("kind", ["no such file", "not a readable FITS", "truncated", "not an ASPIICS"])
def test_info_each_bad_input_exits_non_zero(tmp_path, good_file, capsys, kind):
    path = _bad_files(tmp_path, good_file)[kind]
    assert main(["info", str(path)]) == 1
    out = capsys.readouterr().out
    assert kind in out
