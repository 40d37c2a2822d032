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
    ("FILTER", "FILTER", 21),
    ("PRODUCT", "PROD_ID", 20),
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
            _error(_one_line(err, path))
    if failed:
        _error(f"{failed} of {len(files)} inputs failed")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# l2


def _calibrate_group(paths, calibration, outdir, overwrite, options, exposures=True):
    """
    Calibrate the L1 files of one acquisition to L2 files (top level: picklable for Dask).

    With ``exposures`` and banding on, the exposures are calibrated together
    (`aspiics.calibrate.calibrate_acquisition`, which adds the exposure-set banding step); if that
    fails, each frame is calibrated on its own. Returns ``(written paths, [(path, message), ...])``.
    """
    from aspiics.calibrate import calibrate_acquisition
    from aspiics.io import parse_filename

    loaded, failures = [], []
    for path in paths:
        try:
            m = _read_l1(path)
            out = Path(outdir) / parse_filename(path).replace(level=2).name
            if out.exists() and not overwrite:
                raise AspiicsError(f"{out} exists already; pass --overwrite to replace it")
            loaded.append((path, out, m))
        except (AspiicsError, OSError) as err:
            failures.append((path, _one_line(err, path)))
    calibrated = None
    if exposures and len(loaded) >= 2:
        try:
            l2 = calibrate_acquisition([m for _, _, m in loaded], calibration, **options)
            calibrated = [(p, o, m) for (p, o, _), m in zip(loaded, l2, strict=True)]
        except (AspiicsError, OSError) as err:
            log.warning("%s: calibrating the frames one by one: %s", paths[0], _one_line(err, paths[0]))
    if calibrated is None:
        calibrated = []
        for path, out, m in loaded:
            try:
                calibrated.append((path, out, m.calibrate(calibration, **options)))
            except (AspiicsError, OSError) as err:
                failures.append((path, _one_line(err, path)))
    written = []
    for path, out, m in calibrated:
        try:
            written.append(m.save(out, overwrite=overwrite))
        except (AspiicsError, OSError) as err:
            failures.append((path, _one_line(err, path)))
    return written, failures


def _read_l1(path):
    """Read a file that must be level 1; `AspiicsError` naming it otherwise."""
    from aspiics.io import read_map

    m = read_map(path)
    if m.processing_level != 1:
        raise AspiicsError(f"{path}: LEVEL is {m.meta.get('level')!r}, not L1; this command takes L1 frames")
    return m


