"""Profiler: scenarios, statistics, power sampling and reports for `edgerun profile`."""
