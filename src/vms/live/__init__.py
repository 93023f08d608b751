"""Live view: a camera stream's packets, from its relay, remuxed for players as they arrive."""