def _one_line(err, path):
    """The first line of an error message, naming ``path`` if it does not already."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return message if str(path) in message else f"{path}: {message}"


def _acquisition_groups(files):
    """L1 files grouped by acquisition (files with unparsable names form groups of their own)."""
    groups, unparsable = _groups_by(files, lambda f: f.acquisition_id)
    return [groups[k] for k in sorted(groups)] + [[path] for path, _ in unparsable]


def _report_groups(results, nfiles):
    """Print written paths and failures; exit status 1 if any file failed."""
    failed = 0
    for written, failures in results:
        for path in written:
            _out(path)
        for _, message in failures:
            failed += 1
            _error(message)
    if failed:
        _error(f"{failed} of {nfiles} inputs failed")
        return 1
    return 0


def _on_dask(func, groups, calibration, workers, *args, desc):
    """
    Run ``func(group, calibration, *args)`` for every group on a local Dask cluster of ``workers``.

    The calibration set is loaded once here and broadcast to the workers, so each worker holds one
    copy of the calibration arrays. Yields ``(group, result)`` as tasks finish; ``result`` is the
    `AspiicsError` or `OSError` a task raised.
    """
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise AspiicsError(
            "--workers needs Dask: pip install 'aspiics[dask]' (or run without --workers)"
        ) from None
    if hasattr(calibration, "preload"):  # a CalibrationSet: load what these frames need, once
        from aspiics.io import parse_filename

        filters = set()
        for path in (p for group in groups for p in group):
            try:
                info = parse_filename(path).filter
            except AspiicsError:
                info = None
            if info is not None:
                filters.add(info.name)
        calibration.preload(sorted(filters) or None)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        cal = client.scatter(calibration, broadcast=True)
        futures = {client.submit(func, group, cal, *args, pure=False): i for i, group in enumerate(groups)}
        for future in _progress(as_completed(futures), total=len(futures), desc=desc, unit="acquisition"):
            group = groups[futures[future]]
            try:
                yield group, future.result()
            except (AspiicsError, OSError) as err:
                yield group, err


def _run_on_dask(groups, calibration, outdir, overwrite, options, workers, exposures):
    """Calibrate acquisitions on Dask workers; failures are reported one line each, as when serial."""
    results = []
    tasks = _on_dask(
        _calibrate_group, groups, calibration, workers, outdir, overwrite, options, exposures, desc="L2"
    )
    for group, result in tasks:
        if isinstance(result, Exception):
            result = ([], [(p, _one_line(result, p)) for p in group])
        results.append(result)
    return _report_groups(results, sum(len(g) for g in groups))


def _calibrate_files(
    files, calibration, outdir, *, overwrite, banding=True, template=None, workers=1, exposures=True
):
    from aspiics.calibration import open_calibration

    cal = open_calibration(calibration)
    options = {"banding": banding}
    if banding and template is not None:
        from aspiics.banding import BandingTemplate

        options["banding_options"] = {"template": BandingTemplate.load(template)}
    groups = _acquisition_groups(files)
    if workers > 1:
        return _run_on_dask(groups, cal, outdir, overwrite, options, workers, exposures)
    results = [
        _calibrate_group(group, cal, outdir, overwrite, options, exposures)
        for group in _progress(groups, desc="L2", unit="acquisition")
    ]
    return _report_groups(results, len(files))


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
        workers=args.workers,
        exposures=not args.no_exposure_banding,
    )


# ---------------------------------------------------------------------------------------------
# banding-template

_TO_MSB = ("bias", "nonlin", "variance", "dark", "flat", "msb")


def _set_estimate(paths, calibration):
    """The exposure-set banding estimate of one acquisition's L1 files, without its images."""
    import dataclasses

    from aspiics.banding import correct_banding_exposures
    from aspiics.calibrate import calibrate_map

    maps = [calibrate_map(_read_l1(path), calibration, steps=_TO_MSB) for path in paths]
    _, result = correct_banding_exposures(maps, return_result=True)
    return dataclasses.replace(result, corrected=[])


def _cmd_banding_template(args):
    from aspiics.banding import template_from_exposure_sets
    from aspiics.calibration import open_calibration
    from aspiics.constants import filter_info

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        _error(f"{output} exists already; pass --overwrite to replace it")
        return 1
    files = _expand_inputs(args.inputs, level=1)
    groups, errors = _groups_by(files, lambda f: (f.filter.name, f.acquisition_id))
    if args.filter is not None:
        try:
            name = filter_info(args.filter).name
        except (AspiicsError, ValueError) as err:
            _error(str(err).splitlines()[0])
            return 2
        groups = {k: v for k, v in groups.items() if k[0] == name}
    filters = sorted({k[0] for k in groups})
    if len(filters) > 1:
        _error(
            f"acquisitions of several filters ({', '.join(filters)}): a template holds one filter; "
            "pass --filter NAME"
        )
        return 1
    groups = {key[1]: members for key, members in groups.items()}  # acquisitions of one filter
    for acq_id in [k for k, members in groups.items() if len(members) < 2]:
        log.warning("acquisition %s has one exposure; it cannot enter the template", acq_id)
        del groups[acq_id]
    for path, err in errors:  # unparsable file names
        _error(_one_line(err, path))
    if not groups:
        _error("no acquisition with two or more exposures among the inputs")
        return 1
    cal = open_calibration(args.calibration)
    results = []
    failed = len(errors)
    if args.workers > 1:
        for group, result in _on_dask(
            _set_estimate, list(groups.values()), cal, args.workers, desc="template"
        ):
            if isinstance(result, Exception):
                failed += 1
                _error(_one_line(result, group[0]))
            else:
                results.append(result)
    else:

        def work(key, members):
            results.append(_set_estimate(members, cal))
            return []

        failed += _process_groups(groups, [], work, desc="template", what="acquisition")[1]
    try:
        template = template_from_exposure_sets(results)
        written = template.save(output, overwrite=args.overwrite)
    except (AspiicsError, OSError) as err:
        _error(str(err).splitlines()[0])
        return 1
    log.info("banding template from %d acquisition(s) of %s", template.nframes, template.filter)
    return _finish([written], failed)


