"""audioflamingo: an open PyTorch implementation of the Audio Flamingo audio language model."""

__version__ = "0.1.0"

__all__ = ["load_model", "__version__"]


def load_model(path_or_preset=None, **kwargs):
    """Load a model: the bundled default (`None`), a preset name, or a saved checkpoint directory.

    See `audioflamingo.model.loading.load_model` for the keyword arguments.
    """
    from audioflamingo.model.loading import load_model as _load

    return _load(path_or_preset, **kwargs)
