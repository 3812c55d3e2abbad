"""Frames in and masks out: files, folders, video, cameras, datasets, the seeded synthetic clips."""
