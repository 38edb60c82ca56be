"""Ranking a virtual server's tools for a search (`tool_search`, docs/tool-search.md): BM25 over the words of
each tool's name, title, description and argument names.

One `ToolIndex` per built tool list (catalog/view.py keeps it on the `Built`, so it is made once per catalog
revision, on the first search, never per call). A query scores only the tools that share a word with it
(postings with the per-tool weight precomputed), then the best are filtered to those the caller may see.
About 1 ms per query over 10,000 tools (tests/unit/test_tool_search.py measures it).
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

JSON = dict[str, Any]

K1 = 1.2
B = 0.75
NAME_WEIGHT = 2  # a word of the name counts as if written twice

# camelCase and snake_case split into words; digits are words of their own.
_WORD = re.compile(r"[A-Z]{2,}s(?![a-z])|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STOP = frozenset("a an and are as at be by for from in into is it of on or that the this to with you your".split())


def words(text: str) -> list[str]:
    """The index's words of a text: split at case changes and non-letters, lower-cased, stop words dropped,
    a plural `s` removed (issues → issue)."""
    out: list[str] = []
    for w in _WORD.findall(text):
        w = w.lower()
        if w in _STOP:
            continue
        if len(w) > 2 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def _tool_words(tool: JSON) -> list[str]:
    name = tool.get("name")
    parts: list[str] = []
    if isinstance(name, str):
        parts.extend(words(name) * NAME_WEIGHT)
    for key in ("title", "description"):
        value = tool.get(key)
        if isinstance(value, str):
            parts.extend(words(value))
    schema = tool.get("inputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict):
        for prop in props:
            if isinstance(prop, str):
                parts.extend(words(prop))
    return parts


class ToolIndex:
    """BM25 over a list of tools; `search` returns positions into that list, best first."""

    __slots__ = ("_postings", "size")

    def __init__(self, tools: Sequence[JSON]) -> None:
        self.size = len(tools)
        docs = [_tool_words(t) for t in tools]
        avg = (sum(len(d) for d in docs) / len(docs)) if docs else 1.0
        counts: dict[str, dict[int, int]] = {}
        for i, doc in enumerate(docs):
            for w in doc:
                per = counts.setdefault(w, {})
                per[i] = per.get(i, 0) + 1
        n = len(docs)
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for w, per in counts.items():
            idf = math.log(1 + (n - len(per) + 0.5) / (len(per) + 0.5))
            self._postings[w] = [
                (i, idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(docs[i]) / avg))) for i, tf in per.items()
            ]

    def scores(self, query: str) -> dict[int, float]:
        """Position → score, for every tool sharing a word with the query."""
        acc: dict[int, float] = {}
        get = acc.get
        for w in set(words(query)):
            for i, weight in self._postings.get(w, ()):
                acc[i] = get(i, 0.0) + weight
        return acc

    def search(self, query: str, limit: int, allowed: Callable[[int], bool]) -> list[int]:
        """The positions of the `limit` best tools for `query` among those `allowed` admits, best first
        (equal scores: list order)."""
        acc = self.scores(query)
        if len(acc) <= limit * 4:
            ranked: Iterable[tuple[float, int]] = sorted((-s, i) for i, s in acc.items())
        else:  # partial sort: enough of the best to fill `limit` after filtering, the rest only if needed
            ranked = _best_first(acc)
        out: list[int] = []
        for _, i in ranked:
            if allowed(i):
                out.append(i)
                if len(out) >= limit:
                    break
        return out


def _best_first(acc: dict[int, float]) -> Iterable[tuple[float, int]]:
    heap = [(-s, i) for i, s in acc.items()]
    heapq.heapify(heap)
    while heap:
        yield heapq.heappop(heap)
