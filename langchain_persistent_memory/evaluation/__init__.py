"""Evaluations of memory quality: `python -m langchain_persistent_memory.evaluation`."""
