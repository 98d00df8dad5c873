"""The fake OpenAI server, driven by the real langchain-openai clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.unit_tests.openai_server import FakeOpenAIServer, embed_text

if TYPE_CHECKING:
    from collections.abc import Iterator

MESSAGES = [
    SystemMessage("You are a terse assistant."),
    HumanMessage("What is my favourite colour?"),
]
ANSWER = "echo: What is my favourite colour?"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def make_embeddings(server: FakeOpenAIServer, **kwargs: object) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=server.base_url,
        api_key="sk-test",
        check_embedding_ctx_length=False,
        **kwargs,  # type: ignore[arg-type]
    )


def make_chat(server: FakeOpenAIServer, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key="sk-test",
        **kwargs,  # type: ignore[arg-type]
    )


def test_embed_text_is_deterministic_and_normalised() -> None:
    vector = embed_text("Tea at five, coffee at nine")
    assert len(vector) == 256
    assert vector == embed_text("tea AT five; coffee at nine!")
    assert abs(sum(value * value for value in vector) - 1.0) < 1e-5
    assert embed_text("") == [1.0] + [0.0] * 255
    # Only the first five characters of a word count.
    assert embed_text("coffees") == embed_text("coffee")
    assert len(embed_text("x", dim=8)) == 8


def test_embeddings_match_embed_text(server: FakeOpenAIServer) -> None:
    texts = ["I like green tea", "The cat sat on the mat", ""]
    model = make_embeddings(server)
    assert model.embed_documents(texts) == [embed_text(text) for text in texts]
    assert model.embed_query("green tea") == embed_text("green tea")
    assert server.embedding_inputs() == [*texts, "green tea"]
    body = server.requests[0]["body"]
    assert body["model"] == "text-embedding-3-small"
    # The openai SDK asks for base64 unless told otherwise.
    assert body["encoding_format"] == "base64"


def test_embeddings_float_format_and_dimensions(server: FakeOpenAIServer) -> None:
    model = make_embeddings(
        server, dimensions=64, model_kwargs={"encoding_format": "float"}
    )
    assert model.embed_query("blue sky") == embed_text("blue sky", dim=64)
    body = server.requests[-1]["body"]
    assert body["encoding_format"] == "float"
    assert body["dimensions"] == 64


async def test_aembed_query(server: FakeOpenAIServer) -> None:
    model = make_embeddings(server)
    assert await model.aembed_query("async tea") == embed_text("async tea")
    assert await model.aembed_documents(["a b", "c"]) == [
        embed_text("a b"),
        embed_text("c"),
    ]


def test_chat_invoke_records_messages(server: FakeOpenAIServer) -> None:
    answer = make_chat(server).invoke(MESSAGES)
    assert answer.content == ANSWER
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == len(ANSWER.split())
    (body,) = server.chat_requests()
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is my favourite colour?"},
    ]
    assert not body.get("stream")
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test"


def test_chat_custom_reply() -> None:
    with FakeOpenAIServer(reply=lambda messages: f"{len(messages)} messages") as fake:
        assert make_chat(fake).invoke(MESSAGES).content == "2 messages"


def test_chat_stream(server: FakeOpenAIServer) -> None:
    chunks = list(make_chat(server).stream(MESSAGES))
    pieces = [chunk.content for chunk in chunks if chunk.content]
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER  # type: ignore[arg-type]
    (body,) = server.chat_requests()
    assert body["stream"] is True


def test_chat_stream_usage(server: FakeOpenAIServer) -> None:
    chunks = list(make_chat(server, stream_usage=True).stream(MESSAGES))
    assert server.chat_requests()[0]["stream_options"] == {"include_usage": True}
    usage = [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata]
    assert usage
    assert usage[-1]["output_tokens"] == len(ANSWER.split())


async def test_chat_astream(server: FakeOpenAIServer) -> None:
    chunks = [chunk async for chunk in make_chat(server).astream(MESSAGES)]
    pieces = [chunk.content for chunk in chunks if chunk.content]
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER  # type: ignore[arg-type]
    answer = await make_chat(server).ainvoke(MESSAGES)
    assert answer.content == ANSWER


def test_embeddings_status_raises(server: FakeOpenAIServer) -> None:
    server.embeddings_status = 500
    model = make_embeddings(server, max_retries=0)
    with pytest.raises(openai.InternalServerError, match="Injected"):
        model.embed_query("boom")
    server.embeddings_status = 200
    assert model.embed_query("fine") == embed_text("fine")


def test_chat_status_raises(server: FakeOpenAIServer) -> None:
    server.chat_status = 429
    with pytest.raises(openai.RateLimitError):
        make_chat(server, max_retries=0).invoke(MESSAGES)


def test_embeddings_delay_times_out(server: FakeOpenAIServer) -> None:
    server.embeddings_delay = 1.0
    model = make_embeddings(server, timeout=0.2, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        model.embed_query("slow")


def test_chat_delay_times_out(server: FakeOpenAIServer) -> None:
    server.chat_delay = 1.0
    with pytest.raises(openai.APITimeoutError):
        make_chat(server, timeout=0.2, max_retries=0).invoke(MESSAGES)


def test_unknown_path_is_404(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.models.list()
