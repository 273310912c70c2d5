"""Tunery's shared library: settings, the NATS bus, records, gRPC helpers and the `tunery` CLI."""
