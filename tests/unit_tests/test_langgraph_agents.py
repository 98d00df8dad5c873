"""PersistentMemoryStore under real agents and across processes.

Items survive the process that wrote them (and a SIGKILL in the middle of a
batch); a `create_agent` agent with LangMem's memory tools saves in one
process and recalls in another; LangMem's create/update/delete and our own
`create_memory_tools` see the same memories as `PersistentMemory`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from langchain.agents import create_agent
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import ToolMessage
from langmem import create_manage_memory_tool, create_search_memory_tool

from langchain_persistent_memory import PersistentMemory, create_memory_tools
from langchain_persistent_memory.langgraph import PersistentMemoryStore
from langchain_persistent_memory.testing import ScriptedToolChatModel
from tests.unit_tests.conftest import Place, run_python

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.tools import BaseTool

DIM = 32
INDEX: dict[str, Any] = {"fields": ["content"]}
LANGMEM_NS = ("memories", "{langgraph_user_id}")
ADA = {"configurable": {"langgraph_user_id": "ada"}}
BOB = {"configurable": {"langgraph_user_id": "bob"}}


@pytest.fixture
def memory(place: Place) -> Iterator[PersistentMemory]:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=DIM)) as mem:
        yield mem


@pytest.fixture
def store(memory: PersistentMemory) -> PersistentMemoryStore:
    return PersistentMemoryStore(memory, index=INDEX)


def langmem_agent(store: PersistentMemoryStore) -> Any:
    """LangMem's two tools, which find the store through the agent (get_store)."""
    return create_agent(
        ScriptedToolChatModel(save_tool="manage_memory", search_tool="search_memory"),
        tools=[
            create_manage_memory_tool(namespace=LANGMEM_NS),
            create_search_memory_tool(namespace=LANGMEM_NS),
        ],
        store=store,
    )


def tool_messages(result: dict[str, Any], name: str) -> list[ToolMessage]:
    return [
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.name == name
    ]


def recalled(agent: Any, question: str, config: dict[str, Any]) -> list[dict]:
    """Ask the agent a question; return the items its LangMem search returned."""
    result = agent.invoke({"messages": [("human", question)]}, config=config)
    (message,) = tool_messages(result, "search_memory")
    assert message.status != "error", message.text
    return json.loads(message.text)


def contents(items: list[dict]) -> list[str]:
    return [item["value"]["content"] for item in items]


def langmem_tools(store: PersistentMemoryStore) -> tuple[BaseTool, BaseTool]:
    return (
        create_manage_memory_tool(namespace=LANGMEM_NS, store=store),
        create_search_memory_tool(namespace=LANGMEM_NS, store=store),
    )


def table(store: PersistentMemoryStore) -> tuple[dict[str, str], list[tuple]]:
    """The memory's documents (id -> text) and the store_items rows, raw."""
    with store._db.read() as con:
        documents = dict(con.execute("SELECT id, text FROM documents").fetchall())
        items = [
            tuple(row)
            for row in con.execute(
                "SELECT namespace, key, memory_id FROM store_items"
            ).fetchall()
        ]
    return documents, items


# ------------------------------------------------ persistence across processes

WRITER = """
    import json, sys, time
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory.langgraph import PersistentMemoryStore

    index = {"fields": ["content"], "embed": DeterministicFakeEmbedding(size=32)}
    with PersistentMemoryStore(sys.argv[1], index=index) as store:
        before = time.time()
        tea = {"content": "Ada drinks green tea.", "kind": "preference"}
        store.put(("memories", "ada"), "tea", tea)
        store.put(("memories", "ada"), "chess", {"content": "Ada plays chess."})
        store.put(("memories", "ada"), "raw", {"content": "unindexed", "n": 3},
                  index=False)
        store.put(("memories", "ada"), "oslo", {"content": "Ada is in Oslo."},
                  ttl=60)
        store.put(("memories", "bob"), "coffee", {"content": "Bob drinks coffee."})
        store.put(("docs", "manuals"), "m1",
                  {"title": "Pump", "body": "How to fix the pump."},
                  index=["title", "body"])
        store.put(("docs", "manuals", "v2"), "m2",
                  {"content": "Version two of the pump manual."})
        time.sleep(0.01)
        tea = {"content": "Ada drinks green tea, no sugar.", "kind": "preference",
               "importance": 0.9}
        store.put(("memories", "ada"), "tea", tea)  # an update
        after = time.time()
        keys = [(("memories", "ada"), k) for k in ("tea", "chess", "raw", "oslo")]
        keys += [(("memories", "bob"), "coffee"), (("docs", "manuals"), "m1"),
                 (("docs", "manuals", "v2"), "m2")]
        report = {
            "before": before,
            "after": after,
            "items": [store.get(ns, k).dict() for ns, k in keys],
            "search": [
                [i.key, i.score]
                for i in store.search(("memories", "ada"), query="Ada's drink")
            ],
            "docs": [
                [list(i.namespace), i.key, i.score]
                for i in store.search(("docs",), query="pump manual")
            ],
            "namespaces": [list(ns) for ns in store.list_namespaces()],
        }
        # Last, and gone before anyone reads again: 0.001 min is 60 ms.
        store.put(("scratch",), "brief", {"content": "short-lived"}, ttl=0.001)
        time.sleep(0.2)
    print(json.dumps(report))
"""


