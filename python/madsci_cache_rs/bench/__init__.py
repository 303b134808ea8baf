"""Side-by-side benchmark: this package against the reference, in one run.

Run ``python -m madsci_cache_rs.bench``. Each row times our operation and the
reference's alternately in the same rounds, so the ratio is robust to a noisy
machine even when the absolute times are not.
"""
