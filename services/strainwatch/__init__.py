"""strainwatch: upper-back strain exposure from workplace wearables."""

__version__ = "0.1.0"
