"""The reference platform: ingest, storage, device state (speaks protocol v1 over MQTT)."""
