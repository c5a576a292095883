"""Serving: an OpenAI-compatible chat completions API with batching, and a web page (same app).

    from audioflamingo.serve import create_app, ServeConfig
    app = create_app("tiny", ServeConfig(max_batch_size=8))
"""

from audioflamingo.serve.limits import ApiError, ServeConfig

__all__ = ["ApiError", "ServeConfig", "create_app"]


def create_app(model_or_path=None, config: ServeConfig | None = None):
    from audioflamingo.serve.app import create_app as _create

    return _create(model_or_path, config)
