"""The asyncio event loop the desktop app runs on: qasync's, with one fix.

``qasync.QEventLoop.run_until_complete`` (0.28) processes Qt's pending events once more
after its ``run_forever`` returns, to flush what is left, but by then it has already told
asyncio that no loop is running. An asyncio callback that Qt delivers in that last pass
(the first step of a task created as the future finished: a load started from a menu
click in that instant, a cancelled task's cleanup at shutdown) then fails in anything that
asks for the running loop, ``asyncio.create_subprocess_exec`` among them: the model
failed to load with "no running event loop". Here the loop stays the running loop until
that last pass is over.
"""

from __future__ import annotations

import asyncio
from typing import Any

import qasync


class SiestaEventLoop(qasync.QEventLoop):
    """qasync's QEventLoop that is the running loop for every callback it delivers."""

    _in_run_until_complete = False

    def run_forever(self) -> Any:
        try:
            return super().run_forever()
        finally:
            if self._in_run_until_complete:
                # qasync's run_until_complete still runs callbacks after this returns
                asyncio.events._set_running_loop(self)

    def run_until_complete(self, future: Any) -> Any:
        self._in_run_until_complete = True
        try:
            return super().run_until_complete(future)
        finally:
            self._in_run_until_complete = False
            asyncio.events._set_running_loop(None)
