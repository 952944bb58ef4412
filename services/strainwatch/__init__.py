"""strainwatch: upper-back strain exposure from workplace wearables."""

from strainwatch.native import select_engine

__version__ = "0.1.0"

# a compiled exposure engine only when it was built from the sources present (native.py)
select_engine()