# ---------------------------------------------------------------------------------------------
# Level 3


def _l3_output(outdir, code, m, identifier, overwrite):
    """Path of a level-3 product named per SPEC §2; refuse an existing file unless overwriting."""
    from aspiics.io import format_filename

    name = format_filename(code, 3, identifier, m.meta.get("date-obs") or m.date.isot)
    m.meta["filename"] = name
    out = Path(outdir) / name
    if out.exists() and not overwrite:
        raise AspiicsError(f"{out} exists already; pass --overwrite to replace it")
    return out


def _groups_by(files, key):
    """Group files by ``key(parsed file name)``; unparsable names are errors of their own."""
    from aspiics.io import parse_filename

    groups, errors = {}, []
    for path in files:
        try:
            groups.setdefault(key(parse_filename(path)), []).append(path)
        except AspiicsError as err:
            errors.append((path, err))
    return groups, errors


def _process_groups(groups, errors, work, *, desc, what):
    """
    Run ``work(key, members)`` (which returns written paths) on each group with a progress bar.

    A group that fails is reported on one line and skipped; returns (written paths, failures).
    """
    for path, err in errors:
        _error(f"{path}: {str(err).splitlines()[0]}")
    failed = len(errors)
    written = []
    for key in _progress(sorted(groups), desc=desc, unit="set"):
        try:
            written.extend(work(key, groups[key]))
        except (AspiicsError, OSError) as err:
            failed += 1
            _error(f"{what} {key}: {str(err).splitlines()[0]}")
    return written, failed


def _finish(written, failed):
    """Print the written paths; exit status 1 if any set failed."""
    for path in written:
        _out(path)
    if failed:
        _error(f"{failed} set(s) failed")
        return 1
    return 0


def _merge_sets(files, outdir, *, grid, blend, weighting, overwrite):
    """One composite per acquisition; returns (written paths, number of failed sets)."""
    from aspiics.composite import merge_exposures
    from aspiics.io import group_acquisitions

    def work(acq_id, members):
        (acq,) = group_acquisitions(members)
        if not acq.complete:
            log.warning("acquisition %s has %d exposure(s) of 3; merging what there is", acq_id, len(acq))
        out_map = merge_exposures(list(acq.members), blend=blend, weighting=weighting, target=grid)
        out = _l3_output(outdir, acq.filter.code, out_map, acq_id, overwrite)
        return [out_map.save(out, overwrite=overwrite)]

    groups, errors = _groups_by(files, lambda f: f.acquisition_id)
    return _process_groups(groups, errors, work, desc="merge", what="acquisition")


def _cmd_merge(args):
    files = _expand_inputs(args.inputs, level=2)
    if not files:
        _error("no input files")
        return 1
    return _finish(
        *_merge_sets(
            files, args.outdir, grid=args.grid, blend=args.blend, weighting=args.weighting,
            overwrite=args.overwrite,
        )
    )  # fmt: skip


