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
    assert lines[0].split()[:5] == ["FILE", "LEVEL", "FILTER", "PRODUCT", "EXPTIME"]
    row = lines[1].split()
    assert row[0] == good_file.name
    assert row[1] == "L1"
    assert row[2] == "Wideband"
    assert row[3] == "-"  # no PROD_ID below level 3
    assert row[4] == "1"
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
    assert len(list((out / "l1").glob("*.fits"))) == 8  # 3 Wideband + 2 Fe XIV + 3 polarizers
    assert len(list((out / "l2").glob("*.fits"))) == 8
    l3 = sorted(p.name.split("_")[1] for p in (out / "l3").glob("*.fits"))
    assert l3 == ["bt", "bt", "fe", "fe", "pa", "pb", "wb"]  # composites wb/fe, products bt/pb/pa/fe
    pngs = list((out / "quicklook").glob("*.png"))
    assert len(pngs) == 6 + 7
    assert all(p.stat().st_size > 10_000 for p in pngs)
    # Running again refuses to overwrite anything.
    assert main(["demo", str(out), "--size", "128"]) == 1
    assert "exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def l2_sets(tmp_path_factory):
    """L2 files of a Wideband acquisition (2 exposures) and of a polarizer set, 128²."""
    from aspiics.calibration import CalibrationSet
    from aspiics.io import read_map
    from aspiics.simulate import make_calibration_set, simulate_acquisition, simulate_polarized_set

    root = tmp_path_factory.mktemp("sets")
    cal = make_calibration_set(root / "calibration", shape=(128, 128), seed=4)
    wb = simulate_acquisition(
        "Wideband", (0.5, 5.0), shape=(128, 128), calibration=cal, seed=4, outdir=root / "l1"
    )
    pol = simulate_polarized_set((1.0,), shape=(128, 128), calibration=cal, seed=5, outdir=root / "l1")
    calibration = CalibrationSet(cal.path)
    l2 = root / "l2"
    for frame in [*wb.frames, *(f for acq in pol for f in acq.frames)]:
        read_map(frame.path).calibrate(calibration).save(l2 / frame.path.name.replace("_l1_", "_l2_"))
    return root, cal.path


