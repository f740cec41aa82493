"""Siesta's figures over HTTP: ``GET /metrics`` in Prometheus's text format (a custom
prometheus_client Collector, on a registry of its own, that reads the core's figures at
scrape time: ``collector``), the request counting that feeds it (one middleware and the
app's ``on_response_prepare`` signal), and ``GET /api/v1/history`` (``routes``)."""
