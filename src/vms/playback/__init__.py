"""Playback: what was recorded, read back from the segment files for viewers."""
