"""Ranking a virtual server's tools for a search (`tool_search`, docs/tool-search.md): BM25 over the words of
each tool's name (counted twice), title, description and argument names.

One `ToolIndex` per built tool list (catalog/view.py keeps it on the `Built`: made once per catalog revision,
on the first search, never per call). Each word's postings hold the per-tool BM25 weight, so a query only adds
numbers. A query reads its rarer words' postings in full (up to `FULL_POSTINGS` entries); a word most tools
share (a low weight) is then added only to the best candidates, so no query walks the whole catalog more than
once. Only the tools the caller may see are scored (`mask`). bench/tool_search.py measures it: 10,000 tools.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

JSON = dict[str, Any]

K1 = 1.2
B = 0.75
NAME_WEIGHT = 2  # a word of the name counts as if written twice
MAX_QUERY_WORDS = 16  # distinct words of a query that are used
FULL_POSTINGS = 5_000  # postings a query reads in full (at least its rarest word's)
CANDIDATES = 500  # the best so far that its commonest words are then added to
MASKS = 64  # callers' visibility masks kept per index (one byte per tool each)

# camelCase and snake_case split into words ("getURL" → get, url; "list_PRs" → list, prs); letters keep the
# digits that follow them (ec2, http2), other digits are words of their own.
_WORD = re.compile(r"[A-Z]{2,}s(?![a-z])|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")
_STOP = frozenset(
    "a an and are as at be by can for from in into is it its of on or that the this to with you your".split()
)


def _normal(raw: str) -> str | None:
    """A found word as the index keeps it: lower-cased, a plural `s` dropped (issues → issue); None for a
    stop word."""
    w = raw.lower()
    if w in _STOP:
        return None
    if len(w) > 2 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return w


def words(text: str, seen: dict[str, str | None] | None = None) -> list[str]:
    """The index's words of a text. `seen`: normalisations already made (an index build passes one)."""
    if seen is None:
        seen = {}
    out: list[str] = []
    for raw in _WORD.findall(text):
        w = seen.get(raw, "")
        if w == "":
            w = seen[raw] = _normal(raw)
        if w is not None:
            out.append(w)
    return out


def _tool_words(tool: JSON, seen: dict[str, str | None]) -> list[str]:
    parts: list[str] = []
    name = tool.get("name")
    if isinstance(name, str):
        parts.extend(words(name, seen) * NAME_WEIGHT)
    for key in ("title", "description"):
        value = tool.get(key)
        if isinstance(value, str):
            parts.extend(words(value, seen))
    schema = tool.get("inputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict):
        parts.extend(words(" ".join(p for p in props if isinstance(p, str)), seen))
    return parts


class ToolIndex:
    """BM25 over a list of tools; `search` answers positions into that list, best first."""

    __slots__ = ("_postings", "_best", "_position", "_masks", "size")

    def __init__(self, tools: Sequence[JSON]) -> None:
        self.size = len(tools)
        seen: dict[str, str | None] = {}
        counts = [Counter(_tool_words(t, seen)) for t in tools]
        lengths = [sum(c.values()) for c in counts]
        avg = (sum(lengths) / len(lengths)) if lengths else 1.0
        norm = [K1 * (1 - B + B * n / avg) for n in lengths]
        by_word: dict[str, list[tuple[int, int]]] = {}
        for i, c in enumerate(counts):
            for w, tf in c.items():
                by_word.setdefault(w, []).append((i, tf))
        n = len(tools)
        # word -> (tool positions, ascending; their weights): 8 bytes a posting (10,000 tools: about 2 MB)
        self._postings: dict[str, tuple[array[int], array[float]]] = {}
        # a word more tools share than a query reads in full: its CANDIDATES best postings, ascending
        self._best: dict[str, tuple[array[int], array[float]]] = {}
        for w, docs in by_word.items():
            idf = math.log(1 + (n - len(docs) + 0.5) / (len(docs) + 0.5)) * (K1 + 1)
            weights = [idf * tf / (tf + norm[i]) for i, tf in docs]
            self._postings[w] = (array("I", [i for i, _ in docs]), array("f", weights))
            if len(docs) > FULL_POSTINGS:
                best = sorted(heapq.nlargest(CANDIDATES, range(len(docs)), key=weights.__getitem__))
                self._best[w] = (array("I", [docs[k][0] for k in best]), array("f", [weights[k] for k in best]))
        self._position = {id(t): i for i, t in enumerate(tools)}
        self._masks: dict[int, tuple[Sequence[JSON], bytearray]] = {}

    def mask(self, visible: Sequence[JSON]) -> bytearray | None:
        """Which tools of the index are among `visible` (the same dicts: what tools/list shows a caller), one
        byte per tool; None when every tool is. Kept for the same list (a caller's list is cached by grants)."""
        if len(visible) == self.size:
            return None
        hit = self._masks.get(id(visible))
        if hit is not None and hit[0] is visible:
            return hit[1]
        m = bytearray(self.size)
        position = self._position
        for t in visible:
            i = position.get(id(t))
            if i is not None:
                m[i] = 1
        if len(self._masks) >= MASKS:
            self._masks.clear()
        self._masks[id(visible)] = (visible, m)
        return m

    def scores(self, query: str, mask: bytearray | None = None) -> dict[int, float]:
        """Position → score for the tools sharing a word with the query (and in `mask`, if given)."""
        found = sorted({w for w in words(query) if w in self._postings}, key=lambda w: len(self._postings[w][0]))
        postings = [self._postings[w] for w in found[:MAX_QUERY_WORDS]]
        if postings and mask is None and found[0] in self._best:
            # Every word of the query is one most tools share: its best postings stand for it.
            postings[0] = self._best[found[0]]
        acc: dict[int, float] = {}
        get = acc.get
        read = 0
        j = 0
        while j < len(postings) and (j == 0 or read + len(postings[j][0]) <= FULL_POSTINGS):
            positions, weights = postings[j]
            for i, weight in zip(positions, weights, strict=True):
                if mask is None or mask[i]:
                    acc[i] = get(i, 0.0) + weight
            read += len(positions)
            j += 1
        if j < len(postings):  # the commonest words: added to the best candidates only
            if len(acc) > CANDIDATES:
                acc = dict(heapq.nlargest(CANDIDATES, acc.items(), key=itemgetter(1)))
            for positions, weights in postings[j:]:
                n = len(positions)
                for i in acc:
                    k = bisect_left(positions, i)
                    if k < n and positions[k] == i:
                        acc[i] += weights[k]
        return acc

    def search(self, query: str, limit: int, mask: bytearray | None = None) -> list[int]:
        """The positions of the `limit` best tools for `query` among those in `mask`, best first (equal
        scores: list order)."""
        acc = self.scores(query, mask)
        best = heapq.nsmallest(limit, ((-s, i) for i, s in acc.items()))
        return [i for _, i in best]
