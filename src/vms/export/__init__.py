"""Signed export: a range of one or more cameras as ordinary MP4 files, with a manifest of
their hashes signed with the server's Ed25519 key (docs/design/playback.md, "Export").

- :mod:`~vms.export.remux`: a camera's fMP4 range stream to an MP4 that starts at the instant
  asked for (stream copy, ``moov`` first, an edit list);
- :mod:`~vms.export.signing`: the key in ``<data_dir>/export-signing.key``, sign and verify;
- :mod:`~vms.export.manifest`: ``manifest.json`` (canonical JSON) and ``manifest.sig``;
- :mod:`~vms.export.jobs`: the jobs (queued, running, done, failed, cancelled) and their files;
- :mod:`~vms.export.verify`: what ``vms verify`` checks; :mod:`~vms.export.cli` the commands.
"""
