"""
The ``aspiics`` command line.

Run ``aspiics --help`` for the list of commands and ``aspiics COMMAND --help`` for each one.
Errors in the input are reported as one line on standard error, and the exit status is
non-zero: 1 when some inputs failed, 2 for a usage error.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from aspiics import __version__
from aspiics.exceptions import AspiicsError

__all__ = ["main"]

log = logging.getLogger(__name__)

#: Keywords shown by ``aspiics info``: (column title, header keyword, width).
_INFO_COLUMNS = (
    ("LEVEL", "LEVEL", 5),
    ("FILTER", "FILTER", 13),
    ("EXPTIME", "EXPTIME", 9),
    ("DATE-OBS", "DATE-OBS", 23),
    ("APS_TEMP", "APS_TEMP", 8),
    ("SHAPE", None, 11),
    ("CROTA", "CROTA", 7),
)


def _progress(iterable=None, **kwargs):
    """A progress bar on standard error, hidden when it is not a terminal (e.g. in CI logs)."""
    kwargs.setdefault("disable", None)  # tqdm: None hides the bar on non-TTY outputs
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def _out(text=""):
    """Write a line of command output to standard output."""
    sys.stdout.write(f"{text}\n")


def _error(message):
    """Write a one-line error message to standard error."""
    sys.stderr.write(f"aspiics: error: {message}\n")


# ---------------------------------------------------------------------------------------------
# info


def _info_row(path):
    """Return the table cells of one file, raising AspiicsError for a bad file."""
    from aspiics.io import check_readable, read_header
    from aspiics.map import ASPIICSMap

    path = Path(path)
    header = read_header(path)
    check_readable(path)
    if not ASPIICSMap.is_datasource_for(None, {k.lower(): v for k, v in header.items()}):
        raise AspiicsError(
            f"{path}: not an ASPIICS file (INSTRUME={header.get('INSTRUME')!r}, "
            f"TELESCOP={header.get('TELESCOP')!r})"
        )
    cells = []
    for _title, key, _width in _INFO_COLUMNS:
        if key is None:
            naxis = [header.get(f"NAXIS{i}") for i in range(header.get("NAXIS", 0), 0, -1)]
            value = "×".join(str(n) for n in naxis)
        else:
            value = header.get(key, "-")
            if isinstance(value, float):
                value = f"{value:.4g}"
        cells.append(str(value))
    return cells


def _cmd_info(args):
    titles = [title for title, _key, _width in _INFO_COLUMNS]
    widths = [width for _t, _k, width in _INFO_COLUMNS]
    name_width = max([len("FILE")] + [len(Path(p).name) for p in args.files])
    _out(
        "  ".join(
            ["FILE".ljust(name_width)] + [t.ljust(w) for t, w in zip(titles, widths, strict=True)]
        ).rstrip()
    )
    failed = 0
    for path in args.files:
        try:
            cells = _info_row(path)
        except (AspiicsError, OSError) as err:
            failed += 1
            message = str(err).splitlines()[0]
            _out(f"{Path(path).name.ljust(name_width)}  ERROR: {message}")
            continue
        _out(
            "  ".join(
                [Path(path).name.ljust(name_width)] + [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
            ).rstrip()
        )
    if failed:
        _error(f"{failed} of {len(args.files)} files could not be read")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# Batch helpers


def _expand_inputs(items, level):
    """Files named directly, plus the ``aspiics_*_l<level>_*.fits`` files of named folders."""
    files = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob(f"aspiics_*_l{level}_*.fits"))
            if not found:
                _error(f"{path}: no level-{level} ASPIICS files in this folder")
            files.extend(found)
        else:
            files.append(path)
    return files


def _run_batch(files, work, *, desc):
    """Run ``work(path)`` on each file with a progress bar; report failures one line each."""
    failed = 0
    for path in _progress(files, desc=desc, unit="file"):
        try:
            for written in work(path):
                _out(written)
        except (AspiicsError, OSError) as err:
            failed += 1
            _error(
                f"{path}: {str(err).splitlines()[0]}"
                if str(path) not in str(err)
                else str(err).splitlines()[0]
            )
    if failed:
        _error(f"{failed} of {len(files)} inputs failed")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# l2


def _l2_worker(calibration, outdir, *, overwrite, options):
    from aspiics.io import parse_filename, read_map

    def work(path):
        m = read_map(path)
        if m.processing_level != 1:
            raise AspiicsError(
                f"{path}: LEVEL is {m.meta.get('level')!r}, not L1; only L1 frames are calibrated"
            )
        out = Path(outdir) / parse_filename(path).replace(level=2).name
        if out.exists() and not overwrite:
            raise AspiicsError(f"{out} exists already; pass --overwrite to replace it")
        l2 = m.calibrate(calibration, **options)
        l2.save(out, overwrite=overwrite)
        yield out

    return work


def _calibrate_files(files, calibration, outdir, *, overwrite, banding=True, template=None):
    from aspiics.calibration import open_calibration

    cal = open_calibration(calibration)
    options = {"banding": banding}
    if banding and template is not None:
        from aspiics.banding import BandingTemplate

        options["banding_options"] = {"template": BandingTemplate.load(template)}
    return _run_batch(files, _l2_worker(cal, outdir, overwrite=overwrite, options=options), desc="L2")


def _cmd_l2(args):
    files = _expand_inputs(args.inputs, level=1)
    if not files:
        _error("no input files")
        return 1
    return _calibrate_files(
        files,
        args.calibration,
        args.outdir,
        overwrite=args.overwrite,
        banding=not args.no_banding,
        template=args.banding_template,
    )


# ---------------------------------------------------------------------------------------------
# simulate


def _simulate(outdir, *, seed, exposures, filter_name, polarized, shape, overwrite):
    """Simulate a calibration set and one acquisition (or a polarizer set); return the frames."""
    from aspiics.simulate import make_calibration_set, simulate_acquisition, simulate_polarized_set

    outdir = Path(outdir)
    cal = make_calibration_set(outdir / "calibration", shape=shape, seed=seed, overwrite=overwrite)
    if polarized:
        acquisitions = simulate_polarized_set(
            exposures=exposures, seed=seed, shape=shape, calibration=cal, outdir=outdir, overwrite=overwrite
        )
    else:
        acquisitions = [
            simulate_acquisition(
                filter_name,
                exposures=exposures,
                seed=seed,
                shape=shape,
                calibration=cal,
                outdir=outdir,
                overwrite=overwrite,
            )
        ]
    return cal, acquisitions


def _cmd_simulate(args):
    start = time.perf_counter()
    cal, acquisitions = _simulate(
        args.outdir,
        seed=args.seed,
        exposures=tuple(args.exposures),
        filter_name=args.filter,
        polarized=args.polarized,
        shape=(args.size, args.size),
        overwrite=args.overwrite,
    )
    frames = [frame for acq in acquisitions for frame in acq.frames]
    for frame in frames:
        _out(frame.path)
    _out(f"calibration set: {cal.path}")
    log.info("simulated %d frames in %.1f s", len(frames), time.perf_counter() - start)
    return 0


# ---------------------------------------------------------------------------------------------
# demo


def _quicklook(m, path, title=None):
    """Write a PNG quicklook of a map with its colormap, norm and the solar limb."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6.4, 6.0), dpi=100)
    try:
        ax = fig.add_subplot(projection=m)
        m.plot(axes=ax, title=title or m.latex_name)
        m.draw_limb(axes=ax, color="white", lw=0.8)
        fig.colorbar(ax.images[0], ax=ax, shrink=0.8, label=str(m.unit) if m.unit is not None else "")
        fig.savefig(path)
    finally:
        plt.close(fig)
    return Path(path)


