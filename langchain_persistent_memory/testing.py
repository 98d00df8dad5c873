"""Offline stand-ins for demos and tests. Not language models.

`EchoChatModel` answers with the messages it was given, so a demo or a
test can show exactly what reached the model (the injected memories, the
recent history, the current message) without a network or an API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from typing_extensions import override

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.callbacks import CallbackManagerForLLMRun


class EchoChatModel(BaseChatModel):
    r"""A deterministic chat "model" that repeats the prompt it received.

    NOT a language model: it understands nothing. Its answer starts with
    `label` and lists each message it was given as `[type] text`, so the
    output shows what a real model would have seen; its own earlier answers
    in the history are cut to their first line. Streaming yields the answer
    line by line.

    Example:
        ```python
        EchoChatModel().invoke("hi").content
        # '[echo model, not an LLM] I was given 1 message:\n[human] hi'
        ```
    """

    label: str = "[echo model, not an LLM]"
    """How every answer starts, so nobody mistakes it for a model's."""

    @property
    @override
    def _llm_type(self) -> str:
        return "echo"

    def _answer(self, messages: list[BaseMessage]) -> str:
        count = len(messages)
        lines = [f"{self.label} I was given {count} message{'s' * (count != 1)}:"]
        for message in messages:
            text = str(message.text)
            if text.startswith(self.label):  # its own earlier answer: one line
                text = text.splitlines()[0] + " ..."
            lines.append(f"[{message.type}] {text}")
        return "\n".join(lines)

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(self._answer(messages))
        return ChatResult(generations=[ChatGeneration(message=message)])

    @override
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for line in self._answer(messages).splitlines(keepends=True):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=line))
            if run_manager is not None:
                run_manager.on_llm_new_token(line, chunk=chunk)
            yield chunk
