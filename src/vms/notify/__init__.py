"""The event bus's sinks: MQTT, NATS JetStream, webhooks and daily Parquet files."""
