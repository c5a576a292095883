"""Training data: manifest rows (JSONL files or WebDataset tar shards) -> token ids, answer-only labels and
the audio each sample needs, built with the one template module (`audioflamingo.text`).

A sample is a pure function of (row, seed, epoch, position): the shot choice, the task prefix and
everything random come from a generator seeded with those numbers, so a resumed run sees exactly the
samples an uninterrupted run would have seen.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audioflamingo.model.encoder import summary_settings
from audioflamingo.text import ICL_PREFIX, IGNORE, chat_text, encode, icl_text, item_text, pad_batch, single_text

REQUIRED = ("id", "audio", "dataset", "task", "prompt", "answer")


class DataError(ValueError):
    """A manifest or shard is missing or holds a malformed row."""


# ----------------------------------------------------------------------------------------------------
# reading rows


def check_row(row: dict, where: str) -> dict:
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise DataError(f"{where}: row is missing required key(s) {', '.join(missing)}")
    return row


def read_manifest(path: str | Path) -> list[dict]:
    """Rows of a JSONL manifest through the project's one reader (audioflamingo.data.manifest), with every
    audio path absolute and `extra_audios` always present."""
    from audioflamingo.data.manifest import read_manifest as read_rows

    rows = read_rows(path, required=REQUIRED, resolve=True)
    for row in rows:
        row.setdefault("extra_audios", [])
    return rows


class AudioBytes(dict):
    """Audio held in memory, keyed by 'shard.tar#member' (what rows read from shards point to)."""


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(spec: str) -> list[str]:
    """'train-{000000..000002}.tar' -> train-000000.tar, train-000001.tar, train-000002.tar (WebDataset's
    notation; numbers keep the width of the first bound)."""
    m = _RANGE.search(spec)
    if not m:
        return [spec]
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo:
        raise DataError(f"shards {spec!r}: range {m.group(0)} runs backwards")
    width = len(m.group(1))
    return [p for i in range(lo, hi + 1) for p in expand_braces(spec[: m.start()] + str(i).zfill(width) + spec[m.end() :])]


def is_shard_spec(spec) -> bool:
    """A `.tar` file, a pattern of them (glob or {a..b}), or a folder of them."""
    return str(spec).endswith(".tar") or Path(spec).is_dir()


def shard_paths(spec) -> list[str]:
    """The tar files a `data.train` / `data.val` entry names: a file, a glob, a {000..009} range, or a folder."""
    spec = str(spec)
    if Path(spec).is_dir():
        paths = sorted(str(p) for p in Path(spec).glob("*.tar"))
        if not paths:
            raise DataError(f"shards {spec!r}: the folder holds no .tar files")
        return paths
    paths = []
    for s in expand_braces(spec):
        paths += sorted(glob.glob(s)) if any(c in s for c in "*?[") else [s]
    missing = [p for p in paths if not Path(p).is_file()]
    if not paths or missing:
        raise DataError(f"shards {spec!r}: no such tar file(s)" + (f": {', '.join(missing[:3])}" if missing else ""))
    return paths


def read_shards(pattern: str, audio_store: AudioBytes) -> list[dict]:
    """WebDataset tar shards, read whole into memory: members `KEY.json` ({"items": [rows]} or one row) and
    `KEY.<audio ext>`. (For data that does not fit in memory, stream them: `data.stream`, train/stream.py.)

    The audio bytes go to `audio_store`; each row's `audio` becomes 'shard#KEY.ext'. Read with the
    standard library so no extra package is needed; `webdataset.WebDataset(urls)` reads the same files.
    """
    paths = shard_paths(pattern)
    rows = []
    for shard in paths:
        samples: dict[str, dict] = {}
        with tarfile.open(shard) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, parts in samples.items():
            if "json" not in parts:
                raise DataError(f"{shard}: sample {key!r} has no .json member")
            meta = json.loads(parts["json"])
            audio_ext = [e for e in parts if e != "json"]
            for ext in audio_ext:
                audio_store[f"{shard}#{key}.{ext}"] = parts[ext]
            for row in meta.get("items", [meta]):
                row = check_row(dict(row), f"{shard}#{key}")
                row["audio"] = f"{shard}#{row['audio']}"
                if row["audio"] not in audio_store:
                    raise DataError(f"{shard}#{key}: row {row['id']} names audio {row['audio']!r} not in the shard")
                row["extra_audios"] = [f"{shard}#{a}" for a in row.get("extra_audios", [])]
                rows.append(row)
    return rows


def read_sources(specs: list[str], audio_store: AudioBytes) -> list[dict]:
    rows = []
    for spec in specs:
        spec = str(spec)
        rows += read_shards(spec, audio_store) if is_shard_spec(spec) else read_manifest(spec)
    return rows


@dataclass
class RowFilter:
    """Which rows a stage trains on. Chat: dialog rows (those with `dialogue`; with chat_plain also the rest);
    clap: non-dialog rows of `tasks` (the caption tasks); other stages: non-dialog rows. `tasks` (None: all)
    and `exclude` narrow it further."""

    stage: str
    tasks: list | None = None
    exclude: list = field(default_factory=list)
    chat_plain: bool = False

    def __call__(self, row: dict) -> bool:
        if self.stage == "chat":
            ok = bool(row.get("dialogue")) or self.chat_plain
        else:
            ok = not row.get("dialogue")
        return ok and (self.tasks is None or row["task"] in self.tasks) and row["task"] not in self.exclude


def filter_rows(rows: list[dict], stage: str, tasks: list | None, exclude: list, chat_plain: bool = False) -> list[dict]:
    keep = RowFilter(stage, tasks, list(exclude), chat_plain)
    return [r for r in rows if keep(r)]


# ----------------------------------------------------------------------------------------------------
# shots for interleaved few-shot samples (pluggable: the retrieval helper provides nearest neighbours)


class RandomShots:
    """k random train items of the same dataset and task, never the query's own audio."""

    def __init__(self, rows: list[dict]):
        self.pool: dict[tuple, list[dict]] = {}
        for r in rows:
            self.pool.setdefault((r["dataset"], r["task"]), []).append(r)

    def __call__(self, row: dict, k: int, rng: np.random.Generator) -> list[dict]:
        cands = [r for r in self.pool.get((row["dataset"], row["task"]), []) if r["audio"] != row["audio"]]
        if not cands:
            return []
        pick = rng.choice(len(cands), size=min(k, len(cands)), replace=False)
        return [{"audio": cands[i]["audio"], "prompt": cands[i]["prompt"], "answer": cands[i]["answer"]} for i in pick]


