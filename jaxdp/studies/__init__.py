"""Drivers of benchmarks and paper tables, for `experiments/` and tests.

Not library API: each module runs a study through the library's public
functions and formats what it measured (see README.md beside this file).
"""
