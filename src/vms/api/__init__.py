"""The HTTP API under ``/api``: routes, request bounds and the mapping of the one error type
to HTTP."""
