"""A small deterministic OpenAI-compatible HTTP server for the tests.

It lets the test suite drive the real ``langchain_openai`` clients
(``OpenAIEmbeddings``, ``ChatOpenAI``) over loopback, so the production code
path - the openai SDK, its HTTP transport, JSON and SSE parsing, retries and
timeouts - runs for real, while the answers stay deterministic and offline.

Usage::

    with FakeOpenAIServer() as server:
        model = OpenAIEmbeddings(base_url=server.base_url, api_key="sk-test", ...)

Endpoints: ``POST /v1/embeddings`` and ``POST /v1/chat/completions``
(streaming or not). Anything else answers 404 with an OpenAI-style error.
Only the standard library is used.
"""

from __future__ import annotations

import array
import base64
import contextlib
import hashlib
import json
import math
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from typing_extensions import Self

DIM = 256
"""Default embedding size."""

_PREFIX_LEN = 5
_WORD = re.compile(r"[a-z0-9]+")
_STREAM_PIECE = re.compile(r"\S+\s*|\s+")


def _bucket(word: str, dim: int) -> int:
    digest = hashlib.blake2b(word[:_PREFIX_LEN].encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % dim


def embed_text(text: str, dim: int = DIM) -> list[float]:
    """Embed ``text`` as the server does: a normalised bag of hashed words.

    The text is lower-cased and split into ``[a-z0-9]+`` words; each word's
    first five characters pick a bucket (blake2b), which gets ``+1.0``. An
    empty text maps to the unit vector on bucket 0. The vector is L2-normalised
    and rounded to float32, so the plain-float and base64 wire formats give
    exactly the same numbers.

    Args:
        text: The text to embed.
        dim: The vector length.

    Returns:
        The vector, as ``dim`` Python floats.
    """
    vector = [0.0] * dim
    words = _WORD.findall(text.lower())
    if not words:
        vector[0] = 1.0
    for word in words:
        vector[_bucket(word, dim)] += 1.0
    norm = math.sqrt(sum(value * value for value in vector))
    return array.array("f", [value / norm for value in vector]).tolist()


def _content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return str(content)


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The default chat reply: ``"echo: "`` + the text of the last user message.

    Args:
        messages: The OpenAI-format messages of the request.

    Returns:
        The assistant's reply.
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            return "echo: " + _content_text(message.get("content"))
    return "echo: "


def _count_words(text: str) -> int:
    return len(text.split())


def _input_texts(value: Any) -> list[str]:
    """The texts of an embeddings ``input``: str, list of str, or token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return [repr(value)]  # one token-id list
        return [item if isinstance(item, str) else repr(item) for item in value]
    return [repr(value)]


def _error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": None,
            "code": str(status),
        }
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and went away is expected; keep quiet.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the default per-request logging."""

    # -- helpers ----------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error_json(self, status: int, message: str, kind: str) -> None:
        self._send_json(status, _error_body(status, message, kind))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- routing ----------------------------------------------------------

    def do_GET(self) -> None:
        """Answer every GET with 404: only the POST endpoints exist."""
        self._send_error_json(
            404, f"Unknown path: {self.path}", "invalid_request_error"
        )

    def do_POST(self) -> None:
        """Record the request and dispatch it to its endpoint."""
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        fake = self.server.fake
        fake._record(
            path, body, {key.lower(): value for key, value in self.headers.items()}
        )
        if not isinstance(body, dict):
            self._send_error_json(
                400, "The body is not a JSON object.", "invalid_request_error"
            )
        elif path == "/v1/embeddings":
            self._embeddings(body)
        elif path == "/v1/chat/completions":
            self._chat(body)
        else:
            self._send_error_json(
                404, f"Unknown path: {self.path}", "invalid_request_error"
            )

    # -- endpoints ---------------------------------------------------------

    def _embeddings(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        faulty = fake.embeddings_fault_filter is None or fake.embeddings_fault_filter(
            _input_texts(body.get("input", []))
        )
        fake._pause(fake.embeddings_delay if faulty else 0.0)
        status = fake.embeddings_status if faulty else 200
        if status != 200:
            self._send_error_json(
                status, f"Injected embeddings failure ({status}).", "server_error"
            )
            return
        if "input" not in body:
            self._send_error_json(
                400, "Missing required parameter: 'input'.", "invalid_request_error"
            )
            return
        texts = _input_texts(body["input"])
        dim = body.get("dimensions") or fake.dim
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dim)
            encoded: Any = vector
            if as_base64:
                packed = array.array("f", vector)
                if sys.byteorder != "little":
                    packed.byteswap()
                encoded = base64.b64encode(packed.tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_count_words(text) for text in texts)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        fake._pause(fake.chat_delay)
        status = fake.chat_status
        if status != 200:
            self._send_error_json(
                status, f"Injected chat failure ({status}).", "server_error"
            )
            return
        messages = body.get("messages")
        if not isinstance(messages, list):
            self._send_error_json(
                400, "Missing required parameter: 'messages'.", "invalid_request_error"
            )
            return
        reply = fake.reply(messages)
        prompt_tokens = sum(
            _count_words(_content_text(message.get("content")))
            for message in messages
            if isinstance(message, dict)
        )
        completion_tokens = _count_words(reply)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "created": int(time.time()),
            "model": body.get("model", ""),
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream"):
            options = body.get("stream_options") or {}
            self._stream_chat(
                head, reply, usage if options.get("include_usage") else None
            )
            return
        self._send_json(
            200,
            {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": reply,
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    def _stream_chat(
        self, head: dict[str, Any], reply: str, usage: dict[str, int] | None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in _chat_chunks(head, reply, usage):
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # the terminating zero-length chunk


def _chat_chunks(
    head: dict[str, Any], reply: str, usage: dict[str, int] | None
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply."""

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return {**head, "object": "chat.completion.chunk", "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""}, None)
    for piece in _STREAM_PIECE.findall(reply):
        yield chunk({"content": piece}, None)
    yield chunk({}, "stop")
    if usage is not None:
        yield {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}


class FakeOpenAIServer:
    """A deterministic OpenAI-compatible server on ``127.0.0.1``, for tests.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    Every request is recorded in :attr:`requests`. The failure knobs
    (``embeddings_status``, ``embeddings_delay``, ``chat_status``,
    ``chat_delay``) are plain attributes and may be changed at any time.

    Args:
        dim: Default embedding size (a request's ``dimensions`` overrides it).
        reply: Computes the chat reply from the request's messages; defaults
            to :func:`reply_for`.
    """

    def __init__(
        self,
        dim: int = DIM,
        reply: Callable[[list[dict[str, Any]]], str] | None = None,
    ) -> None:
        self.dim = dim
        self.reply: Callable[[list[dict[str, Any]]], str] = reply or reply_for
        self.requests: list[dict[str, Any]] = []
        self.embeddings_status: int = 200
        self.embeddings_delay: float = 0.0
        # When set, the two knobs above apply only to requests whose texts
        # it accepts (e.g. fail the write of a memory, not the query).
        self.embeddings_fault_filter: Callable[[list[str]], bool] | None = None
        self.chat_status: int = 200
        self.chat_delay: float = 0.0
        self.base_url = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        port = httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed handlers and close open connections."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- recorded traffic --------------------------------------------------

    def chat_requests(self) -> list[dict[str, Any]]:
        """The bodies of every request to ``/v1/chat/completions``, in order."""
        with self._lock:
            return [
                request["body"]
                for request in self.requests
                if request["path"] == "/v1/chat/completions"
            ]

    def embedding_inputs(self) -> list[str]:
        """Every text sent to ``/v1/embeddings``, flattened, in order."""
        with self._lock:
            bodies = [
                request["body"]
                for request in self.requests
                if request["path"] == "/v1/embeddings"
            ]
        texts: list[str] = []
        for body in bodies:
            if isinstance(body, dict) and "input" in body:
                texts.extend(_input_texts(body["input"]))
        return texts

    # -- used by the handler -----------------------------------------------

    def _record(self, path: str, body: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append({"path": path, "body": body, "headers": headers})

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)
