"""The tamper-evident audit trail (docs/design/audit.md)."""
