"""The Models window's Today column and memory given back for ``siesta --connect``: read
through the client from a real second Siesta (``GET /api/v1/history``, ``GET /api/v1/models``'
``given_back``)."""

from __future__ import annotations

import pytest

from app.core.client import ManagerClient
from app.ui.bridge import ManagerBridge
from app.ui.windows.models import COL_TODAY, ModelsWindow
from tests.ui.helpers import FakeShell, until
from tests.ui.test_connect_mode import ServedSiesta

pytestmark = pytest.mark.timeout(90)


def test_the_today_column_of_a_siesta_elsewhere(loop, tmp_path, qtbot) -> None:
    served = ServedSiesta(tmp_path)
    client = ManagerClient(served.url)
    try:
        async def body() -> None:
            await client.start()
            bridge = ManagerBridge(client)
            bridge.api_url = served.url
            await client.load("tiny")
            await client.unload("tiny")
            window = ModelsWindow(bridge, FakeShell(has_tray=True))
            qtbot.addWidget(window)
            window.show()
            row = list(window.rows).index("tiny")
            await until(lambda: window.table.item(row, COL_TODAY).text().startswith("1×, "), 10, "tiny's day")
            assert window.table.item(row, COL_TODAY).toolTip().startswith("Today: loaded 1×, ")
            spare = list(window.rows).index("spare")
            assert window.table.item(spare, COL_TODAY).text() == "not loaded"
            summary = bridge.given_back_summary()
            assert summary is not None and {"today", "total", "since"} <= set(summary)
            window.close()
            await bridge.close()

        loop.run_until_complete(body())
    finally:
        loop.run_until_complete(client.close())
        served.stop()
