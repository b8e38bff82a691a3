"""Hand-run benchmarks (`make bench`); not part of the test run. See bench/RESULTS.md."""