class RowShots:
    """The row's own `shots` (written offline by retrieval), first k."""

    def __call__(self, row: dict, k: int, rng: np.random.Generator) -> list[dict]:
        return list(row.get("shots", []))[:k]


RELABEL_TASKS = ("classification",)


def relabel_pool(rows: list[dict]) -> list[str]:
    """Names an ICL sample's labels may be renamed to: every classification answer and every word of
    three or more letters in the answers (so the model meets names it has never seen as a label)."""
    names = {r["answer"] for r in rows if r["task"] in RELABEL_TASKS}
    for r in rows:
        names.update(w for w in re.findall(r"[a-z]{3,}", str(r["answer"]).lower()))
    return sorted(names)


def relabel(shots: list[dict], row: dict, pool: list[str], rng: np.random.Generator):
    """Symbol-tuning augmentation for interleaved classification samples: the distinct answers of the
    shots and the query are renamed consistently to random names from `pool`, so the only way to answer
    is to find the shot that sounds like the query and copy its label. Prompts lose their OPTIONS lists
    (they would name the old labels). Returns (shots, row) renamed, or the inputs when the query's label
    is not among the shots' (nothing to copy) or the pool is too small."""
    answers = list(dict.fromkeys([s["answer"] for s in shots] + [row["answer"]]))
    if row["task"] not in RELABEL_TASKS or row["answer"] not in [s["answer"] for s in shots] or len(pool) < len(answers):
        return shots, row
    names = [pool[i] for i in rng.choice(len(pool), size=len(answers), replace=False)]
    rename = dict(zip(answers, names))

    def bare(prompt: str) -> str:
        return prompt.split(" OPTIONS:")[0]

    shots = [{**s, "prompt": bare(s["prompt"]), "answer": rename[s["answer"]]} for s in shots]
    return shots, {**row, "prompt": bare(row["prompt"]), "answer": rename[row["answer"]]}


def shot_source(name: str, rows: list[dict]):
    if name == "random":
        return RandomShots(rows)
    if name == "row":
        return RowShots()
    raise DataError(f"data.shots {name!r} unknown; use 'random' or 'row'")


# ----------------------------------------------------------------------------------------------------
# samples


