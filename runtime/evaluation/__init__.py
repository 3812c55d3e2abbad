"""Scoring masks (torch-free, numpy only): DAVIS J&F against ground truth, agreement of two runs."""
