"""Telemetry for BookGen: metrics, traces and logs, attached at one edge by `instrument()`."""