@dataclass
class Sample:
    ids: torch.Tensor  # (T,) long
    labels: torch.Tensor  # (T,) long, IGNORE outside answers
    audios: list[str]  # audio keys in prompt order
    row_id: str = ""
    text: str = ""


@dataclass
class SampleBuilder:
    tokenizer: object
    stage: str
    max_length: int
    icl_fraction: float = 0.0
    icl_shots: list = field(default_factory=lambda: [4])
    task_prefix_prob: float = 0.0
    shots: object = None  # callable (row, k, rng) -> [{"audio","prompt","answer"}]
    relabel: float = 0.0  # probability that an interleaved classification sample's labels are renamed
    label_pool: list = field(default_factory=list)  # names to rename to (relabel_pool)
    icl_loss: str = "all"  # "copyable": in renamed samples, only answers whose name occurred earlier carry loss
    icl_self: float = 0.0  # probability that one shot of an interleaved sample is the query item itself
    recall: float = 0.0  # probability that a sample is replaced by a text-only associative-recall drill (recall_drill)

    def __post_init__(self):
        if self.icl_loss not in ("all", "copyable"):
            raise DataError(f"data.icl_loss {self.icl_loss!r} unknown; use 'all' or 'copyable'")

    def build(self, row: dict, rng: np.random.Generator) -> Sample:
        bos = self.tokenizer.bos_token or self.tokenizer.eos_token
        eos = self.tokenizer.eos_token
        if self.recall > 0 and self.stage != "chat" and rng.random() < self.recall:
            return self.recall_drill(row, rng)
        audios = [row["audio"], *row.get("extra_audios", [])]
        renamed = False
        if self.stage == "chat" and row.get("dialogue"):
            text = chat_text([(t["user"], t["assistant"]) for t in row["dialogue"]], len(audios), bos, eos)
        else:
            shots = []
            if self.shots is not None and self.icl_fraction > 0 and rng.random() < self.icl_fraction:
                shots = self.shots(row, int(rng.choice(self.icl_shots)), rng)
                if shots and not row.get("extra_audios") and self.icl_self > 0 and rng.random() < self.icl_self:
                    # a copy drill (training only; retrieval never shows the query its own file): the shot
                    # with the query's own audio has the query's answer, so the answer can be copied from it
                    shots = list(shots)
                    shots[int(rng.integers(len(shots)))] = {"audio": row["audio"], "prompt": row["prompt"], "answer": row["answer"]}
            if shots and self.relabel > 0 and rng.random() < self.relabel:
                new_shots, new_row = relabel(shots, row, self.label_pool, rng)
                renamed = new_row is not row
                shots, row = new_shots, new_row
            if shots:
                text = icl_text([(s["prompt"], s["answer"]) for s in shots], row["prompt"], row["answer"], bos, eos, len(audios))
                audios = [s["audio"] for s in shots] + audios
            else:
                task = row["task"] if rng.random() < self.task_prefix_prob else None
                text = single_text(row["prompt"], row["answer"], task, len(audios), bos, eos)
        ids, labels = encode(self.tokenizer, text, self.max_length)
        if renamed and self.icl_loss == "copyable":
            labels = keep_copyable(labels, [s["answer"] for s in shots] + [row["answer"]])
        return Sample(ids, labels, audios, row["id"], text)

    def recall_drill(self, row: dict, rng: np.random.Generator) -> Sample:
        """Text-only associative recall (`data.recall`): k distinct keys, each paired with a random name from
        the label pool, then one key again; the loss is on that repeated name only. A language model trained
        from scratch on single-item samples has no mechanism that copies from its context (af-mini's induction
        check stayed flat, docs/results/fewshot-heldout-af-mini.md); these drills reward one in every
        batch, and in-context learning from audio examples needs one."""
        bos = self.tokenizer.bos_token or self.tokenizer.eos_token
        pool = self.label_pool
        k = max(2, int(rng.choice(self.icl_shots)))
        if len(pool) < 2 * k:
            raise DataError(f"data.recall needs at least {2 * k} names in the label pool, got {len(pool)}")
        words = [pool[i] for i in rng.choice(len(pool), size=2 * k, replace=False)]
        template = RECALL_PROMPTS[int(rng.integers(len(RECALL_PROMPTS)))]
        query = int(rng.integers(k))
        while True:  # fewer pairs when the drill would not fit max_length (a cut query has nothing to train)
            keys, names = words[:k], words[k : 2 * k]
            text = recall_drill_text(keys, names, query, template, bos, self.tokenizer.eos_token)
            ids, labels = encode(self.tokenizer, text, self.max_length)
            if (labels[-1] != IGNORE) or k == 2:
                break
            k //= 2
            query = query % k
        labels = keep_copyable(labels, names + [names[query]])  # the query's name: its first mention was a shot's
        return Sample(ids, labels, [], f"{row['id']}#recall", text)