def _polarization_sets(files, outdir, calibration, *, force, overwrite, grid="sun"):
    """B, pB and angle per polarizer set (one cycle and sequence); returns (written, failed)."""
    from aspiics.calibration import open_calibration
    from aspiics.composite import merge_exposures
    from aspiics.io import parse_filename, read_map
    from aspiics.polarization import demodulate

    cal = open_calibration(calibration)

    def work(key, members):
        by_filter, _ = _groups_by(members, lambda f: f.code)
        others = sorted(set(by_filter) - {"p1", "p2", "p3"})
        if others:
            raise AspiicsError(f"non-polarizer frames ({', '.join(others)}) in a polarizer set")
        maps = []
        for code in sorted(by_filter):
            paths = by_filter[code]
            acquisitions, _ = _groups_by(paths, lambda f: f.acquisition_id)
            if len(acquisitions) > 1:
                raise AspiicsError(f"{code} frames of {len(acquisitions)} acquisitions; give one each")
            if len(paths) > 1:  # several exposures: HDR composite first
                maps.append(merge_exposures([read_map(p) for p in paths], target=grid))
            else:
                maps.append(read_map(paths[0]))
        products = demodulate(maps, cal)
        ident = parse_filename(members[0]).sequence_id
        written = []
        for code, name in (("bt", "B"), ("pb", "pB"), ("pa", "angle")):
            out = _l3_output(outdir, code, products[name], ident, overwrite)
            written.append(products[name].save(out, overwrite=overwrite))
        return written

    groups, errors = _groups_by(files, (lambda f: "all") if force else (lambda f: f.sequence_id))
    return _process_groups(groups, errors, work, desc="polarization", what="polarizer set")


def _cmd_polarization(args):
    files = _expand_inputs(args.inputs, level=2)
    if not files:
        _error("no input files")
        return 1
    return _finish(
        *_polarization_sets(files, args.outdir, args.calibration, force=args.force, overwrite=args.overwrite)
    )


def _product_identifier(m):
    """The 12-character cycle + sequence ID of level-3 science products (SPEC §2)."""
    from aspiics.io import parse_filename

    return parse_filename(m.meta.get("filename", "")).sequence_id


def _cmd_fcorona(args):
    from aspiics.fcorona import subtract_f_corona
    from aspiics.io import read_map

    def work(path):
        m = read_map(path)
        product = subtract_f_corona(m, model=args.model)
        out = _l3_output(args.outdir, "bt", product, _product_identifier(m), args.overwrite)
        yield product.save(out, overwrite=args.overwrite)

    return _run_batch([Path(p) for p in args.files], work, desc="F-corona")


