"""Retrieval-augmented in-context learning: an index of audio embeddings, the AF1 neighbour rule,
and interleaved k-shot items for training and inference. See docs/retrieval.md."""

from audioflamingo.retrieval.build import build_index, read_manifest
from audioflamingo.retrieval.icl import ICL_PREFIX, IclPrompt, build_icl_manifest, icl_prompts, parse_example, user_examples
from audioflamingo.retrieval.index import AudioIndex, FingerprintMismatch, IndexConfig, RetrievalError
from audioflamingo.retrieval.neighbours import NeighbourConfig, Shot, random_neighbours, retrieve, select_neighbours

__all__ = [
    "AudioIndex",
    "FingerprintMismatch",
    "ICL_PREFIX",
    "IclPrompt",
    "IndexConfig",
    "NeighbourConfig",
    "RetrievalError",
    "Shot",
    "build_icl_manifest",
    "build_index",
    "icl_prompts",
    "parse_example",
    "random_neighbours",
    "read_manifest",
    "retrieve",
    "select_neighbours",
    "user_examples",
]
