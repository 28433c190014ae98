"""Benchmarks of Pusat, run against real servers started for the run (`pusat bench ...`).

Each benchmark measures Pusat side by side with its baselines in one run on the machine at
hand and reports ratios, since the project's machines are shared and noisy: a lone absolute time
says little. Results are kept in `bench/RESULTS.md`.
"""
