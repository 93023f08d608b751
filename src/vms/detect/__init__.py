"""Detection: frames, motion, detector plugins, tracking, zones and the event state machine."""
