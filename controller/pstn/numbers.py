"""Phone numbers of the resource and where an inbound call to each goes.

A number is E.164 (`+` and up to 15 digits, ITU-T E.164 section 6). Its route is one of:
`{"call": id}` (join that call), `{"user": identity}` (ring that user: an event on their stream;
the call starts when they join), or `{"ivr": tree}` (a phone tree, validated when saved).
`NumberBook` keeps the numbers in the store and a copy in memory, so an INVITE's lookup costs
no disk read; it reloads the copy every few seconds when other controllers share the store.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from controller.pstn.ivr import PhoneTree, TreeError
from controller.pstn.store import PstnStore

E164 = re.compile(r"\+[1-9]\d{1,14}\Z")
_VISUAL = re.compile(r"[\s\-.()]")
RELOAD_S = 5.0


class RouteError(ValueError):
    """A route that cannot be saved; `field` says where (for the 422's message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def is_e164(number: str) -> bool:
    return bool(E164.match(number))


def normalize(text: str | None) -> str | None:
    """An E.164 number from what a SIP header carries: `+1 (555) 010-0199`, `0015550100199`,
    `15550100199` (a trunk that drops the +), a `;`-parameter tail. None when it is none."""
    if not text:
        return None
    text = text.split(";", 1)[0]
    text = _VISUAL.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    elif text and text[0] != "+" and text.isdigit() and len(text) >= 8:
        text = "+" + text
    return text if is_e164(text) else None


def validate_route(route: object) -> dict:
    """The route in canonical form, or RouteError. (Whether the call or user exists is checked
    by the caller, which knows the registry and the store.)"""
    if not isinstance(route, dict) or len(route) != 1:
        raise RouteError("route", "a route is exactly one of {'call': id}, {'user': id}, {'ivr': tree}")
    kind, value = next(iter(route.items()))
    if kind in ("call", "user"):
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise RouteError(f"route.{kind}", f"route.{kind} must be an id of 1..64 characters")
        return {kind: value}
    if kind == "ivr":
        try:
            tree = PhoneTree.parse(value)
        except TreeError as exc:
            raise RouteError(f"route.ivr.{exc.node}" if exc.node else "route.ivr", str(exc)) from None
        return {"ivr": tree.to_json()}
    raise RouteError("route", f"unknown route kind {kind!r} (call, user or ivr)")


@dataclass
class PhoneNumber:
    number: str
    route: dict
    created_at: float

    def to_json(self) -> dict:
        return {"number": self.number, "route": self.route, "created_at": self.created_at}


class NumberBook:
    def __init__(self, store: PstnStore) -> None:
        self.store = store
        self._numbers: dict[str, PhoneNumber] = {}
        self._loaded_at = 0.0

    async def load(self) -> None:
        rows = await self.store.numbers()
        self._numbers = {row["number"]: PhoneNumber(row["number"], row["route"], row["created_at"])
                         for row in rows}
        self._loaded_at = time.monotonic()

    async def lookup(self, number: str) -> PhoneNumber | None:
        found = self._numbers.get(number)
        if found is None or time.monotonic() - self._loaded_at > RELOAD_S:
            if time.monotonic() - self._loaded_at > RELOAD_S / 10:
                await self.load()   # another controller may have added or changed it
            found = self._numbers.get(number)
        return found

    async def add(self, number: str, route: dict) -> PhoneNumber | None:
        """Saves the number; None when it exists already."""
        row = await self.store.add_number(number, route)
        if row is None:
            return None
        record = PhoneNumber(row["number"], row["route"], row["created_at"])
        self._numbers[number] = record
        return record

    async def remove(self, number: str) -> bool:
        self._numbers.pop(number, None)
        return await self.store.remove_number(number)

    async def all(self) -> list[PhoneNumber]:
        await self.load()
        return sorted(self._numbers.values(), key=lambda n: n.number)
