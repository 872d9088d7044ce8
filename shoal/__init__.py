"""shoal: a distributed task engine for Python, a drop-in replacement for dask.distributed.

Layering (a module imports only from layers below it; see tests/test_architecture.py):

    L7 cli → L6 deploy → L4 scheduler/worker/client servers → L3 comm
    → L2 pure state machines → L1 protocol → L0 _types, errors, config
"""

__version__ = "0.1.0"