def test_items_survive_the_process_that_wrote_them(place: Place) -> None:
    where = place("m")
    report = json.loads(run_python(WRITER, str(where)))
    with PersistentMemoryStore(
        where, index={**INDEX, "embed": DeterministicFakeEmbedding(size=DIM)}
    ) as store:
        # The same items: values, namespaces, keys and timestamps.
        for written in report["items"]:
            item = store.get(tuple(written["namespace"]), written["key"])
            assert item is not None, written
            assert item.dict() == written
        tea = store.get(("memories", "ada"), "tea")
        assert tea is not None
        assert report["before"] <= tea.created_at.timestamp() < report["after"]
        assert tea.created_at < tea.updated_at
        assert tea.updated_at.timestamp() <= report["after"]

        # The same ranking, with the same scores; the unindexed item last.
        again = [
            [i.key, i.score]
            for i in store.search(("memories", "ada"), query="Ada's drink")
        ]
        assert [k for k, _ in again] == [k for k, _ in report["search"]]
        assert {k for k, _ in again} == {"tea", "chess", "raw", "oslo"}
        assert again[-1] == ["raw", None]
        for (_, score), (_, was) in zip(again[:-1], report["search"][:-1], strict=True):
            assert score == pytest.approx(was, abs=1e-6)
        scores = [s for _, s in again[:-1]]
        assert scores == sorted(scores, reverse=True)
        docs = [
            [list(i.namespace), i.key, i.score]
            for i in store.search(("docs",), query="pump manual")
        ]
        assert [d[:2] for d in docs] == [d[:2] for d in report["docs"]]
        assert {d[1] for d in docs} == {"m1", "m2"}
        assert [d[2] for d in docs] == pytest.approx([d[2] for d in report["docs"]])

        # The same namespaces; the expired item is neither listed nor got.
        namespaces = [list(ns) for ns in store.list_namespaces()]
        assert namespaces == report["namespaces"]
        assert namespaces == [
            ["docs", "manuals"],
            ["docs", "manuals", "v2"],
            ["memories", "ada"],
            ["memories", "bob"],
        ]
        assert store.get(("scratch",), "brief") is None
        assert store.search(("scratch",)) == []
        # The TTLs were kept: the expired item is swept, the hour-long one stays.
        assert store.sweep_ttl() == 1
        assert store.get(("memories", "ada"), "oslo") is not None

        # The items of the user namespaces are that user's memories.
        memory = store.memory
        ada = {d.page_content: d for d in memory.list(user_id="ada")}
        assert set(ada) == {
            "Ada drinks green tea, no sugar.",
            "Ada plays chess.",
            "Ada is in Oslo.",
        }
        assert ada["Ada drinks green tea, no sugar."].metadata["kind"] == "preference"
        assert ada["Ada drinks green tea, no sugar."].metadata["importance"] == 0.9
        assert [d.page_content for d in memory.list(user_id="bob")] == [
            "Bob drinks coffee."
        ]
        hit = memory.search("Ada drinks green tea, no sugar.", user_id="ada", k=1)
        assert [d.page_content for d in hit] == ["Ada drinks green tea, no sugar."]