RECALL_PROMPTS = ("Which name goes with {}?", "What is {} called here?", "Name the {}.")


def recall_drill_text(keys: list[str], names: list[str], query: int, template: str, bos: str, eos: str) -> str:
    """An interleaved sample without audio: k (key, name) chunks in the ICL layout, then key `query` again,
    answered with its name. Only copying from the context can answer it."""
    chunks = [item_text(template.format(k), n, n_audios=0) for k, n in zip(keys, names)]
    return bos + ICL_PREFIX + "".join(chunks) + chunks[query] + eos


def keep_copyable(labels: torch.Tensor, answers: list[str]) -> torch.Tensor:
    """(T,) labels of an interleaved sample whose answers are `answers` in order -> the same with the loss
    kept only on answers that occurred earlier in the sample. A renamed label's first mention cannot be
    predicted from anything (the name is random), so training on it only teaches the model to guess names;
    its later mentions can be copied from the shot that sounds alike, which is what few-shot learning needs."""
    out = labels.clone()
    real = (labels != IGNORE).tolist()
    spans, start = [], None  # answer spans in order: [start, end)
    for i, r in enumerate(real + [False]):
        if r and start is None:
            start = i
        elif not r and start is not None:
            spans.append((start, i))
            start = None
    seen: set[str] = set()
    for (a, b), answer in zip(spans, answers):  # spans cut off by truncation have no labels and no entry
        if answer not in seen:
            out[a:b] = IGNORE
        seen.add(answer)
    return out


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, position])


def collate(samples: list[Sample], pad_id: int) -> dict:
    """-> input_ids (B, T), attention_mask (B, T), labels (B, T) right-padded, audios [[key]] per sample."""
    ids, mask = pad_batch([s.ids for s in samples], pad_id, side="right")  # (B, T)
    labels, _ = pad_batch([s.labels for s in samples], IGNORE, side="right")  # (B, T)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "audios": [s.audios for s in samples]}


def answer_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry loss: the next-token targets labels[:, 1:] that are not IGNORE."""
    return int((labels[..., 1:] != IGNORE).sum())


# ----------------------------------------------------------------------------------------------------
# audio and encoder-output caches


class ClipStore:
    """Loads clips by key (file path or 'shard#member'), keeping them in memory (the corpus is small). Streamed
    data puts each step's decoded clips in (`put`) and takes them out after the step (`drop`)."""

    def __init__(self, sample_rate: int, audio_cfg, audio_bytes: AudioBytes | None = None, keep: bool = True):
        self.rate, self.cfg, self.bytes, self.keep = sample_rate, audio_cfg, audio_bytes or AudioBytes(), keep
        self.clips: dict = {}

    def put(self, key: str, clip) -> None:
        self.clips[key] = clip

    def drop(self, keys) -> None:
        for k in keys:
            self.clips.pop(k, None)

    def __call__(self, key: str):
        from audioflamingo.audio import load_audio

        if key in self.clips:
            return self.clips[key]
        source = io.BytesIO(self.bytes[key]) if key in self.bytes else key
        clip = load_audio(source, self.rate, self.cfg)
        if self.keep:
            self.clips[key] = clip
        return clip


