"""The webhook sink against a real HTTP receiver on 127.0.0.1 that answers as each test scripts:
signed bodies, retries after timeouts and 5xx, Retry-After, 4xx and redirects given up."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.brokers import HANG, Receiver
from tests.support.events import event, new
from tests.support.polling import wait_for
from vms.detection_config import WebhookConfig
from vms.errors import VmsError
from vms.events.bus import EventBus
from vms.events.model import HealthMessage, MotionMessage
from vms.notify.webhook import WebhookSink, display_url, retry_after_s, sign, verify

SECRET = "s3cret-key"


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def run(receiver: Receiver, **config: Any) -> tuple[EventBus, WebhookSink]:
    backoff = config.pop("backoff", (0.05, 0.2))
    url = config.pop("url", receiver.url())
    sink = WebhookSink(WebhookConfig(url=url, secret=SecretStr(SECRET), **config), backoff=backoff)
    bus = EventBus(queue=100)
    bus.add(sink)
    bus.start()
    return bus, sink


def test_posts_are_signed_and_verify(receivers: list[Receiver]) -> None:
    receivers.append(rx := Receiver([200]))
    bus, sink = run(rx)
    try:
        e = event("cam1")
        bus.publish(new(e))
        bus.publish(MotionMessage("cam1", True, 1))  # not for webhooks
        bus.publish(HealthMessage("cam1", "offline", 2))
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 2, 10, "two deliveries")
    finally:
        bus.stop(timeout=2)
    assert len(rx.requests) == 2
    (_, h1, b1, path), (_, h2, b2, _) = rx.requests
    assert path == "/hook" and h1["Content-Type"] == "application/json"
    for h, b in ((h1, b1), (h2, b2)):
        assert abs(int(h["X-VMS-Timestamp"]) - time.time()) < 30
        assert verify(SECRET, h["X-VMS-Timestamp"], b, h["X-VMS-Signature"], max_age_s=300)
    assert json.loads(b1) == {"kind": "event", "data": new(e).to_json()}
    assert json.loads(b2) == {
        "kind": "health", "data": {"camera": "cam1", "state": "offline", "t_us": 2}
    }  # fmt: skip
    ts, sig = h1["X-VMS-Timestamp"], h1["X-VMS-Signature"]
    assert not verify(SECRET, ts, b1.replace(b"cam1", b"cam2"), sig)  # altered body
    assert not verify("other", ts, b1, sig)  # wrong secret
    assert not verify(SECRET, str(int(ts) + 1), b1, sig)  # altered timestamp
    assert not verify(SECRET, ts, b1, sig, max_age_s=300, now=int(ts) + 301)  # replayed late


def test_two_timeouts_then_an_answer_is_delivered_on_the_third_try(
    receivers: list[Receiver],
) -> None:
    receivers.append(rx := Receiver([HANG, HANG, 200]))
    bus, sink = run(rx, timeout_s=0.3)
    try:
        bus.publish(new(event()))
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 1, 10, "the delivery")
    finally:
        bus.stop(timeout=2)
    assert len(rx.requests) == 3
    assert bus.stats()[sink.name]["failed"] == 0
    # Each try is signed afresh: the receiver can check every one of them.
    for _, h, b, _ in rx.requests:
        assert verify(SECRET, h["X-VMS-Timestamp"], b, h["X-VMS-Signature"])


def test_a_400_is_given_up_after_one_try_and_the_next_message_goes(
    receivers: list[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    receivers.append(rx := Receiver([400, 200]))
    bus, sink = run(rx)
    try:
        bus.publish(new(event()))
        bus.publish(new(event()))
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 1, 10, "the second message")
    finally:
        bus.stop(timeout=2)
    assert len(rx.requests) == 2
    assert bus.stats()[sink.name]["failed"] == 1
    (line,) = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert "HTTP 400" in line and SECRET not in line


def test_a_redirect_is_not_followed(receivers: list[Receiver]) -> None:
    receivers.append(elsewhere := Receiver([200]))
    receivers.append(rx := Receiver([(302, {"Location": elsewhere.url()})]))
    bus, sink = run(rx)
    try:
        bus.publish(new(event()))
        wait_for(lambda: bus.stats()[sink.name]["failed"] == 1, 10, "the message given up")
    finally:
        bus.stop(timeout=2)
    assert len(rx.requests) == 1 and not elsewhere.requests


def test_503_with_retry_after_waits_that_long(receivers: list[Receiver]) -> None:
    receivers.append(rx := Receiver([(503, {"Retry-After": "1"}), 200]))
    bus, sink = run(rx, backoff=(0.02, 5.0))
    try:
        bus.publish(new(event()))
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 1, 10, "the delivery")
    finally:
        bus.stop(timeout=2)
    (t1, *_), (t2, *_) = rx.requests
    assert 0.95 <= t2 - t1 < 2.5, t2 - t1  # not the 0.02 s the backoff alone would wait


def test_5xx_every_time_is_given_up_after_max_tries_with_growing_pauses(
    receivers: list[Receiver],
) -> None:
    receivers.append(rx := Receiver([500]))
    bus, sink = run(rx, max_tries=4, backoff=(0.2, 0.3))
    try:
        bus.publish(new(event()))
        wait_for(lambda: bus.stats()[sink.name]["failed"] == 1, 10, "the message given up")
    finally:
        bus.stop(timeout=2)
    times = [t for t, *_ in rx.requests]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.2, 0.3, 0.3 (the cap; 0.4 then 0.8 without it), each ±20 %, plus some scheduling: the
    # upper bound leaves 0.24 s of slack for a loaded machine and still fails without the cap.
    assert gaps[0] >= 0.16 and gaps[1] >= 0.24, gaps
    assert 0.24 <= gaps[2] < 0.6, gaps


def test_helpers() -> None:
    assert sign("k", "1", b"x") == sign(b"k", "1", b"x")
    assert sign("k", "1", b"x").startswith("sha256=") and len(sign("k", "1", b"x")) == 71
    assert not verify("k", "not-a-number", b"x", sign("k", "1", b"x"), max_age_s=10)
    assert display_url("https://u:p@example.com:8443/hook/T0K3N?token=abc") == (
        "https://example.com:8443"
    )
    assert retry_after_s("7") == 7.0 and retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date past: at once
    assert retry_after_s("soon") is None
    with pytest.raises(VmsError):
        WebhookSink(WebhookConfig(url="http://x/", secret=SecretStr("k")), backoff=(0, 1))
