"""The admin console at `/admin`: server-rendered pages (Jinja2, htmx) for admin principals (docs/console.md)."""
