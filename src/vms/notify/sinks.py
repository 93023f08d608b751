"""The sinks the configuration asks for: the catalog always, then MQTT, NATS, each webhook and
the daily Parquet files when configured. Each sink's module (and its client library) is
imported only when the configuration asks for it."""

from __future__ import annotations

from vms.config import Config
from vms.events.bus import Sink
from vms.events.store import EventStore, StoreSink


def from_config(config: Config, store: EventStore) -> list[Sink]:
    ev = config.events
    out: list[Sink] = [StoreSink(store)]
    if ev.mqtt.enabled:
        from vms.notify.mqtt import MqttSink

        out.append(MqttSink(ev.mqtt))
    if ev.nats.enabled:
        from vms.notify.nats import NatsSink

        out.append(NatsSink(ev.nats))
    if ev.webhooks:
        from vms.notify.webhook import WebhookSink

        out.extend(WebhookSink(w) for w in ev.webhooks)
    if ev.parquet:
        from vms.notify.parquet import ParquetSink

        out.append(ParquetSink(config.data_dir / "events" / "parquet"))
    return out
