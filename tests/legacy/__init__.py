"""Contract tests of the legacy Flask inventory service (examples/legacy_inventory)."""
