"""Retrieval-augmented in-context learning: an index of audio embeddings, the AF1 neighbour rule,
and interleaved k-shot items for training and inference. See docs/retrieval.md.

Names are imported on first use, so `audioflamingo --help` works without faiss installed.
"""

import importlib

_WHERE = {
    "build_index": "build",
    "read_manifest": "build",
    "ICL_PREFIX": "icl",
    "IclPrompt": "icl",
    "build_icl_manifest": "icl",
    "icl_prompts": "icl",
    "parse_example": "icl",
    "user_examples": "icl",
    "AudioIndex": "index",
    "FingerprintMismatch": "index",
    "IndexConfig": "index",
    "RetrievalError": "index",
    "NeighbourConfig": "neighbours",
    "Shot": "neighbours",
    "random_neighbours": "neighbours",
    "retrieve": "neighbours",
    "select_neighbours": "neighbours",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"audioflamingo.retrieval.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'audioflamingo.retrieval' has no attribute {name!r}")