CRASH_WRITER = """
    import sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langgraph.store.base import PutOp
    from langchain_persistent_memory.langgraph import PersistentMemoryStore

    index = {"fields": ["content"], "embed": DeterministicFakeEmbedding(size=32)}
    store = PersistentMemoryStore(sys.argv[1], index=index)
    size = int(sys.argv[2])
    last = store.get(("memories", "w"), "last")
    batch = 0 if last is None else last.value["batch"] + 1
    while True:
        ops = [
            PutOp(
                ("memories", "w") if j % 2 else ("docs", "crash"),
                f"b{batch}-{j}",
                {"content": f"batch {batch} item {j}", "batch": batch},
            )
            for j in range(size)
        ]
        ops.append(PutOp(("memories", "w"), "last",
                         {"content": f"last batch {batch}", "batch": batch}))
        if batch:  # and delete an item (so a memory) of the batch before
            ops.append(PutOp(("memories", "w"), f"b{batch - 1}-1", None))
        store.batch(ops)
        print(batch, flush=True)
        batch += 1
"""
SIZE = 80


def run_until_killed(where: str, batches: int, into: float) -> list[int]:
    """Start the crash writer; SIGKILL it once it acknowledged `batches` more.

    The kill comes `into` (a fraction) of one batch's time after the last
    acknowledgement, to land inside the next batch (its embedding, or its
    transaction): where exactly does not matter to what is checked.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CRASH_WRITER), where, str(SIZE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    acknowledged: list[int] = []
    times: list[float] = []
    try:
        while len(acknowledged) < batches:
            line = lines.get(timeout=120)
            if not line:
                break
            times.append(time.monotonic())
            acknowledged.append(int(line))
        if len(times) >= 2:
            time.sleep(into * (times[-1] - times[-2]))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert len(acknowledged) == batches, stderr
    assert proc.returncode == -signal.SIGKILL
    return acknowledged


def check_whole_batches(store: PersistentMemoryStore, acknowledged: int) -> int:
    """Every acknowledged batch is there in full, a later one whole or not at all."""
    last = store.get(("memories", "w"), "last")
    assert last is not None
    top = last.value["batch"]
    assert top in (acknowledged, acknowledged + 1)  # the one in flight, or not
    assert last.value["content"] == f"last batch {top}"
    found = {
        item.key: item
        for namespace in (("memories", "w"), ("docs", "crash"))
        for item in store.search(namespace, limit=10**6)
    }
    expected = {
        f"b{i}-{j}"
        for i in range(top + 1)
        for j in range(SIZE)
        if not (j == 1 and i < top)  # deleted by the next batch
    } | {"last"}
    assert set(found) == expected
    for key, item in found.items():
        assert item.value["content"] == (
            f"last batch {top}"
            if key == "last"
            else f"batch {item.value['batch']} item {key.split('-')[1]}"
        )

    # Item rows and memories agree, both ways, and carry the same text.
    documents, rows = table(store)
    assert len(rows) == len(expected)
    memory_ids = {memory_id for _, _, memory_id in rows}
    assert None not in memory_ids  # every item here is indexed
    assert memory_ids <= set(documents)  # no item without its memory
    assert set(documents) <= memory_ids  # no memory left by a deleted item
    assert len(memory_ids) == len(rows)
    for namespace, key, memory_id in rows:
        assert namespace.startswith(('["memories","w"]', '["docs","crash"]'))
        assert documents[memory_id] == found[key].value["content"]
    # The vectors are there too: searched, every item has a score ...
    scored = store.search(("docs", "crash"), query="batch 0 item 0", limit=10**6)
    assert scored
    assert all(item.score is not None for item in scored)
    assert scored[0].key == "b0-0"
    # ... and the memory's own index finds them.
    hits = store.memory.search(f"last batch {top}", user_id="w", k=1)
    assert [d.page_content for d in hits] == [f"last batch {top}"]
    return top


@pytest.mark.slow
def test_a_writer_killed_mid_batch_leaves_whole_batches(place: Place) -> None:
    where = str(place("m"))
    embed = DeterministicFakeEmbedding(size=DIM)
    acknowledged = run_until_killed(where, 4, into=0.5)
    assert acknowledged == [0, 1, 2, 3]
    with PersistentMemoryStore(where, index={**INDEX, "embed": embed}) as store:
        top = check_whole_batches(store, acknowledged[-1])
    # A second writer resumes after the crash; killed again, same guarantees.
    acknowledged = run_until_killed(where, 3, into=0.9)
    assert acknowledged == [top + 1, top + 2, top + 3]
    with PersistentMemoryStore(where, index={**INDEX, "embed": embed}) as store:
        check_whole_batches(store, acknowledged[-1])


# ------------------------------------------- a LangMem agent, two processes

SAVER = """
    import json, sys
    from langchain.agents import create_agent
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langmem import create_manage_memory_tool, create_search_memory_tool
    from langchain_persistent_memory import PersistentMemory
    from langchain_persistent_memory.langgraph import PersistentMemoryStore
    from langchain_persistent_memory.testing import ScriptedToolChatModel

    ns = ("memories", "{langgraph_user_id}")
    with PersistentMemory(sys.argv[1], DeterministicFakeEmbedding(size=32)) as m:
        agent = create_agent(
            ScriptedToolChatModel(save_tool="manage_memory",
                                  search_tool="search_memory"),
            tools=[create_manage_memory_tool(namespace=ns),
                   create_search_memory_tool(namespace=ns)],
            store=PersistentMemoryStore(m, index={"fields": ["content"]}),
        )
        said = {}
        for user, text in [("ada", "Remember that I prefer green tea with lemon."),
                           ("bob", "Remember that I drink espresso at noon.")]:
            out = agent.invoke({"messages": [("human", text)]},
                               config={"configurable": {"langgraph_user_id": user}})
            said[user] = [msg.content for msg in out["messages"]
                          if msg.type == "tool"]
    print(json.dumps(said))
