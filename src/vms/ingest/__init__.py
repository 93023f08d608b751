"""Ingest: reading cameras. It owns the RTSP client (one reactor thread for every RTSP-over-TCP
session: ``rtsp``, ``rtsp_headers``, ``receiver``, ``rtp``, ``rtcp``) and the PyAV reader (a
thread per stream for UDP, RTSPS and clips: ``pyav_reader``, ``pyav_source``). A reader turns
what a camera sends into :class:`vms.media.Packet` objects and publishes them, with each stream
(re)start and each loss, to its stream's :class:`vms.media.StreamSink`; it knows nothing of
what consumes them (recording, live view, detection)."""
