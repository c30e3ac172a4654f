"""The benchmark (`python -m helpers benchmark`, cli.py): measure.py measures every section into one
results dict, goals.py judges it against today's targets, report.py renders it into BENCHMARKS.md's
"benchmark" section and a plot.

Notebook 03 and tests/test_handler.py take their comparisons and synthetic photos from here.
"""

from helpers.measure.benchmark.measure import bytes_to_tensor_comparison, preprocessing_comparison, synthetic_photo

__all__ = ["bytes_to_tensor_comparison", "preprocessing_comparison", "synthetic_photo"]
