"""The console's access pages (issue 13 items 4-7): grants and explain, keys and service accounts,
connections, the audit viewer. To be built by the console-access slice."""

from __future__ import annotations

from starlette.routing import BaseRoute

from manifold.console.frame import Frame


class AccessPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        return []
