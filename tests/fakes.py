"""Stand-ins shared by the runner tests."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from jobrunner.genesys import ApiError, Created, FoundUser, Named, NewUser, TransportError


class FakeClient:
    """Answers create/search from scripts; records every call. Default: create succeeds."""

    def __init__(self) -> None:
        self.users: dict[str, FoundUser] = {}
        self.create_script: dict[str, deque[Any]] = {}
        self.search_script: dict[str, deque[Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.authenticated = 0

    def authenticate(self) -> None:
        self.authenticated += 1

    def add_user(self, new: NewUser, user_id: str) -> FoundUser:
        user = FoundUser(
            user_id,
            new.name,
            new.email,
            "active",
            new.division_id,
            new.title,
            new.department,
            (new.phone,) if new.phone else (),
            phone=new.phone,
            extension=new.extension,
        )
        self.users[new.email.lower()] = user
        return user

    def create_user(self, new: NewUser) -> str:
        with self.lock:
            self.calls.append(("create", new.email))
            step = (
                self.create_script.get(new.email, deque()).popleft()
                if self.create_script.get(new.email)
                else "ok"
            )
        if step == "ok":
            if new.email.lower() in self.users:
                raise ApiError(409, "general.conflict", "The email address is already in use")
            return Created(self.add_user(new, f"id-{new.email}").id, 1)
        if step == "drop-after-create":
            self.add_user(new, f"id-{new.email}")
            raise TransportError("dropped", "connection dropped before an answer", True)
        raise step

    def division_by_id(self, division_id: str) -> Named | None:
        with self.lock:
            self.calls.append(("lookup", division_id))
        return Named(division_id, "Some division")

    def find_user_by_email(self, email: str) -> FoundUser | None:
        with self.lock:
            self.calls.append(("search", email))
            script = self.search_script.get(email)
            if script:
                step = script.popleft()
                if isinstance(step, Exception):
                    raise step
        return self.users.get(email.lower())
