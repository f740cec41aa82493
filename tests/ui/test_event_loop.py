"""The app's qasync loop is the running loop for every callback it delivers."""

from __future__ import annotations

import asyncio
from typing import Any


def test_a_task_started_as_run_until_complete_ends_still_has_its_running_loop(loop: Any) -> None:
    """qasync processes Qt's events once more after its loop stops; a task whose first step
    lands there (a load clicked in the tray in that instant) used to find no running loop,
    and the model failed to load with "no running event loop"."""
    seen: list[Any] = []
    started: list[asyncio.Task[None]] = []

    async def needs_the_loop() -> None:
        seen.append(asyncio.get_running_loop())

    async def main() -> None:
        # this callback runs after run_until_complete's own stop callback
        current = asyncio.current_task()
        assert current is not None
        current.add_done_callback(lambda _t: started.append(loop.create_task(needs_the_loop())))

    for _ in range(3):
        loop.run_until_complete(main())
    loop.run_until_complete(asyncio.gather(*started, return_exceptions=True))
    assert [t.exception() for t in started] == [None, None, None]
    assert seen == [loop, loop, loop]
    assert asyncio.events._get_running_loop() is None  # and not left running after it
