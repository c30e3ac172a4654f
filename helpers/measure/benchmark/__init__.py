"""The benchmark (`python -m helpers benchmark`, cli.py): measure.py measures every section, results.py
types them (one dataclass per figure), helpers.measure.targets judges them against today's goals,
report.py renders them into BENCHMARKS.md's "benchmark" section, README's serving table and a plot.

Notebook 03 and tests/test_handler.py take their comparisons and synthetic photos from measure.py.
"""
