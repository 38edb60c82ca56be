"""The upstream event-stream parser (upstream/http.py `SseDecoder`): the same events however the bytes are cut."""

from __future__ import annotations

import pytest

from manifold.upstream.http import SseDecoder

STREAM = (
    b": a comment\r\n"
    b"retry: 1500\r\n"
    b"id: 7\r\n"
    b"event: message\r\n"
    b'data: {"jsonrpc":"2.0",\r\n'
    b'data: "id":1}\r\n'
    b"\r\n"
    b"id: 8\n"
    b"data:no-space\n"
    b"\n"
    b"event: endpoint\n"
    b"data: /messages?session=abc\n"
    b"\n"
)
EXPECTED = [
    ("message", b'{"jsonrpc":"2.0",\n"id":1}', "7"),
    ("message", b"no-space", "8"),
    ("endpoint", b"/messages?session=abc", "8"),
]


def events(chunks: list[bytes], decoder: SseDecoder | None = None) -> list[tuple[str, bytes, str | None]]:
    decoder = decoder or SseDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_the_same_events_however_the_stream_is_cut(size: int) -> None:
    decoder = SseDecoder()
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert events(chunks, decoder) == EXPECTED
    assert decoder.retry_ms == 1500 and decoder.last_event_id == "8"


def test_a_large_event_in_small_chunks_arrives_whole() -> None:
    payload = b"x" * (4 * 1024 * 1024)
    stream = b"data: " + payload + b"\r\n\r\n"
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    assert events(chunks) == [("message", payload, None)]


def test_an_event_over_the_limit_is_refused_whether_or_not_its_line_has_ended() -> None:
    with pytest.raises(ValueError, match="too large"):
        events([b"data: " + b"x" * 2000], SseDecoder(max_event_bytes=1000))  # a line that never ends
    with pytest.raises(ValueError, match="too large"):
        events([b"data: " + b"x" * 600 + b"\n", b"data: " + b"x" * 600 + b"\n"], SseDecoder(max_event_bytes=1000))
