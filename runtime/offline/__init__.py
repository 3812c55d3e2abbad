"""Offline runs: a whole clip through a tracker, with masks, reports and memory traces written."""