def _cmd_line(args):
    from aspiics.io import read_map
    from aspiics.lines import line_emission

    narrow, wide = read_map(args.narrowband), read_map(args.wideband)
    product = line_emission(
        narrow,
        wide,
        continuum_ratio=args.continuum_ratio,
        f_corona=args.f_corona,
        f_corona_ratio=args.f_corona_ratio,
    )
    code = "fe" if narrow.filter is not None and narrow.filter.code == "fe" else "he"
    out = _l3_output(args.outdir, code, product, _product_identifier(narrow), args.overwrite)
    _out(product.save(out, overwrite=args.overwrite))
    return 0


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
    from aspiics.fcorona import subtract_f_corona
    from aspiics.io import read_map
    from aspiics.lines import line_emission
    from aspiics.simulate import simulate_acquisition, simulate_polarized_set

    outdir = Path(args.outdir)
    shape = (args.size, args.size)
    scale = args.size / 2048  # blend and island sizes are in pixels of the 2048² detector
    start = time.perf_counter()
    timings = {}
    stages = ("simulate", "L2", "merge", "polarization", "F-corona", "line", "quicklooks")
    with _progress(total=len(stages), desc="demo", unit="stage") as bar:

        def stage(name):
            bar.set_postfix_str(name)
            timings[name] = time.perf_counter()

        def done(name):
            timings[name] = time.perf_counter() - timings[name]
            bar.update()

        # Simulated L1 data: a Wideband acquisition of three exposures, an Fe XIV acquisition of
        # two, and one polarizer set, with their synthetic calibration set.
        stage("simulate")
        cal, wb = _simulate(
            outdir / "l1", seed=args.seed, exposures=(0.1, 1.0, 10.0), filter_name="Wideband",
            polarized=False, shape=shape, overwrite=args.overwrite,
        )  # fmt: skip
        fe = simulate_acquisition(
            "Fe XIV", exposures=(2.0, 20.0), seed=args.seed, shape=shape, calibration=cal,
            outdir=outdir / "l1", overwrite=args.overwrite, acquisition_id=None,
            date_obs="2025-08-12T18:20:00",
        )  # fmt: skip
        pol = simulate_polarized_set(
            exposures=(1.0,), seed=args.seed + 1, shape=shape, calibration=cal, outdir=outdir / "l1",
            overwrite=args.overwrite, date_obs="2025-08-12T18:30:00",
        )  # fmt: skip
        l1_files = [frame.path for acq in (*wb, fe, *pol) for frame in acq.frames]
        done("simulate")

        stage("L2")
        calibration = open_calibration(cal.path)
        l2_files = []
        for group in _progress(_acquisition_groups(l1_files), desc="L2", unit="acquisition"):
            written, failures = _calibrate_group(
                group, calibration, outdir / "l2", args.overwrite, {"banding": True}
            )
            if failures:
                raise AspiicsError(f"demo: L2 calibration failed: {failures[0][1]}")
            l2_files.extend(written)
        done("L2")

        stage("merge")
        l3 = outdir / "l3"
        wb_fe = [p for p in l2_files if Path(p).name.split("_")[1] in ("wb", "fe")]
        composites, failed = _merge_sets(
            wb_fe, l3, grid="sun", blend=30 * scale, weighting="fill", overwrite=args.overwrite
        )
        if failed:
            raise AspiicsError("demo: an exposure composite failed")
        done("merge")

        stage("polarization")
        pol_files = [p for p in l2_files if Path(p).name.split("_")[1] in ("p1", "p2", "p3")]
        products, failed = _polarization_sets(pol_files, l3, cal.path, force=False, overwrite=args.overwrite)
        if failed:
            raise AspiicsError("demo: the polarization products failed")
        done("polarization")

        stage("F-corona")
        wb_l3 = read_map(next(p for p in composites if Path(p).name.startswith("aspiics_wb_")))
        bt = subtract_f_corona(wb_l3)
        bt_path = bt.save(
            _l3_output(l3, "bt", bt, _product_identifier(wb_l3), args.overwrite), overwrite=args.overwrite
        )
        done("F-corona")

        stage("line")
        fe_l3 = read_map(next(p for p in composites if Path(p).name.startswith("aspiics_fe_")))
        line = line_emission(fe_l3, wb_l3)
        line_path = line.save(
            _l3_output(l3, "fe", line, _product_identifier(fe_l3), args.overwrite), overwrite=args.overwrite
        )
        done("line")

        stage("quicklooks")
        quick = outdir / "quicklook"
        quick.mkdir(parents=True, exist_ok=True)
        show = [*l1_files[:3], *l2_files[:3], *composites, *products, bt_path, line_path]
        pngs = []
        for path in _progress(show, desc="quicklooks", unit="file"):
            png = quick / (Path(path).stem + ".png")
            if png.exists() and not args.overwrite:
                raise AspiicsError(f"{png} exists already; pass --overwrite to replace it")
            pngs.append(_quicklook(sunpy.map.Map(path), png))
        done("quicklooks")
    for path in [*l1_files, *l2_files, *composites, *products, bt_path, line_path, *pngs]:
        _out(path)
    summary = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    _out(f"demo finished in {time.perf_counter() - start:.1f} s ({summary}); outputs in {outdir}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _add_workers_argument(p, verb):
    """``--workers N``: run one task per acquisition on a local Dask cluster."""
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help=f"{verb} on N local Dask worker processes (needs the 'dask' extra; default 1: serial)",
    )


