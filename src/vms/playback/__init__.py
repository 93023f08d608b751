"""Playback of recorded video: which stored bytes cover a time range (:mod:`.plan`), and the
range served as one fragmented-MP4 stream on one time line, with HTTP Range, trick play and a
video-only variant (:mod:`.stream`, :mod:`.fragments`). Nothing is remuxed or decoded: the
stored ``moof``/``mdat`` pairs are read from the segment files and only their ``tfdt`` is
rewritten (docs/design/playback.md). The one decoder is a thumbnail's (:mod:`.thumbnail`): the
first frame of one keyframe fragment.
"""
