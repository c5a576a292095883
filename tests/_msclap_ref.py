"""Load the reference HTS-AT of the PyPI package `msclap` for parity tests, without its heavy imports.

`import msclap` pulls in torchaudio, huggingface_hub and the text towers; the model modules only need
torch, torchlibrosa and librosa. We import `msclap/models/*.py` under a stand-in package name so that
`msclap/__init__.py` never runs. Returns None (with the reason) when that is not possible.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_PKG = "_msclap_models_ref"


def load_reference() -> tuple[types.ModuleType | None, str]:
    """(msclap.models.clap as a module, "") or (None, why it is unavailable).

    `clap.AudioEncoder("HTSAT", 768, 1024, ...)` is the tower ClapCap builds (`ClapCaptionModel.clap`)."""
    spec = importlib.util.find_spec("msclap")
    if spec is None or not spec.submodule_search_locations:
        return None, "msclap is not installed (pip install --no-deps msclap torchlibrosa; pip install librosa)"
    models_dir = f"{list(spec.submodule_search_locations)[0]}/models"
    for dep in ("torchlibrosa", "librosa"):
        if importlib.util.find_spec(dep) is None:
            return None, f"msclap's HTS-AT needs {dep}, which is not installed (pip install {dep})"
    if _PKG not in sys.modules:
        pkg = types.ModuleType(_PKG)
        pkg.__path__ = [models_dir]  # a package whose __init__ is never executed
        sys.modules[_PKG] = pkg
    try:
        clap = importlib.import_module(f"{_PKG}.clap")  # needs transformers (installed) for its text tower
    except Exception as e:  # noqa: BLE001 - any import failure means: skip with the reason
        return None, f"msclap's model modules cannot be imported: {type(e).__name__}: {e}"
    return clap, ""