def _add_l1_arguments(p):
    """The L1 inputs and the calibration option, shared by the commands that start from L1 files."""
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="L1 files or folders")
    p.add_argument(
        "--calibration",
        metavar="PATH",
        default=None,
        help="calibration release folder, folder of releases, or l2_config.json "
        "(default: $ASPIICS_CALIBRATION_DIR)",
    )


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
    _add_l1_arguments(p)
    p.add_argument("--outdir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--no-banding", action="store_true", help="skip the banding correction")
    p.add_argument(
        "--no-exposure-banding",
        action="store_true",
        help="skip the exposure-set step of the banding correction (column offsets measured from the "
        "differences of the exposures of each acquisition; see aspiics.banding.correct_banding_exposures)",
    )
    p.add_argument(
        "--banding-template",
        metavar="FILE",
        default=None,
        help="static column-banding template (aspiics.banding.BandingTemplate FITS) to correct with",
    )
    _add_workers_argument(p, "calibrate")
    p.set_defaults(func=_cmd_l2)

    p = sub.add_parser(
        "banding-template",
        help="column-banding template of a filter from the exposure sets of L1 acquisitions",
        description="Measure the column banding of each acquisition (2-3 exposures of one filter) from the "
        "differences of its exposures, at all spatial scales, with the column gain on its longest exposure "
        "(aspiics.banding.correct_banding_exposures), and combine the acquisitions into one template "
        "(aspiics.banding.template_from_exposure_sets). Use acquisitions of several days and roll angles. "
        "Apply it with 'aspiics l2 --banding-template FILE'.",
    )
    _add_l1_arguments(p)
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="template FITS file to write")
    p.add_argument("--filter", default=None, help="use only the acquisitions of this filter")
    p.add_argument("--overwrite", action="store_true", help="replace an existing template file")
    _add_workers_argument(p, "measure the acquisitions")
    p.set_defaults(func=_cmd_banding_template)

    p = sub.add_parser(
        "merge",
        help="merge the exposures of each acquisition into an L3 composite",
        description="Group level-2 files (files, or folders of aspiics_*_l2_*.fits) into acquisitions and "
        "merge each one's 1-3 exposures into a high-dynamic-range level-3 composite on a common grid.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="L2 files or folders")
    p.add_argument("--outdir", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--grid",
        choices=("sun", "longest"),
        default="sun",
        help="sun: Sun-centred, solar north up (default); longest: the longest exposure's frame",
    )
    p.add_argument("--blend", type=float, default=30, metavar="PX", help="blend width in pixels (default 30)")
    p.add_argument("--weighting", choices=("fill", "inverse-variance"), default="fill", help="merge method")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser(
        "polarization",
        help="total brightness, polarized brightness and angle from the three polarizers",
        description="Group polarizer level-2 files by acquisition cycle and sequence, merge the exposures "
        "of each polarizer, and demodulate: writes the bt, pb and pa level-3 products.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="polarizer L2 files or folders")
    p.add_argument(
        "--calibration",
        metavar="PATH",
        default=None,
        help="calibration release with the polarizer angle maps",
    )
    p.add_argument("--outdir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="combine frames of different cycles into one set")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_polarization)

    p = sub.add_parser(
        "fcorona",
        help="subtract an F-corona model from total-brightness images",
        description="Subtract the Koutchmy (2000) or Allen (1977) F-corona model from level-2 or level-3 "
        "total-brightness images, giving 'bt' level-3 products.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="total-brightness files")
    p.add_argument("--model", choices=("koutchmy", "allen"), default="koutchmy", help="F-corona model")
    p.add_argument("--outdir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_fcorona)

    p = sub.add_parser(
        "line",
        help="Fe XIV or He I line emission from a narrowband and a wideband image",
        description="Line emission = NBF - C * WBF (- C_F * F-corona), with the coefficients of "
        "aspiics.lines.line_emission.",
    )
    p.add_argument("narrowband", metavar="NBF", help="Fe XIV or He I image (L2 or L3)")
    p.add_argument("wideband", metavar="WBF", help="Wideband image (L2 or L3)")
    p.add_argument("--outdir", required=True, metavar="DIR", help="output folder")
    p.add_argument("--continuum-ratio", type=float, default=None, metavar="C", help="continuum ratio C")
    p.add_argument(
        "--f-corona", choices=("koutchmy", "allen"), default=None, help="also subtract this F-corona model"
    )
    p.add_argument("--f-corona-ratio", type=float, default=1.0, metavar="CF", help="F-corona coefficient")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd_line)

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
