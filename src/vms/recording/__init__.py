"""Recording: packets to crash-safe fragmented-MP4 segment files and their catalog rows. It
owns the recorder (segments, fragments, decode time), the writer threads (one per storage root,
one for catalog rows), the storage roots, crash recovery, retention and ``vms check``."""
