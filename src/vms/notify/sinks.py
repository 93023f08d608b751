"""The sinks the configuration asks for: the catalog always, then MQTT, NATS, each webhook and
the daily Parquet files when configured."""

from __future__ import annotations

from vms.config import Config
from vms.events.bus import Sink
from vms.events.store import EventStore, StoreSink
from vms.notify.mqtt import MqttSink
from vms.notify.nats import NatsSink
from vms.notify.parquet import ParquetSink
from vms.notify.webhook import WebhookSink


def from_config(config: Config, store: EventStore) -> list[Sink]:
    ev = config.events
    out: list[Sink] = [StoreSink(store)]
    if ev.mqtt.enabled:
        out.append(MqttSink(ev.mqtt))
    if ev.nats.enabled:
        out.append(NatsSink(ev.nats))
    out.extend(WebhookSink(w) for w in ev.webhooks)
    if ev.parquet:
        out.append(ParquetSink(config.data_dir / "events" / "parquet"))
    return out
