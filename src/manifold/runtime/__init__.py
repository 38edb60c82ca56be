"""The composition root: builds every service in dependency order and owns the running state."""
