"""Offline stand-ins for demos and tests. Not language models.

`EchoChatModel` answers with the messages it was given, so a demo or a
test can show exactly what reached the model (the injected memories, the
recent history, the current message) without a network or an API key.
`ScriptedToolChatModel` calls the memory tools by fixed rules, so an agent
built with `create_agent` runs offline and the same way every time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field
from typing_extensions import override

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool


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


_REMEMBER = re.compile(
    r"^\s*remember\b[\s:,-]*(?:that\s+)?(?P<content>\S.*)$", re.IGNORECASE | re.DOTALL
)
_KIND_WORDS = (
    ("preference", re.compile(r"\b(prefer|like|love|hate|favou?rite)", re.IGNORECASE)),
    (
        "decision",
        re.compile(r"\b(decide|decided|chose|choose|will use)\b", re.IGNORECASE),
    ),
)


class ScriptedToolChatModel(BaseChatModel):
    """A deterministic chat "model" that calls memory tools by fixed rules.

    NOT a language model: it understands nothing, and exists so that an
    agent with the memory tools runs offline, the same way every time. It
    supports `bind_tools` and only calls tools that were bound. It looks at
    the last message only:

    - a human message starting with "Remember" ("Remember that I prefer
      tea.", "Remember: ...") calls `save_tool` with the rest as `content`
      (and `kind="preference"` or `"decision"` when a word such as "prefer"
      or "decided" says so and the tool offers that kind);
    - a human message ending with "?" calls `search_tool` with it as `query`;
    - after tool results, it answers with them, prefixed by `label`;
    - anything else gets an answer saying no tool applies.

    `extra_args` are merged into every tool call's arguments, to show what
    happens when a model sends arguments the tool does not take (such as a
    `user_id` of its own choosing).

    Example:
        ```python
        from langchain.agents import create_agent

        agent = create_agent(ScriptedToolChatModel(), tools=create_memory_tools(memory))
        agent.invoke(
            {"messages": [("human", "Remember that I prefer tea.")]},
            config={"configurable": {"user_id": "alice"}},
        )
        ```
    """

    label: str = "[scripted model, not an LLM]"
    """How every answer starts, so nobody mistakes it for a model's."""
    save_tool: str = "save_memory"
    """The tool called for "Remember ..." messages."""
    search_tool: str = "search_memory"
    """The tool called for questions."""
    extra_args: dict[str, Any] = Field(default_factory=dict)
    """Merged into the arguments of every tool call."""

    @property
    @override
    def _llm_type(self) -> str:
        return "scripted-tool-calls"

    @override
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the model may then call them (and only them)."""
        schemas = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=schemas, tool_choice=tool_choice, **kwargs)

    def _reply(
        self, messages: list[BaseMessage], tools: Sequence[dict[str, Any]]
    ) -> AIMessage:
        if not messages:
            return AIMessage(f"{self.label} I was given no messages.")
        last = messages[-1]
        if isinstance(last, ToolMessage):
            results: list[ToolMessage] = []
            for message in reversed(messages):
                if not isinstance(message, ToolMessage):
                    break
                results.insert(0, message)
            lines = [f"{self.label} The tools answered:"]
            lines.extend(f"[{result.name}] {result.text}" for result in results)
            return AIMessage("\n".join(lines))
        text = last.text if isinstance(last, HumanMessage) else ""
        bound = {
            schema["function"]["name"]: schema["function"].get("parameters", {})
            for schema in tools
        }
        remember = _REMEMBER.match(text)
        if remember:
            name, args = self.save_tool, {"content": remember.group("content").strip()}
            offered = bound.get(name, {}).get("properties", {}).get("kind", {})
            for kind, words in _KIND_WORDS:
                if kind in offered.get("enum", ()) and words.search(args["content"]):
                    args["kind"] = kind
                    break
        elif text.rstrip().endswith("?"):
            name, args = self.search_tool, {"query": text.strip()}
        else:
            return AIMessage(
                f"{self.label} No tool applies: start with 'Remember' to save, "
                "or ask a question to search."
            )
        if name not in bound:
            return AIMessage(f"{self.label} I would call {name}, but it is not bound.")
        call = ToolCall(
            name=name,
            args={**args, **self.extra_args},
            id=f"call_{len(messages)}",
            type="tool_call",
        )
        return AIMessage(f"{self.label} Calling {name}.", tool_calls=[call])

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self._reply(messages, kwargs.get("tools") or [])
        return ChatResult(generations=[ChatGeneration(message=message)])
