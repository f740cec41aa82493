"""Fuzzing as a habit: schemathesis runs every operation of Siesta's OpenAPI document
(``GET /api/v1/openapi.json``) against a live ``siesta serve`` on every test run.

The ``siesta serve`` runs in a subprocess with a temporary config dir (PATCH
/api/v1/settings writes its settings.toml there) and one model, ``tiny``, a fake backend
(tests/fakes/backend.py): the document's examples name ``tiny``, so loads, unloads,
timeouts and forwarded requests really happen. Schemathesis (its CLI, in a subprocess of
its own) sends each operation a bounded number of generated requests, valid and invalid,
and fails on any 5xx, on any answer whose status, content type, headers or body the
document does not describe, and on a request the document calls invalid that is answered
2xx. ``/api/v1/events`` is left out: its answer never ends.

The seed is fixed, so CI sees the same requests every run; ``SIESTA_FUZZ_SEED=random``
(or a number) explores others, and ``SIESTA_FUZZ_MAX_EXAMPLES`` goes deeper. A failure
prints schemathesis's report, with a curl command that reproduces each finding, and the
end of the server's log.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.api.openapi import PATH as OPENAPI_PATH
from app.core.models.backend import free_port
from tests.portable import kill_hard

pytest.importorskip("schemathesis")

REPO = Path(__file__).resolve().parents[2]
SEED = 26  # issue 26, "hostile input, round 3"
MAX_EXAMPLES = 20
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection")
RUN_TIMEOUT = 150  # seconds; a run takes about 10 s here

pytestmark = pytest.mark.timeout(RUN_TIMEOUT + 60)


def _seed() -> int:
    chosen = os.environ.get("SIESTA_FUZZ_SEED", "")
    if chosen == "random":
        return random.randrange(2**31)
    return int(chosen) if chosen else SEED


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stops ``siesta serve`` and everything it started: a graceful stop first (it stops
    its models), then at once whatever is left, so no process outlives the test."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.terminate()  # SIGTERM on POSIX: Siesta unloads its models and exits
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_hard(proc.pid)
            proc.wait(timeout=10)
    for child in family:  # a backend the stop could not reach (or, on Windows, never told)
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=5)


@pytest.fixture
def live_siesta(paths, write_recipe, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A ``siesta serve`` of a temporary config dir with the fake model ``tiny``, on a free
    port; (base URL, its log file). Always stopped, with its backends, when the test ends."""
    write_recipe("tiny", fake=[])
    port = free_port()
    log = tmp_path / "siesta-serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config-dir", str(paths.config_dir), "--port", str(port),
             "--stop-timeout", "3", "--load-timeout", "30"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"siesta serve exited with {proc.returncode}:\n{_tail(log)}"
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"siesta serve did not answer within 30 s:\n{_tail(log)}"
            time.sleep(0.05)
        yield base, log
    finally:
        _stop(proc)


def test_schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe(live_siesta,
                                                                                            tmp_path: Path):
    base, log = live_siesta
    seed = _seed()
    max_examples = os.environ.get("SIESTA_FUZZ_MAX_EXAMPLES", str(MAX_EXAMPLES))
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", base + OPENAPI_PATH,
        "--checks", ",".join(CHECKS),
        "--exclude-path", "/api/v1/events",  # an endless stream
        "--max-examples", max_examples, "--seed", str(seed),
        "--request-timeout", "40",  # a load of tiny takes a second; a hung answer is a finding
        "--generation-database", "none",  # nothing written to the working dir; the seed reproduces a run
        "--no-color", "--warnings", "off",
    ]
    started = time.monotonic()
    run = subprocess.run(command, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, env={**os.environ, "NO_COLOR": "1"})
    took = time.monotonic() - started
    report = (run.stdout + run.stderr).splitlines()
    assert run.returncode == 0, (
        f"schemathesis (seed {seed}, {max_examples} examples, {took:.0f} s) found answers Siesta must not give; "
        f"replay with SIESTA_FUZZ_SEED={seed}. Its report:\n" + "\n".join(report[-200:])
        + f"\n\nThe end of the server's log ({log}):\n{_tail(log)}")
    assert any("passed" in line for line in report), "\n".join(report[-50:])  # it did run the operations
