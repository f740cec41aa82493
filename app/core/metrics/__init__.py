"""What Siesta counts as it runs, as plain data for the API layer to show: loads by result and
their durations, unloads by reason, requests by model and status (``counts``); the history
file of loads and unloads in the state dir (``history``), what it says per day and how much
memory idle and memory-pressure unloads gave back (``timeline``); and the one subscriber to
the manager's events that feeds them all (``recorder``). No Qt, no HTTP, no Prometheus:
``app/api/metrics/`` turns these figures into metrics at scrape time."""
