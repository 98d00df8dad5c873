"""`python -m langchain_persistent_memory.evaluation locomo [--data DIR] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory._defaults import embeddings_from_spec
from langchain_persistent_memory.evaluation.locomo import evaluate, format_table

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

DEFAULT_DATA = Path("../shared/data/locomo")


def _embedding(spec: str) -> Embeddings:
    if spec == "fake":
        # Vectors without meaning: the keyword side alone decides.
        return DeterministicFakeEmbedding(size=64)
    try:
        return embeddings_from_spec(spec)
    except (ValueError, TypeError) as exc:
        raise SystemExit(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """Run an evaluation from the command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m langchain_persistent_memory.evaluation"
    )
    sub = parser.add_subparsers(dest="benchmark", required=True)
    locomo = sub.add_parser("locomo", help="evidence recall on LoCoMo conversations")
    locomo.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"a folder of conv-*.json files or one file (default {DEFAULT_DATA})",
    )
    locomo.add_argument(
        "--embedding",
        default="fake",
        help="'fake' (vectors without meaning; ranks by keyword search alone), "
        "'local' (the offline LocalEmbeddings, extra 'local'), 'openai[:MODEL]', "
        "or 'module:callable' returning a LangChain Embeddings",
    )
    locomo.add_argument(
        "--store",
        default=None,
        help="a postgresql:// URL to run on (default: a temporary directory)",
    )
    locomo.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    data: Path = args.data
    paths = sorted(data.glob("*.json")) if data.is_dir() else [data]
    if not data.exists() or not paths:
        print(f"No LoCoMo .json files in {data}.", file=sys.stderr)  # noqa: T201
        return 2
    # Fake vectors carry no meaning: rank by the keyword side alone.
    options = {"keyword_weight": 1.0} if args.embedding == "fake" else {}
    report = evaluate(
        paths, _embedding(args.embedding), memory_options=options, store=args.store
    )
    report["embedding"] = args.embedding
    if args.json:
        print(json.dumps(report, indent=2))  # noqa: T201
    else:
        print(  # noqa: T201
            f"LoCoMo evidence recall: {len(paths)} conversation(s), "
            f"{report['questions']} questions, {report['memories']} memories, "
            f"embedding {args.embedding}\n"
        )
        print(format_table(report))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
