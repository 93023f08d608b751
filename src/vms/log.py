"""Log set-up: one line per event, naming the camera, as text or JSON; secrets scrubbed.

Every record passes through :class:`Redact`, which removes ``user:password@`` from any URL in
the message, so a camera URL that reaches a log line by any path cannot leak its password.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

from vms.config import redact


class Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if not hasattr(record, "camera"):
            record.camera = None
        return True


def _timestamp(record: logging.LogRecord) -> str:
    t = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        camera = getattr(record, "camera", None)
        where = f" [{camera}]" if camera else ""
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}{where}: {record.msg}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.msg,
        }
        camera = getattr(record, "camera", None)
        if camera:
            out["camera"] = camera
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redact())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("alembic", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
