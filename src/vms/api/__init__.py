"""The HTTP API: ``vms.api.routes.create_api`` assembles the routers (``system``, ``cameras``,
``recordings``), the one error body (``errors``), typed dependencies (``deps``), request and
response models (``models``), times (``times``) and the web hardening (``security``)."""
