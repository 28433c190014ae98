"""Processing: the quantity catalogue, validation, alert rules and engine, rollups, indices.

This package imports nothing else of Pusat's: ingest hands it columnar arrays, it returns arrays.
The per-batch hot loops are compiled with numba (processing/kernels.py); the rest is NumPy.
"""
