"""``siesta ps`` and ``siesta ps --watch``: the running instance's models as a table."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from app.cli.client import ApiClient, NotRunning
from app.cli.table import format_table
from app.core.metrics.words import given_back_line

if TYPE_CHECKING:
    from app.cli.context import Context


def ps_command(ctx: Context) -> int:
    client = ctx.client
    try:
        answer = client.call("GET", "/api/v1/models")
        models = answer["models"]
    except NotRunning as exc:
        print(f"siesta: {exc}")
        return 3
    if ctx.args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not ctx.args.watch:
        print(format_table(models) if models else "no recipes yet: add one to the recipes folder, or run `siesta demo`")
        gave_back = given_back_line(answer.get("given_back"), time.time())
        if gave_back:
            print(gave_back)
        return 0
    return watch(client, {m["name"]: m for m in models})


def watch(client: ApiClient, models: dict[str, dict[str, Any]]) -> int:
    """Redraws the table on every event, and once a second for the countdowns."""
    import threading

    lock = threading.Lock()

    def reader() -> None:
        resp = client.open("GET", "/api/v1/events", timeout=None)
        for raw in resp:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data: "):
                event = json.loads(line[6:])
                with lock:
                    if event["reason"] == "removed":
                        models.pop(event["model"]["name"], None)
                    else:
                        models[event["model"]["name"]] = event["model"]

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            with lock:
                table = format_table(sorted(models.values(), key=lambda m: m["name"]))
            sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
            sys.stdout.flush()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
