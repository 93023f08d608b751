"""vms: a video management system that records IP cameras into crash-safe fragmented MP4."""

__version__ = "0.1.0"
