"""shoal's benchmark suite: the same workloads on shoal and on dask.distributed.

``make bench`` (or ``python -m benchmarks --flavor shoal --flavor distributed``) runs every
workload on each flavor, each in a fresh process with its own time limit, and prints a
table and writes JSON. See ``benchmarks/README.md`` for what is measured and how.
"""
