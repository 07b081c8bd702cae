"""The Procfile runs the product: `honcho start` brings up web and worker that serve an order."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .processes import BIN, Process, base_env, free_port, wait_for
from .wsclient import order_in_flight, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(90)]


async def test_honcho_start_serves_an_order(
    redis_url: str, log_dir: Path, make_token: Callable[..., str]
) -> None:
    """Both Procfile processes start from the contract's environment alone and work together."""
    port = free_port()
    env = base_env(redis_url, PORT=str(port))
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    procs = Process("honcho", [str(BIN / "honcho"), "start"], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200,
            30,
            "the Procfile's web process to be ready",
        )
        wait_for(lambda: " ready." in procs.log(), 30, "the Procfile's worker to be ready")
        token = make_token("lee")
        ws, _ = await order_in_flight(url, f"ws://127.0.0.1:{port}/ws", token)
        end = await ws.recv_until(terminal, timeout=30)
        assert end["event"]["type"] == "task.succeeded"
        await ws.close()
    finally:
        procs.signal(signal.SIGINT)
        assert procs.stop(timeout=20) is not None
