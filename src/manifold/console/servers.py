"""The console's virtual server pages (issue 13 item 3): list, editor with a live preview, snippets.
To be built by the console-servers slice."""

from __future__ import annotations

from starlette.routing import BaseRoute

from manifold.console.frame import Frame


class ServerPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        return []
