"""A stdio MCP server slow to start, as `npx -y pkg` fetching its package is: it says nothing until the file
argv[1] exists (it is "fetching"), then becomes tests/upstreams/kitchen.py named "slow" (same process, so the
gateway's initialize, already in its stdin, is read then). For the pool's and the list cache's handling of a
command still starting (upstream/pool.py `StillStarting`, catalog/lists.py)."""

import os
import sys
import time
from pathlib import Path

gate = Path(sys.argv[1])
while not gate.exists():  # fetching its package
    time.sleep(0.02)
kitchen = str(Path(__file__).with_name("kitchen.py"))
os.execv(sys.executable, [sys.executable, kitchen, "--transport", "stdio", "--name", "slow"])