"""


def test_langmem_agent_saves_in_one_process_recalls_in_another(place: Place) -> None:
    said = json.loads(run_python(SAVER, str(place("m"))))
    (ada_saved,) = said["ada"]
    assert ada_saved.startswith("created memory ")
    ada_key = ada_saved.removeprefix("created memory ")

    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=DIM)) as fresh:
        store = PersistentMemoryStore(fresh, index=INDEX)
        agent = langmem_agent(store)
        ada = recalled(agent, "What do I like to drink?", ADA)
        assert contents(ada) == ["I prefer green tea with lemon."]
        assert ada[0]["key"] == ada_key
        assert ada[0]["namespace"] == ["memories", "ada"]
        assert ada[0]["score"] is not None
        bob = recalled(agent, "What do I like to drink?", BOB)
        assert contents(bob) == ["I drink espresso at noon."]
        assert (
            recalled(
                agent,
                "What do I like to drink?",
                {"configurable": {"langgraph_user_id": "carol"}},
            )
            == []
        )

        # The agent's memory is the chain's memory: PersistentMemory finds it.
        docs = fresh.search("green tea with lemon", user_id="ada", k=5)
        assert [d.page_content for d in docs] == ["I prefer green tea with lemon."]
        assert docs[0].metadata["user_id"] == "ada"
        assert "green tea" not in str(fresh.search("green tea", user_id="bob", k=5))

        # And what a chain adds, the agent's LangMem search finds.
        added = fresh.add("My cat is called Turing.", user_id="ada").ids
        found = recalled(agent, "What is my cat called?", ADA)
        assert sorted(contents(found)) == [
            "I prefer green tea with lemon.",
            "My cat is called Turing.",
        ]
        (cat,) = [item for item in found if item["key"] in added]
        assert cat["value"]["kind"] == "fact"
        assert "Turing" not in json.dumps(recalled(agent, "My cat?", BOB))


def test_langmem_create_update_delete_on_the_store(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    manage, search = langmem_tools(store)
    created = manage.invoke({"content": "Ada likes chess."}, config=ADA)
    assert created.startswith("created memory ")
    key = created.removeprefix("created memory ")
    manage.invoke({"content": "Bob likes chess too."}, config=BOB)
    assert [d.page_content for d in memory.list(user_id="ada")] == ["Ada likes chess."]

    updated = manage.invoke(
        {"content": "Ada likes go, not chess.", "action": "update", "id": key},
        config=ADA,
    )
    assert updated == f"updated memory {key}"
    item = store.get(("memories", "ada"), key)
    assert item is not None
    assert item.value == {"content": "Ada likes go, not chess."}
    assert item.updated_at > item.created_at
    docs = memory.list(user_id="ada")
    assert [d.page_content for d in docs] == ["Ada likes go, not chess."]
    hits = json.loads(search.invoke({"query": "Ada likes go, not chess."}, config=ADA))
    assert [(h["key"], h["value"]["content"]) for h in hits] == [
        (key, "Ada likes go, not chess.")
    ]
    assert memory.search("chess", user_id="ada", k=5)[0].id == docs[0].id

    deleted = manage.invoke({"action": "delete", "id": key}, config=ADA)
    assert deleted == f"Deleted memory {key}"
    assert store.get(("memories", "ada"), key) is None
    assert memory.list(user_id="ada") == []
    assert json.loads(search.invoke({"query": "chess"}, config=ADA)) == []
    # Bob's memory was not touched, and nothing is left dangling.
    assert [d.page_content for d in memory.list(user_id="bob")] == [
        "Bob likes chess too."
    ]
    documents, rows = table(store)
    assert len(documents) == 1
    assert [memory_id for _, _, memory_id in rows] == list(documents)


def test_langmem_actions_run_inside_create_agent(store: PersistentMemoryStore) -> None:
    """The manage tool finds the store through the agent (LangGraph's get_store)."""
    agent = langmem_agent(store)
    result = agent.invoke(
        {"messages": [("human", "Remember: the deploy window is Friday.")]},
        config=ADA,
    )
    (saved,) = tool_messages(result, "manage_memory")
    assert saved.status != "error", saved.text
    key = saved.text.removeprefix("created memory ")
    item = store.get(("memories", "ada"), key)
    assert item is not None
    assert item.value == {"content": "the deploy window is Friday."}
    assert [d.page_content for d in store.memory.list(user_id="ada")] == [
        "the deploy window is Friday."
    ]


@pytest.mark.parametrize("action", ["update", "delete"])
def test_langmem_update_and_delete_reach_a_memory_a_chain_added(
    store: PersistentMemoryStore, memory: PersistentMemory, action: str
) -> None:
    """LangMem's id is a `uuid.UUID`: `str(id)` has dashes, our memory ids none.

    The search tool shows a chain's memory under its key, the memory id
    (`uuid4().hex`, 32 hex digits). A model that passes that key back to
    `manage_memory` gets it parsed as a UUID, and the tool puts or deletes
    `str(id)`, the dashed form, which is another key.
    """
    manage, search = langmem_tools(store)
    memory_id = memory.add("My cat is called Turing.", user_id="ada").ids[0]
    (hit,) = json.loads(search.invoke({"query": "my cat"}, config=ADA))
    assert hit["key"] == memory_id  # what the model sees and would pass back
    if action == "update":
        manage.invoke(
            {
                "content": "My cat is called Hopper.",
                "action": "update",
                "id": hit["key"],
            },
            config=ADA,
        )
        texts = [d.page_content for d in memory.list(user_id="ada")]
        assert texts == ["My cat is called Hopper."]
    else:
        manage.invoke({"action": "delete", "id": hit["key"]}, config=ADA)
        assert memory.list(user_id="ada") == []
    assert len(json.loads(search.invoke({"query": "my cat"}, config=ADA))) == (
        1 if action == "update" else 0
    )


def test_a_chain_memory_keeps_its_key_after_a_langmem_update(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """The item of a chain's memory is keyed by the memory id, updated or not.

    LangMem sends the id back dashed (`str(UUID)`); the update lands on the
    memory, but the item then lives under the dashed key only, so whoever
    holds the memory id (the chain that added it) no longer gets it.
    """
    manage, _ = langmem_tools(store)
    memory_id = memory.add("My cat is called Turing.", user_id="ada").ids[0]
    manage.invoke(
        {"content": "My cat is called Hopper.", "action": "update", "id": memory_id},
        config=ADA,
    )
    doc = memory.get(memory_id, user_id="ada")
    assert doc is not None
    assert doc.page_content == "My cat is called Hopper."
    item = store.get(("memories", "ada"), memory_id)
    assert item is not None
    assert item.value["content"] == "My cat is called Hopper."
    (found,) = store.search(("memories", "ada"), query="my cat")
    assert found.key == memory_id


def test_memory_delete_of_an_agents_memory_removes_its_item(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """A chain deleting what an agent saved: the agent must not recall it."""
    manage, search = langmem_tools(store)
    key = manage.invoke({"content": "Ada lives in London."}, config=ADA).split()[-1]
    (doc,) = memory.list(user_id="ada")
    assert memory.delete(doc.id, user_id="ada") is True
    assert memory.get(doc.id, user_id="ada") is None
    documents, rows = table(store)
    assert {memory_id for _, _, memory_id in rows} <= set(documents)
    assert store.get(("memories", "ada"), key) is None
    assert json.loads(search.invoke({"query": "where do I live?"}, config=ADA)) == []


def test_memory_update_of_an_agents_memory_updates_its_item(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """A chain correcting what an agent saved: the agent must see the correction."""
    manage, search = langmem_tools(store)
    key = manage.invoke({"content": "Ada lives in London."}, config=ADA).split()[-1]
    (doc,) = memory.list(user_id="ada")
    memory.update(doc.id, "Ada lives in Paris.", user_id="ada")
    assert [d.page_content for d in memory.list(user_id="ada")] == [
        "Ada lives in Paris."
    ]
    item = store.get(("memories", "ada"), key)
    assert item is not None
    assert item.value["content"] == "Ada lives in Paris."
    hits = json.loads(search.invoke({"query": "where do I live?"}, config=ADA))
    assert contents(hits) == ["Ada lives in Paris."]


async def test_langmem_agent_async_saves_and_recalls(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """`ainvoke`: LangMem's tools call `aput`/`asearch`, i.e. our `abatch`."""
    agent = langmem_agent(store)
    await agent.ainvoke(
        {"messages": [("human", "Remember that my train leaves at 7:40.")]},
        config=ADA,
    )
    assert [d.page_content for d in await memory.alist(user_id="ada")] == [
        "my train leaves at 7:40."
    ]
    result = await agent.ainvoke(
        {"messages": [("human", "When does my train leave?")]}, config=ADA
    )
    (message,) = tool_messages(result, "search_memory")
    assert contents(json.loads(message.text)) == ["my train leaves at 7:40."]
    result = await agent.ainvoke(
        {"messages": [("human", "When does my train leave?")]}, config=BOB
    )
    (message,) = tool_messages(result, "search_memory")
    assert json.loads(message.text) == []


# -------------------------------------- create_memory_tools with the store


def test_save_memory_tool_is_found_by_the_agents_store(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    agent = create_agent(
        ScriptedToolChatModel(), tools=create_memory_tools(memory), store=store
    )
    result = agent.invoke(
        {"messages": [("human", "Remember that I prefer short answers.")]},
        config={"configurable": {"user_id": "ada"}},
    )
    (saved,) = tool_messages(result, "save_memory")
    assert saved.text.startswith("Saved memory ")
    memory_id = saved.artifact["ids"][0]
    assert f"Saved memory {memory_id} (preference): I prefer short answers." in (
        saved.text
    )

    hits = store.search(("memories", "ada"), query="how do I like answers?")
    assert [(h.key, h.value["content"]) for h in hits] == [
        (memory_id, "I prefer short answers.")
    ]
    assert hits[0].value["kind"] == "preference"
    assert hits[0].score is not None
    assert hits[0].namespace == ("memories", "ada")
    assert store.search(("memories", "bob"), query="how do I like answers?") == []
    item = store.get(("memories", "ada"), memory_id)
    assert item is not None
    assert item.value["content"] == "I prefer short answers."
    assert ("memories", "ada") in store.list_namespaces()

    # And the other way: an item put in the store is what search_memory finds.
    store.put(("memories", "ada"), "lang", {"content": "Ada writes Rust at work."})
    result = agent.invoke(
        {"messages": [("human", "Ada writes Rust at work?")]},
        config={"configurable": {"user_id": "ada"}},
    )
    (found,) = tool_messages(result, "search_memory")
    assert "Ada writes Rust at work." in found.text
    assert "I prefer short answers." in found.text
    result = agent.invoke(
        {"messages": [("human", "Ada writes Rust at work?")]},
        config={"configurable": {"user_id": "bob"}},
    )
    (found,) = tool_messages(result, "search_memory")
    assert found.text == "No memories found for this query."


def test_both_tool_sets_in_one_agent_share_the_memory(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """Our save tool and LangMem's search tool, one agent, one memory."""
    agent = create_agent(
        ScriptedToolChatModel(save_tool="save_memory", search_tool="search_langmem"),
        tools=[
            *create_memory_tools(memory)[:1],
            create_search_memory_tool(namespace=LANGMEM_NS, name="search_langmem"),
        ],
        store=store,
    )
    config = {"configurable": {"user_id": "ada", "langgraph_user_id": "ada"}}
    agent.invoke(
        {"messages": [("human", "Remember that I decided on Postgres.")]}, config=config
    )
    result = agent.invoke({"messages": [("human", "Which database?")]}, config=config)
    (found,) = tool_messages(result, "search_langmem")
    items = json.loads(found.text)
    assert contents(items) == ["I decided on Postgres."]
    assert items[0]["value"]["kind"] == "decision"
