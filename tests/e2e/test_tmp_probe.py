import pytest
from mcp.shared.exceptions import MCPError
from tests.e2e.test_audit_e2e import world, create_key, audit_events  # noqa
import anyio
pytestmark = pytest.mark.anyio

async def test_probe(world):
    gw = world.gw
    k = await create_key(gw, "--sa", "ci-bot", "--name", "x")
    async with gw.client("shared", key=k["token"]) as c:
        for call in (c.read_resource("kitchen+alpha://readme"), c.get_prompt("alpha__greet", {"name": "a"})):
            try:
                await call
            except MCPError as e:
                print("ERR", e.error)
    await anyio.sleep(1)
    for e in await audit_events(gw):
        print(e)
