"""The two small upstream MCP servers that `make run` starts for the demo.

- `python -m manifold.demo.notes`: stdio; an in-memory notes store.
- `python -m manifold.demo.toolbox --port 8471`: streamable HTTP on 127.0.0.1; small utilities.

Both use only the mcp SDK and need no network beyond loopback.
"""
