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


def test_simulate_writes_frames_and_calibration(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--size", "128", "--exposures", "0.1", "1", "--seed", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    frames = sorted(out.glob("aspiics_wb_l1_*.fits"))
    assert len(frames) == 2
    assert {str(p) for p in frames} <= set(printed)
    releases = list((out / "calibration").glob("calibration_data_*"))
    assert len(releases) == 1
    assert (releases[0] / "l2_config.json").is_file()
    # Same seed again: refused without --overwrite, nothing changed.
    before = frames[0].read_bytes()
    assert main(["simulate", str(out), "--size", "128", "--exposures", "0.1", "1", "--seed", "3"]) == 1
    assert "exist" in capsys.readouterr().err
    assert frames[0].read_bytes() == before


def test_simulate_polarized_and_bad_filter(tmp_path, capsys):
    out = tmp_path / "pol"
    assert main(["simulate", str(out), "--size", "128", "--polarized", "--exposures", "1"]) == 0
    assert {p.name.split("_")[1] for p in out.glob("aspiics_*_l1_*.fits")} == {"p1", "p2", "p3"}
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "x"), "--size", "128", "--filter", "Unknown"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aspiics: error:")
    assert len(err.strip().splitlines()) == 1


def test_l2_command(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", str(sim), "--size", "128", "--exposures", "0.1", "1"]) == 0
    capsys.readouterr()
    release = next((sim / "calibration").glob("calibration_data_*"))
    broken = sim / "aspiics_wb_l1_0000000000001A_20250812T181424.fits"
    broken.write_text("broken")
    status = main(["l2", str(sim), "--calibration", str(release), "--outdir", str(tmp_path / "l2")])
    captured = capsys.readouterr()
    assert status == 1  # the broken file fails, the others are processed
    outputs = sorted((tmp_path / "l2").glob("aspiics_wb_l2_*.fits"))
    assert len(outputs) == 2
    assert "Traceback" not in captured.err
    assert broken.name in captured.err
    from aspiics import ASPIICSMap

    l2 = ASPIICSMap.read(outputs[0])
    assert l2.processing_level == 2
    assert l2.sigma is not None
    # Parent folder of releases works as well, and existing outputs are not overwritten.
    broken.unlink()
    status = main(
        ["l2", str(sim), "--calibration", str(sim / "calibration"), "--outdir", str(tmp_path / "l2")]
    )
    assert status == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["l2", str(sim), "--calibration", str(sim / "calibration"), "--outdir", str(tmp_path / "l2"),
                 "--overwrite"]) == 0  # fmt: skip


def test_l2_missing_calibration(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", str(sim), "--size", "128", "--exposures", "1"]) == 0
    capsys.readouterr()
    status = main(
        ["l2", str(sim), "--calibration", str(tmp_path / "nowhere"), "--outdir", str(tmp_path / "o")]
    )
    assert status == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--size", "128"]) == 0
    text = capsys.readouterr().out
    assert "demo finished" in text
    assert len(list((out / "l1").glob("*.fits"))) == 6
    assert len(list((out / "l2").glob("*.fits"))) == 6
    pngs = list((out / "quicklook").glob("*.png"))
    assert len(pngs) >= 12
    assert all(p.stat().st_size > 10_000 for p in pngs)
