"""Operations: liveness, readiness, Prometheus metrics and the node's relay stats."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from taskcast.realtime import metrics
from taskcast.realtime.backend import backend_connected
from taskcast.realtime.errors import Forbidden

from .deps import NodeDep, PrincipalDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(node: NodeDep) -> JSONResponse:
    """Ready while Redis answers and the pub/sub listener is connected."""
    checks = {"redis": False, "pubsub": backend_connected(node.hub.backend)}
    try:
        checks["redis"] = bool(await asyncio.wait_for(node.redis.ping(), 2.0))
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = False
    ready = all(checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, 200 if ready else 503)


@router.get("/ws/stats")
async def stats(node: NodeDep, principal: PrincipalDep) -> dict[str, Any]:
    if not principal.is_admin:
        raise Forbidden("admin scope required")
    counts = asdict(metrics.COUNTS)
    return {
        "node": node.node_id,
        **node.hub.stats(),
        "events_in": counts["events_in"],
        "frames_out": counts["frames_out"],
        "coalesced": counts["coalesced"],
        "slow_consumer_closes": counts["slow_consumer_closes"],
        "counters": counts,
    }


@router.get("/metrics")
async def prometheus(request: Request, node: NodeDep) -> Response:
    metrics.GAUGES.update(node.hub.stats())
    metrics.GAUGES["gc_frozen_objects"] = gc.get_freeze_count()
    with contextlib.suppress(Exception):  # Redis away: the last shared counts read stand
        metrics.SHARED.update(await asyncio.wait_for(node.store.counts(), 2.0))
    registry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
