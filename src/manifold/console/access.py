"""The console's access pages (issue 13 items 4-7), one module each; `AccessPages.routes()` collects them:

grants.py        /admin/grants: grants listed (one server's or all), added and removed in place; explain
keys.py          /admin/keys: keys (create with the secret shown once, revoke), service accounts
audit_viewer.py  /admin/audit: the audit table filtered and paged, a row in full
connections.py   /admin/connections: users' OAuth connections to upstreams, revoke one
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from manifold.console.audit_viewer import AuditPages
from manifold.console.connections import ConnectionPages
from manifold.console.frame import Frame
from manifold.console.grants import GrantPages
from manifold.console.keys import KeyPages


class AccessPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services
        self.pages = (GrantPages(frame), KeyPages(frame), AuditPages(frame), ConnectionPages(frame))

    def routes(self) -> list[BaseRoute]:
        return [route for pages in self.pages for route in pages.routes()]