def _cmd_demo(args):
    import sunpy.map

    from aspiics.calibration import open_calibration
    from aspiics.io import read_map
    from aspiics.simulate import simulate_polarized_set

    outdir = Path(args.outdir)
    shape = (args.size, args.size)
    start = time.perf_counter()
    timings = {}
    with _progress(total=3, desc="demo", unit="stage") as bar:
        # 1. Simulated L1 data: one Wideband acquisition and one polarizer set.
        bar.set_postfix_str("simulate")
        t0 = time.perf_counter()
        cal, wb = _simulate(
            outdir / "l1",
            seed=args.seed,
            exposures=(0.1, 1.0, 10.0),
            filter_name="Wideband",
            polarized=False,
            shape=shape,
            overwrite=args.overwrite,
        )
        pol = simulate_polarized_set(
            exposures=(1.0,), seed=args.seed + 1, shape=shape, calibration=cal, outdir=outdir / "l1",
            overwrite=args.overwrite,
        )  # fmt: skip
        l1_files = [frame.path for acq in (*wb, *pol) for frame in acq.frames]
        timings["simulate"] = time.perf_counter() - t0
        bar.update()

        # 2. L2 calibration.
        bar.set_postfix_str("L2")
        t0 = time.perf_counter()
        calibration = open_calibration(cal.path)
        l2_files = []
        for path in _progress(l1_files, desc="L2", unit="frame"):
            l2 = read_map(path).calibrate(calibration, banding=True)
            out = outdir / "l2" / Path(path).name.replace("_l1_", "_l2_")
            l2.save(out, overwrite=args.overwrite)
            l2_files.append(out)
        timings["L2"] = time.perf_counter() - t0
        bar.update()

        # 3. Quicklooks.
        bar.set_postfix_str("quicklooks")
        t0 = time.perf_counter()
        quick = outdir / "quicklook"
        quick.mkdir(parents=True, exist_ok=True)
        pngs = []
        for path in _progress([*l1_files, *l2_files], desc="quicklooks", unit="file"):
            png = quick / (Path(path).stem + ".png")
            if png.exists() and not args.overwrite:
                raise AspiicsError(f"{png} exists already; pass --overwrite to replace it")
            pngs.append(_quicklook(sunpy.map.Map(path), png))
        timings["quicklooks"] = time.perf_counter() - t0
        bar.update()
    for path in [*l1_files, *l2_files, *pngs]:
        _out(path)
    summary = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    _out(f"demo finished in {time.perf_counter() - start:.1f} s ({summary}); outputs in {outdir}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="aspiics",
        description="Calibrate and analyse ASPIICS (Proba-3 coronagraph) data.",
    )
    parser.add_argument("--version", action="version", version=f"aspiics {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log messages (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="table of the key header values of ASPIICS files")
    p.add_argument("files", nargs="+", metavar="FILE", help="FITS files")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "simulate",
        help="write synthetic L1 frames and a matching calibration set",
        description="Write a synthetic calibration set (OUTDIR/calibration) and the L1 frames of one "
        "acquisition (or one polarizer set) into OUTDIR.",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--exposures", type=float, nargs="+", default=[0.1, 1.0, 10.0], metavar="T", help="exposure times, s"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--filter", default="Wideband", metavar="NAME", help="filter name or code (default Wideband)"
    )
    group.add_argument("--polarized", action="store_true", help="simulate the three polarizers instead")
    p.add_argument("--size", type=int, default=2048, help="frame size in pixels (default 2048)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "l2",
        help="calibrate L1 frames to L2 (mean solar brightness)",
        description="Calibrate level-1 frames (files, or folders of aspiics_*_l1_*.fits) to level 2: bias, "
        "non-linearity and saturation, dark current, flat field, radiometric conversion to MSB, banding "
        "and bad pixels, with uncertainty and mask. Outputs are named as the inputs with l1 -> l2.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="L1 files or folders")
    p.add_argument(
        "--calibration",
        metavar="PATH",
        default=None,
        help="calibration release folder, folder of releases, or l2_config.json "
        "(default: $ASPIICS_CALIBRATION_DIR)",
    )
    p.add_argument("--outdir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--no-banding", action="store_true", help="skip the banding correction")
    p.add_argument(
        "--banding-template",
        metavar="FILE",
        default=None,
        help="static column-banding template (aspiics.banding.BandingTemplate FITS) to correct with",
    )
    p.set_defaults(func=_cmd_l2)

    p = sub.add_parser(
        "demo",
        help="simulate data and run every processing stage on it",
        description="Simulate one Wideband acquisition (3 exposures) and one polarizer set, run every "
        "processing stage of the package on them and write FITS files and PNG quicklooks into OUTDIR.",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, default=2048, help="frame size in pixels (default 2048)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None):
    """
    Run the ``aspiics`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when some inputs failed, 2 for usage errors.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aspiics").setLevel(level)
    try:
        return args.func(args)
    except AspiicsError as err:
        _error(str(err).splitlines()[0])
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