def test_merge_command(l2_sets, tmp_path, capsys):
    root, _cal = l2_sets
    wb = sorted((root / "l2").glob("aspiics_wb_*.fits"))
    assert main(["merge", *map(str, wb), "--outdir", str(tmp_path), "--blend", "2"]) == 0
    (out,) = tmp_path.glob("aspiics_wb_l3_*.fits")
    assert capsys.readouterr().out.strip() == str(out)
    from aspiics import ASPIICSMap

    m = ASPIICSMap.read(out)
    assert m.processing_level == 3
    assert m.meta["prod_id"] == "Total brightness"
    assert all(p.name in m.meta["parent"] for p in wb)
    # A set mixing filters is reported and skipped; the exit status says so.
    p1 = next((root / "l2").glob("aspiics_p1_*.fits"))
    bad = tmp_path / "bad"
    bad.mkdir()
    import shutil

    mixed = bad / wb[0].name.replace("_wb_", "_p1_")
    shutil.copy(p1, mixed)
    status = main(["merge", str(wb[0]), str(mixed), "--outdir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 1
    assert "mixes filters" in err


def test_polarization_command(l2_sets, tmp_path, capsys):
    root, cal = l2_sets
    pol = sorted((root / "l2").glob("aspiics_p*_l2_*.fits"))
    assert main(["polarization", *map(str, pol), "--calibration", str(cal), "--outdir", str(tmp_path)]) == 0
    names = sorted(p.name.split("_")[1] for p in tmp_path.glob("*.fits"))
    assert names == ["bt", "pa", "pb"]
    from aspiics import ASPIICSMap

    angle = ASPIICSMap.read(next(tmp_path.glob("aspiics_pa_*.fits")))
    assert angle.meta["bunit"] == "deg"
    assert np.nanmax(np.abs(angle.data)) <= 90
    # A missing polarizer: reported, non-zero exit, nothing written.
    capsys.readouterr()
    status = main(
        ["polarization", *map(str, pol[:2]), "--calibration", str(cal), "--outdir", str(tmp_path / "x")]
    )
    assert status == 1
    assert "polarizer" in capsys.readouterr().err.lower()
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())


def test_fcorona_and_line_commands(l2_sets, tmp_path, capsys):
    root, _cal = l2_sets
    wb = sorted((root / "l2").glob("aspiics_wb_*.fits"))[-1]
    assert main(["fcorona", str(wb), "--outdir", str(tmp_path)]) == 0
    (bt,) = tmp_path.glob("aspiics_bt_l3_*.fits")
    from aspiics import ASPIICSMap

    before, after = ASPIICSMap.read(wb), ASPIICSMap.read(bt)
    ok = np.isfinite(before.data) & np.isfinite(after.data)
    assert np.all(after.data[ok] < before.data[ok])  # the F-corona is positive everywhere
    assert "koutchmy" in str(after.meta["history"]).lower()
    # Line emission needs a narrowband frame: a Wideband pair is refused with one clear line.
    capsys.readouterr()
    assert main(["line", str(wb), str(wb), "--outdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aspiics: error:")
    assert len(err.strip().splitlines()) == 1


def test_polarization_mixed_cycles_need_force(l2_sets, tmp_path, capsys):
    """Polarizers from different cycles are not combined unless --force is given."""
    import shutil

    root, cal = l2_sets
    pol = sorted((root / "l2").glob("aspiics_p*_l2_*.fits"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, path in enumerate(pol):
        name = path.name if k else path.name.replace(path.name[14:22], "ABCDEF01")  # another cycle
        shutil.copy(path, mixed / name)
    args = ["polarization", str(mixed), "--calibration", str(cal)]
    assert main([*args, "--outdir", str(tmp_path / "a")]) == 1
    assert "polarizer set" in capsys.readouterr().err
    assert main([*args, "--outdir", str(tmp_path / "b"), "--force"]) == 0
    assert sorted(p.name.split("_")[1] for p in (tmp_path / "b").glob("*.fits")) == ["bt", "pa", "pb"]


def test_l2_on_dask_workers(tmp_path, capsys):
    """--workers runs the same calibration on a local Dask cluster, failures reported per file."""
    pytest.importorskip("dask.distributed")
    sim = tmp_path / "sim"
    assert main(["simulate", str(sim), "--size", "128", "--exposures", "0.1", "1"]) == 0
    capsys.readouterr()
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    common = ["--calibration", str(sim / "calibration"), "--no-banding"]
    assert main(["l2", str(sim), *common, "--outdir", str(serial)]) == 0
    broken = sim / "aspiics_wb_l1_0000000000001A_20250812T181424.fits"
    broken.write_text("broken")
    status = main(["l2", str(sim), *common, "--outdir", str(parallel), "--workers", "2"])
    captured = capsys.readouterr()
    assert status == 1
    assert broken.name in captured.err
    from aspiics import ASPIICSMap

    for path in sorted(serial.glob("*.fits")):
        a, b = ASPIICSMap.read(path), ASPIICSMap.read(parallel / path.name)
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.sigma, b.sigma)


def test_l2_exposure_banding_option(tmp_path, capsys):
    """``aspiics l2`` calibrates each acquisition's exposures together (exposure-set banding step)."""
    sim = tmp_path / "sim"
    assert main(["simulate", str(sim), "--size", "256", "--exposures", "0.1", "1"]) == 0
    common = ["--calibration", str(sim / "calibration")]
    assert main(["l2", str(sim), *common, "--outdir", str(tmp_path / "set")]) == 0
    assert main(["l2", str(sim), *common, "--outdir", str(tmp_path / "single"), "--no-exposure-banding"]) == 0
    capsys.readouterr()
    from aspiics import ASPIICSMap

    for path in sorted((tmp_path / "set").glob("*.fits")):
        together, alone = ASPIICSMap.read(path), ASPIICSMap.read(tmp_path / "single" / path.name)
        assert "expbanding" in together.meta["calsteps"]
        assert "expbanding" not in alone.meta["calsteps"]
        assert not np.array_equal(np.asarray(together.data), np.asarray(alone.data), equal_nan=True)


def test_banding_template_command(tmp_path, capsys, caplog):
    """``aspiics banding-template`` builds a filter's template from L1 acquisitions; l2 applies it."""
    from aspiics.banding import BandingTemplate
    from aspiics.io import read_map
    from aspiics.simulate import make_calibration_set, simulate_acquisition

    shape = (256, 256)
    cal = make_calibration_set(tmp_path / "calibration", shape=shape, seed=2)
    l1 = tmp_path / "l1"
    for seed in (30, 31):
        simulate_acquisition(
            "Wideband", (0.1, 1.0, 10.0), shape=shape, calibration=cal, seed=seed, roll=137.0 * seed % 360,
            outdir=l1,
        )  # fmt: skip
    fe = simulate_acquisition("Fe XIV", (1.0, 10.0), shape=shape, calibration=cal, seed=32, outdir=l1)
    single = simulate_acquisition("Wideband", (1.0,), shape=shape, calibration=cal, seed=33, outdir=l1)
    out = tmp_path / "tpl_wb.fits"
    common = ["--calibration", str(cal.path), "-o", str(out)]
    # two filters among the inputs: one template per filter
    assert main(["banding-template", str(l1), *common]) == 1
    assert "--filter" in capsys.readouterr().err
    assert not out.exists()
    with caplog.at_level("WARNING", logger="aspiics.cli"):
        assert main(["banding-template", str(l1), *common, "--filter", "Wideband"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "one exposure" in caplog.text  # the single-exposure acquisition is left out
    tpl = BandingTemplate.load(out)
    assert (tpl.filter, tpl.nframes, tpl.offset_unit) == ("Wideband", 2, "MSB s")
    assert tpl.offset.shape == (2, shape[1])
    assert np.any(tpl.gain != 0)
    # never overwritten unless asked
    assert main(["banding-template", str(l1), *common, "--filter", "Wideband"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["banding-template", str(l1), *common, "--filter", "Wideband", "--overwrite"]) == 0
    capsys.readouterr()
    # l2 applies it to a single frame; a frame of another filter is refused with the reason
    outdir = tmp_path / "l2"
    args = ["l2", str(single.frames[0].path), "--calibration", str(cal.path), "--outdir", str(outdir)]
    assert main([*args, "--banding-template", str(out)]) == 0
    capsys.readouterr()
    l2 = read_map(next(outdir.glob("*.fits")))
    assert "template" in l2.meta["history"]
    args = ["l2", str(fe.frames[0].path), "--calibration", str(cal.path), "--outdir", str(outdir)]
    assert main([*args, "--banding-template", str(out), "--no-exposure-banding"]) == 1
    assert "made from Wideband frames, not Fe XIV" in capsys.readouterr().err


def test_banding_template_on_dask_workers(tmp_path, capsys):
    """--workers measures the acquisitions on Dask workers: the same template as the serial run."""
    pytest.importorskip("dask.distributed")
    from aspiics.banding import BandingTemplate
    from aspiics.simulate import make_calibration_set, simulate_acquisition

    shape = (128, 128)
    cal = make_calibration_set(tmp_path / "calibration", shape=shape, seed=2)
    for seed in (30, 31):
        simulate_acquisition(
            "Wideband", (0.5, 5.0), shape=shape, calibration=cal, seed=seed, outdir=tmp_path / "l1"
        )
    common = ["banding-template", str(tmp_path / "l1"), "--calibration", str(cal.path)]
    assert main([*common, "-o", str(tmp_path / "serial.fits")]) == 0
    assert main([*common, "-o", str(tmp_path / "parallel.fits"), "--workers", "2"]) == 0
    capsys.readouterr()
    serial, parallel = (BandingTemplate.load(tmp_path / f"{n}.fits") for n in ("serial", "parallel"))
    assert parallel.nframes == serial.nframes == 2
    for name in ("offset", "gain", "offset_err", "gain_err"):
        np.testing.assert_allclose(getattr(parallel, name), getattr(serial, name), rtol=1e-12, atol=0)
