"""Baselines that run in the same harness as the model (they are predictors, see runner.py).

- `MajorityClass`: answers every item with the most frequent answer of the task's pool (train
  split, `shot_manifest`); for ranked options it gives the majority option score 0, others -inf.
- `NearestCaptionCopy`: copies the answer of the pool item whose audio embedding is closest
  (cosine) to the query's, never from the same file; needs an embedder with `embed_audio`.
- `ClapZeroShot`: the CLAP zero-shot classifier. Each option becomes the text "A <label>." (`_` read
  as a space), embedded with `embed_text`; the clip with `embed_audio`; the answer is the option of
  highest cosine. The template copies the form of the corpus captions the CLAP stage trained on
  ("A hi-hat hit.", "A falling tone sweep."); on the standard corpus' val classification items the
  shipped af-mini scores 0.796 with it against 0.783 with LAION-CLAP's "This is a sound of <label>."
  (617 items; the templates tried all fall within 0.78-0.80).
None of them does in-context learning (`supports_icl = False`). Each takes the model (or any object with
`embed_audio` / `embed_text`) as its embedder, so a task's `baselines: [...]` run beside the model
(runner.evaluate), and `audioflamingo eval --baseline NAME` runs one instead of it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from audioflamingo.eval.metrics import normalize_label
from audioflamingo.eval.runner import embed_audio_cached, unit_rows


class MajorityClass:
    supports_icl = False

    def __init__(self, embedder=None):  # embedder unused: every baseline is built as BASELINES[name](model)
        self.answer: str | None = None

    def unavailable_reason(self) -> str | None:
        return None

    def fingerprint(self) -> str:
        return "baseline:majority"

    def prepare_task(self, task, pool) -> None:
        if not pool:
            raise ValueError(f"majority baseline: task {task.name} needs `shot_manifest` (its train split) to count classes")
        counts = Counter(normalize_label(p.refs[0]) for p in pool)
        # ties broken alphabetically so the answer does not depend on manifest order
        self.answer = min(counts, key=lambda a: (-counts[a], a))

    def ask(self, audios, prompts, **_) -> list[str]:
        return [self.answer] * len(audios)

    def score_options(self, audios, prompts, options, **_) -> list[list[float]]:
        return [[0.0 if normalize_label(o) == self.answer else -np.inf for o in opts] for opts in options]


class NearestCaptionCopy:
    supports_icl = False

    def __init__(self, embedder, batch_size: int = 16):
        self.embedder = embedder
        self.batch_size = batch_size
        self.pool = []
        self.pool_emb = None

    def fingerprint(self) -> str:
        inner = getattr(self.embedder, "embedding_fingerprint", None) or getattr(self.embedder, "fingerprint", None)
        return "baseline:nn_caption" + (f"+{inner()}" if inner else "")

    def unavailable_reason(self) -> str | None:
        return None if hasattr(self.embedder, "embed_audio") else f"{type(self.embedder).__name__} has no embed_audio()"

    def _embed(self, audios):
        return np.concatenate(
            [unit_rows(self.embedder.embed_audio(audios[i : i + self.batch_size])) for i in range(0, len(audios), self.batch_size)]
        )

    def prepare_task(self, task, pool) -> None:
        if not pool:
            raise ValueError(f"nearest-caption baseline: task {task.name} needs `shot_manifest` (captions to copy)")
        self.pool = pool
        self.pool_emb = self._embed([p.audio for p in pool])  # (P, d)

    def ask(self, audios, prompts, **_) -> list[str]:
        out = []
        for a, e in zip(audios, self._embed(list(audios))):
            sims = self.pool_emb @ e
            for j in np.argsort(-sims, kind="stable"):
                if self.pool[j].audio != a:
                    out.append(self.pool[j].refs[0])
                    break
            else:
                out.append("")
        return out


class ClapZeroShot:
    supports_icl = False
    ranks_only = True  # the runner ranks options even for `mode: generate` tasks
    template = "A {label}."  # the form of the corpus captions CLAP trained on (see the module docstring)

    def __init__(self, embedder, template: str | None = None):
        self.embedder = embedder
        self.template = template or self.template
        self._cache: dict[str, np.ndarray] = {}

    def unavailable_reason(self) -> str | None:
        """Why this embedder cannot run the baseline (e.g. a model without a CLAP text head), or None."""
        for name in ("embed_audio", "embed_text"):
            if not hasattr(self.embedder, name):
                return f"{type(self.embedder).__name__} has no {name}()"
        try:
            self.embedder.embed_text([])
        except (RuntimeError, FileNotFoundError) as e:
            return str(e)
        return None

    def fingerprint(self) -> str:
        inner = getattr(self.embedder, "embedding_fingerprint", None) or getattr(self.embedder, "fingerprint", None)
        return "baseline:clap_zeroshot" + (f"+{inner()}" if inner else "")

    def _text(self, labels: list[str]) -> np.ndarray:
        todo = [lab for lab in dict.fromkeys(labels) if lab not in self._cache]
        if todo:
            emb = unit_rows(self.embedder.embed_text([self.template.format(label=lab.replace("_", " ")) for lab in todo]))
            self._cache.update(zip(todo, emb))
        return np.stack([self._cache[lab] for lab in labels])

    def score_options(self, audios, prompts, options, **_) -> list[list[float]]:
        audio = embed_audio_cached(self.embedder, list(audios), max(1, len(audios)))  # (B, d) shared with the model's runs
        return [(self._text(list(opts)) @ a).tolist() for a, opts in zip(audio, options)]


BASELINES = {"majority": MajorityClass, "nn_caption": NearestCaptionCopy, "clap_zeroshot": ClapZeroShot}
