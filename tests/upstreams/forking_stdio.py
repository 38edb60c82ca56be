"""A stdio MCP server whose command forks a helper that outlives it unless killed: writes the helper's pid to
argv[1], then becomes tests/upstreams/kitchen.py (same process). For upstream/stdio.py's cleanup."""

import os
import subprocess
import sys
from pathlib import Path

helper = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
Path(sys.argv[1]).write_text(str(helper.pid))
kitchen = str(Path(__file__).with_name("kitchen.py"))
os.execv(sys.executable, [sys.executable, kitchen, "--transport", "stdio", "--name", "forking"])
