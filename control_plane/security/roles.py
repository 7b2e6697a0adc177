"""Operator roles, ordered: every role may do what the roles below it may do."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    VIEWER = 1  # read fleet, models, audit-free reads
    OPERATOR = 2  # roll out, promote, command actuators
    ADMIN = 3  # keys, enrollment, revocation, audit log

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {value!r}: use viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's name and role."""

    key_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        # auth off (--insecure): changes are recorded as made by `local`
        return "local" if self.key_id == ANONYMOUS_KEY_ID else f"apikey:{self.name}"

    def allows(self, needed: Role) -> bool:
        return self.role >= needed


ANONYMOUS_KEY_ID = 0
# Who the caller is when ``auth_enabled`` is false (demo and development): every role.
ANONYMOUS = Principal(key_id=ANONYMOUS_KEY_ID, name="anonymous", role=Role.ADMIN)
