"""Pure NumPy processing: the quantity catalogue, validation, and (later) alerts, indices, rollups.

This package imports nothing else of Pusat's: ingest hands it columnar arrays, it returns arrays.
"""