class FeatureCache:
    """Encoder outputs (W, N, E) per clip for stages whose encoder is frozen, computed once, in batches,
    and kept in memory and in `path` (a .pt keyed by audio key, valid for one encoder fingerprint)."""

    def __init__(self, model, clips: ClipStore, path: Path | None = None, batch_windows: int = 64, write: bool = True):
        self.model, self.clips, self.batch_windows = model, clips, batch_windows
        self.fingerprint = model.embedding_fingerprint()
        self.summary_slots = getattr(model, "summary_slots", 0)  # window-summary rows after the tokens (AudioFlamingo.encode_windows)
        cfg = getattr(getattr(model, "config", None), "transform", None)  # which summaries, with what settings: a cache of others is not reused
        self.summaries = json.dumps(summary_settings(cfg), sort_keys=True) if self.summary_slots and cfg is not None else ""
        self.path, self.write = path, write
        self._saved = 0  # entries in the file as last read or written
        self.feats: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, torch.Tensor] = {}  # the encoder's tokens (W, N, E) of a cache with other summary rows
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=True)
            if saved.get("fingerprint") == self.fingerprint:
                if saved.get("summary_slots", 0) == self.summary_slots and saved.get("summaries", "") == self.summaries:
                    self.feats = saved["feats"]
                    self._saved = len(self.feats)
                elif self.summary_slots:  # same encoder, other (or no) window summaries: fill() recomputes only those
                    N = model.config.encoder.tokens_per_window
                    self.tokens = {k: f[:, :N] for k, f in saved["feats"].items()}  # (W, N, E)

    def save(self) -> None:
        """Write the cache file (atomically) if this cache may write and holds entries the file lacks."""
        if self.path is None or not self.write or len(self.feats) == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # one per process: no clash between writers
        torch.save({"fingerprint": self.fingerprint, "summary_slots": self.summary_slots, "summaries": self.summaries, "feats": self.feats}, tmp)
        tmp.replace(self.path)
        self._saved = len(self.feats)

    @torch.no_grad()
    def fill(self, keys, progress: bool = False, save: bool = True) -> None:
        from audioflamingo.audio import make_windows, window_lengths

        todo = [k for k in dict.fromkeys(keys) if k not in self.feats]
        if not todo:
            return
        if self.tokens:  # the encoder's tokens are known: add the (parameter-free, cheaper) summary rows
            known = [k for k in todo if k in self.tokens]
            self._add_summaries(known, progress)
            todo = [k for k in todo if k not in self.feats]
        bar = None
        if not todo:
            if save:
                self.save()
            return
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="encoding audio (frozen encoder)", unit="clip")
        was_training = self.model.encoder.training
        self.model.encoder.eval()
        i = 0
        while i < len(todo):
            batch, wins, lengths = [], [], []
            while i < len(todo) and (not wins or sum(w.shape[0] for w in wins) < self.batch_windows):
                batch.append(todo[i])
                clip = self.clips(todo[i])
                wins.append(make_windows(clip, self.model.config.audio))  # (W_i, S)
                lengths.append(window_lengths(clip, self.model.config.audio))  # (W_i,)
                i += 1
            out = self.model.encode_windows(torch.cat(wins), torch.cat(lengths)).float().cpu()  # (W_total, N, E)
            for k, f in zip(batch, out.split([w.shape[0] for w in wins])):
                self.feats[k] = f.clone()  # (W_k, N, E)
            if bar is not None:
                bar.update(len(batch))
        self.model.encoder.train(was_training)
        if bar is not None:
            bar.close()
        if save:
            self.save()

    @torch.no_grad()
    def _add_summaries(self, keys: list[str], progress: bool) -> None:
        """feats[k] = the cached tokens of k + its window-summary rows, for keys whose tokens are known."""
        from audioflamingo.audio import make_windows, window_lengths

        if not keys:
            return
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(keys), desc="window summaries (cached encoder tokens)", unit="clip")
        cfg = self.model.config.audio
        i = 0
        while i < len(keys):
            batch, wins, lengths = [], [], []
            while i < len(keys) and (not wins or sum(w.shape[0] for w in wins) < self.batch_windows):
                clip = self.clips(keys[i])
                batch.append(keys[i])
                wins.append(make_windows(clip, cfg))  # (W_i, S)
                lengths.append(window_lengths(clip, cfg))  # (W_i,)
                i += 1
            rows = self.model.summary_rows(torch.cat(wins), torch.cat(lengths)).float().cpu()  # (W_total, slots, E)
            for k, r in zip(batch, rows.split([w.shape[0] for w in wins])):
                tokens = self.tokens.pop(k)  # (W_k, N, E)
                if r.shape[0] != tokens.shape[0]:
                    raise ValueError(f"{k}: {r.shape[0]} windows now, {tokens.shape[0]} in the cached encoder tokens")
                self.feats[k] = torch.cat([tokens, r.to(tokens.dtype)], dim=1)  # (W_k, N + slots, E)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()

    def __call__(self, audios: list[list[str]]) -> list[torch.Tensor]:
        """[[key]] per sample -> one (W, N, E) tensor per audio, flat in sample order."""
        flat = [k for keys in audios for k in keys]
        self.fill(flat)
        return [self.feats[k] for k in flat]
