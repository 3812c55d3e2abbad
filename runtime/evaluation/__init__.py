"""Scoring masks against ground truth (torch-free, numpy only): DAVIS J&F. Comparing two runs is runtime/compare.py."""
