"""Package data of ``aspiics`` (default calibration constants)."""
