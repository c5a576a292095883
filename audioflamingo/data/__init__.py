"""Data: manifests, the corpus builder (Debian packages + synthesis), converters, checks and stats."""

from audioflamingo.data.manifest import ManifestError, read_manifest, resolve_audio, write_manifest

__all__ = ["ManifestError", "read_manifest", "resolve_audio", "write_manifest"]
