"""Demo upstream over stdio: a tiny notes store kept in memory.

    python -m manifold.demo.notes

Tools: add_note(title, body), list_notes(), search_notes(query).
Resource template: notes://{id}. Prompt: summarize_notes.
Notes live as long as the process; ids count up from 1, so runs are reproducible.
"""

import warnings

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from pydantic import BaseModel

warnings.filterwarnings("ignore", message=r".*deprecated as of 2026-07-28.*")


class Note(BaseModel):
    id: int
    title: str
    body: str


class NoteStore:
    """Notes in insertion order, with ids that count up from 1."""

    def __init__(self) -> None:
        self._notes: dict[int, Note] = {}

    def add(self, title: str, body: str) -> Note:
        note = Note(id=len(self._notes) + 1, title=title, body=body)
        self._notes[note.id] = note
        return note

    def all(self) -> list[Note]:
        return list(self._notes.values())

    def get(self, note_id: int) -> Note | None:
        return self._notes.get(note_id)

    def search(self, query: str) -> list[Note]:
        needle = query.casefold()
        return [n for n in self._notes.values() if needle in n.title.casefold() or needle in n.body.casefold()]


def build_server(store: NoteStore | None = None) -> MCPServer:
    store = store or NoteStore()
    store.add("Welcome", "This note comes from the notes demo upstream behind Manifold.")
    mcp = MCPServer("notes", version="0.1.0", instructions="A small notes store.", log_level="WARNING")

    @mcp.tool()
    def add_note(title: str, body: str) -> Note:
        """Save a note; returns it with its new id."""
        return store.add(title, body)

    @mcp.tool()
    def list_notes() -> list[Note]:
        """All notes, oldest first."""
        return store.all()

    @mcp.tool()
    def search_notes(query: str) -> list[Note]:
        """Notes whose title or body contains the query (case-insensitive)."""
        return store.search(query)

    @mcp.resource("notes://{id}", mime_type="text/markdown")
    def note(id: str) -> str:
        """One note, as markdown."""
        found = store.get(int(id)) if id.isdigit() else None
        if found is None:
            raise ResourceNotFoundError(f"no note {id}")
        return f"# {found.title}\n\n{found.body}\n"

    @mcp.prompt()
    def summarize_notes() -> str:
        """Ask the model to summarize every note."""
        listing = "\n".join(f"- {n.title}: {n.body}" for n in store.all()) or "(no notes)"
        return f"Summarize these notes in a few sentences:\n\n{listing}"

    return mcp


def main() -> None:
    build_server().run("stdio")


if __name__ == "__main__":
    main()
