"""Who may subscribe to a channel: the app's policy (`TASKCAST_AUTHORIZE`), else built-in rules.

An app names a callable `authorize(principal, channel) -> bool | None` (or a coroutine
function returning that). True admits, False refuses, None leaves the decision to the
built-in rules (`channels.may_subscribe`: a task's owner, a user's own channel, topic
scopes, `admin`). `/ws`, `/sse` and the task routes all ask `Access.check`, so one policy
governs every way in; with a policy, channel names of the app's own (`board:42`) are valid.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable

from . import channels
from .channels import Channel
from .errors import Forbidden
from .store import Store
from .tokens import Principal

logger = logging.getLogger("taskcast.access")

Decision = bool | None
Policy = Callable[[Principal, str], Decision | Awaitable[Decision]]


def load_policy(spec: str) -> Policy:
    """Import `package.module:callable`; `ValueError` naming `TASKCAST_AUTHORIZE` if it fails."""
    module_name, _, attr = spec.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"TASKCAST_AUTHORIZE={spec}: cannot import it ({exc})") from None
    if not callable(target):
        raise ValueError(f"TASKCAST_AUTHORIZE={spec} is not callable")
    return target


class Access:
    """Checks subscriptions (and task reads) against the policy and the built-in rules."""

    def __init__(self, store: Store, policy: Policy | None = None) -> None:
        self.store = store
        self.policy = policy

    def channel(self, name: str) -> Channel:
        """Parse a requested channel name; app-named channels only when a policy is set."""
        return channels.parse(name, app_names=self.policy is not None)

    async def check(self, principal: Principal, name: str) -> Channel:
        """The parsed channel if `principal` may subscribe to it; `BadChannel`/`Forbidden` else."""
        channel = self.channel(name)
        if not await self.allowed(principal, channel):
            raise Forbidden(f"not allowed to subscribe to {channel.name}")
        return channel

    async def allowed(self, principal: Principal, channel: Channel) -> bool:
        """The policy's answer, or the built-in rules' when it has none (returns None)."""
        if self.policy is not None:
            decision = await self._ask(principal, channel.name)
            if decision is not None:
                return decision
        owner = None
        if channel.kind == "task" and not principal.is_admin:
            owner = await self.store.task_owner(channel.id)
        return channels.may_subscribe(channel, principal.user, principal.scopes, owner)

    async def _ask(self, principal: Principal, name: str) -> Decision:
        assert self.policy is not None
        try:
            decision = self.policy(principal, name)
            if inspect.isawaitable(decision):
                decision = await decision
        except Exception as exc:  # noqa: BLE001 - the app's code: refuse, say why in the log
            logger.error("authorization policy raised %s on %s", type(exc).__name__, name)
            return False
        if decision is not None and not isinstance(decision, bool):
            logger.error(
                "authorization policy returned %s, not bool or None: refused",
                type(decision).__name__,
            )
            return False
        return decision
