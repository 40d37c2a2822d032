"""
Forward-model simulator of ASPIICS: synthetic calibration releases, corona scenes and L1 frames.

Everything is seedable (same seed → identical output) and fast (vectorised float32 NumPy), so
the test suite and the documentation can make realistic inputs on the fly:

>>> from aspiics.simulate import make_calibration_set, simulate_acquisition
>>> cal = make_calibration_set(shape=(128, 128), seed=1)
>>> acq = simulate_acquisition("Wideband", (0.1, 1.0, 10.0), shape=(128, 128), calibration=cal, seed=1)
>>> len(acq.frames)
3

Every frame carries a `FrameTruth` (scene, vignetting, banding, saturation, missing tiles, the
L2 a perfect calibration would give, and its noise) for quantitative tests.
"""

from aspiics.simulate.calibration import SyntheticCalibration, make_calibration_set, scaled_geometry
from aspiics.simulate.corona import CoronaModel, RenderedCorona, helioprojective_geometry
from aspiics.simulate.detector import (
    BandingModel,
    FrameTruth,
    SimulatedAcquisition,
    SimulatedFrame,
    apply_nonlinearity,
    exposure_time,
    simulate_acquisition,
    simulate_polarized_set,
)

__all__ = [
    "BandingModel",
    "CoronaModel",
    "FrameTruth",
    "RenderedCorona",
    "SimulatedAcquisition",
    "SimulatedFrame",
    "SyntheticCalibration",
    "apply_nonlinearity",
    "exposure_time",
    "helioprojective_geometry",
    "make_calibration_set",
    "scaled_geometry",
    "simulate_acquisition",
    "simulate_polarized_set",
]
