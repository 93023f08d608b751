"""Cameras at run time: each camera stream's pipeline (what its reader publishes to, and what
fans its packets out to the recorder and to asyncio and thread subscribers), and the set of
cameras the server runs, changeable while it runs."""
