"""Instants as the API, the command line and the audit trail read and write them.

**The scheme.** Every instant in a response is given twice, under two names: ``<name>_us``, an
integer of microseconds since 1970-01-01T00:00:00Z (exact: what the catalog stores, what a
client does arithmetic on), and ``<name>``, the same instant as an ISO 8601 UTC string with
microseconds and a ``Z`` (``"2026-11-26T10:00:00.123456Z"``, for people and for clients that
parse dates). A missing instant is ``null`` under both names. Durations are seconds, named
``*_s``.

A request may name an instant either way (:func:`parse_time`); an ISO 8601 instant without an
offset means UTC.
"""

from __future__ import annotations

import datetime
import re
from typing import TypeVar

from vms.errors import CAP, Detail, Kind, VmsError, capped

# The times a request may name: 1970-01-01 to 2200-01-01 UTC. Both ends sit far inside int64,
# so no window can overflow the catalog's INTEGER columns or the arithmetic on them.
MIN_TIME_US = 0
MAX_TIME_US = 7_258_118_400_000_000
TIME_RANGE = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z (0 to 7258118400000000 µs)"
# Longer than any ISO 8601 instant with an offset and microseconds; bounds the query at the edge.
TIME_MAX_CHARS = CAP
TIME_HELP = "µs since the epoch or ISO 8601 (naive means UTC)"
DAY_US = 86_400_000_000

D = TypeVar("D", int, None)  # what a missing instant means: a default, or none

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_US = datetime.timedelta(microseconds=1)
# Not str.isdigit(): that is true of "²" and "١٢٣", which int() then refuses or reads.
_MICROS = re.compile(r"-?[0-9]+")
# 20 digits are past any time in range already; int() of 5,000 digits raises.
_MICROS_MAX_DIGITS = 20


def invalid(field: str, problem: str) -> VmsError:
    """A 400 about one parameter: the message leads with its name, ``details`` names it too."""
    return VmsError(Kind.INVALID_ARGUMENT, f"{field}: {problem}", [Detail(field, problem)])


def parse_time(value: str | None, default: D, field: str = "time") -> int | D:
    """Microseconds since the epoch, or an ISO 8601 instant (naive means UTC), in the range
    the API accepts; ``field`` names the parameter in the error."""
    if value is None or value == "":
        return default
    if _MICROS.fullmatch(value):
        us = int(value) if len(value.lstrip("-")) <= _MICROS_MAX_DIGITS else None
    else:
        t = None
        if value.isascii() and len(value) <= TIME_MAX_CHARS:
            try:
                t = datetime.datetime.fromisoformat(value)
            except ValueError:
                pass
        if t is None:
            raise invalid(field, f"not a time: {capped(value)} ({TIME_HELP})")
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.UTC)
        # Exact integer arithmetic: timestamp() goes through a float.
        us = (t - _EPOCH) // _ONE_US
    if us is None or not MIN_TIME_US <= us <= MAX_TIME_US:
        raise invalid(field, f"out of range: {capped(value)}; allowed {TIME_RANGE}")
    return us


def iso(us: int) -> str:
    """``us`` since the epoch as ISO 8601 UTC, always with six decimals and ``Z``."""
    t = _EPOCH + datetime.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_or_none(us: int | None) -> str | None:
    return None if us is None else iso(us)
