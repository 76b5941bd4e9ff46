"""edgerun test suite."""
