"""Compatibility with the reference Audio Flamingo 1 release: checkpoint key layouts, prompt strings."""
