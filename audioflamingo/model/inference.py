"""The user-facing methods of the model: ask (generate answers), score_options (rank labels by
log-likelihood), built on the one template module and the decoding loop."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from audioflamingo.model.generate import GenerationConfig, generate
from audioflamingo.model.mbr import draw_samples, mbr_choose
from audioflamingo.model.shot_copy import CopyMixture, answer_spans, mix_sequence, shot_weights
from audioflamingo.text import IGNORE, encode, icl_text, pad_batch, single_text


@dataclass
class Answer:
    text: str
    warnings: list[str] = field(default_factory=list)
    audio_seconds: list[float] = field(default_factory=list)  # seconds of each audio the model used
    examples: list[dict] = field(default_factory=list)  # in-context examples used (id, score, answer)
    prompt: str = ""
    finish_reason: str = "stop"  # "stop": the model ended its answer; "length": cut at max_new_tokens
    neighbours: list[dict] = field(default_factory=list)  # with mbr_rag: the index items whose answers joined the MBR choice


def _is_audio(x) -> bool:
    """A single audio source: a path, bytes, a Clip, or a (samples, rate) pair."""
    import numpy as np

    from audioflamingo.audio import Clip

    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], int) and hasattr(x[0], "__len__") and not isinstance(x[0], str):
        return True
    return isinstance(x, (str, bytes, Clip, np.ndarray)) or hasattr(x, "__fspath__")


def _gen_config(generation: GenerationConfig | str | None, kwargs: dict) -> GenerationConfig:
    names = {f.name for f in fields(GenerationConfig)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(f"unknown generation option(s) {unknown}; known: {sorted(names)}")
    if isinstance(generation, GenerationConfig):
        return GenerationConfig(**{**generation.__dict__, **kwargs})
    return GenerationConfig.preset(generation or "greedy", **kwargs)


class InferenceMixin:
    """Mixed into AudioFlamingo: needs .tokenizer, .media, .config, .load_clip, .encode_audio, forward."""

    def _normalise(self, audio, prompt):
        """-> (batched?, [list of sources per sample], [prompt per sample])."""
        if isinstance(prompt, str):
            audios = [audio] if _is_audio(audio) else list(audio)
            return False, [audios], [prompt]
        prompts = list(prompt)
        if _is_audio(audio) or len(audio) != len(prompts):
            raise ValueError(f"a batch of {len(prompts)} prompts needs a list of {len(prompts)} audios (each a source or a list)")
        return True, [[a] if _is_audio(a) else list(a) for a in audio], prompts

    def _shots(self, examples, prompts) -> list[list[tuple]]:
        """examples -> per item [(clip, prompt, answer)]. Shared examples ([(audio, answer)] or
        [{"audio", "answer", "prompt"?}]) are loaded once and the same Clip objects are given to every
        item (encode_audio encodes each distinct clip once); per-item examples are a list of lists."""
        if not examples:
            return [[] for _ in prompts]
        per_item = all(isinstance(e, list) for e in examples)
        if per_item and len(examples) != len(prompts):
            raise ValueError(f"{len(examples)} example lists for {len(prompts)} prompts")
        groups = examples if per_item else [examples] * len(prompts)
        loaded: dict = {}  # one Clip per distinct source: encode_audio then encodes each once per batch
        out = []
        for p, group in zip(prompts, groups):
            shots = []
            for ex in group:
                audio, prompt, ans = (ex["audio"], ex.get("prompt") or p, ex["answer"]) if isinstance(ex, dict) else (ex[0], p, ex[1])
                key = str(audio) if isinstance(audio, (str, Path)) else id(audio)
                if key not in loaded:
                    loaded[key] = self.load_clip(audio)
                clip = loaded[key]
                shots.append((clip, prompt, ans, ex.get("id") if isinstance(ex, dict) else None, ex.get("score") if isinstance(ex, dict) else None))
            out.append(shots)
        return out

    def _retrieve(self, sources, prompts, rag, shots, order, examples):
        """Per-item example lists: user examples (shared) then the `shots` retrieved for the item's first audio."""
        from audioflamingo.retrieval.icl import icl_prompts

        if examples and all(isinstance(e, list) for e in examples):
            raise ValueError("rag= combines with shared examples only, not per-item example lists")
        found = icl_prompts([s[0] for s in sources], prompts, rag=rag, embedder=self, shots=shots, examples=examples, order=order)
        return [[{"audio": s.audio, "prompt": s.prompt, "answer": s.answer, "id": s.id, "score": s.score} for s in p.shots] for p in found]

    def _text(self, prompt, n_audios, task, shots, answer=None):
        bos = self.tokenizer.bos_token or self.tokenizer.eos_token
        eos = self.tokenizer.eos_token
        if self.config.prompt_style == "af1":  # the released AF1 weights' own inference strings
            from audioflamingo.compat.af1_prompts import af1_text

            return af1_text(self.tokenizer, prompt, n_audios, task, answer, bool(shots))
        if shots:
            return icl_text([(sp, sa) for _, sp, sa, *_ in shots], prompt, answer, bos, eos, n_audios)
        return single_text(prompt, answer, task, n_audios, bos, eos)

    @torch.no_grad()
    def answer(self, audio, prompt, *, task=None, examples=None, rag=None, shots: int = 4, shot_order: str = "nearest_last",
               generation=None, on_tokens=None, mbr_rag=None, **gen) -> list[Answer]:
        """Batched generation with details. `examples`: shared [(audio, answer)] shown before every query
        (their audio encoded once for the batch), or one list of {"audio","prompt","answer"} per item.
        `rag`: a retrieval index (or its folder) built with this model: `shots` nearest training examples
        (one per distinct file) are put before each query, after any user-given `examples`.
        `mbr_rag`: with mbr_samples > 0, an index (or its folder) whose nearest items' answers join the MBR choice
        (model/mbr.py; GenerationConfig.mbr_neighbours, mbr_neighbour_weight); not put in the prompt."""
        cfg = _gen_config(generation, gen)
        _, sources, prompts = self._normalise(audio, prompt)
        if rag is not None:
            examples = self._retrieve(sources, prompts, rag, shots, shot_order, examples)
        clips = [[self.load_clip(s) for s in srcs] for srcs in sources]
        shots = self._shots(examples, prompts)
        texts = [self._text(p, len(c), task, sh) for p, c, sh in zip(prompts, clips, shots)]
        ids = [encode(self.tokenizer, t)[0] for t in texts]
        input_ids, mask = pad_batch(ids, self.media.pad, side="left")  # (B, T)
        audio_tokens = self.encode_audio([[sh[0] for sh in shot] + c for shot, c in zip(shots, clips)])  # shots first
        copy_w = self._copy_weights(shots, clips, audio_tokens)
        copy = None
        if copy_w is not None:
            copy = CopyMixture.from_prompts([i.tolist() for i in ids], copy_w, self.config.shot_copy.weight, self.media.sep, self.media.eoc)
        dev = self.device
        if cfg.mbr_samples > 0 and on_tokens is not None:
            raise ValueError("MBR decoding (mbr_samples > 0) picks the answer after all samples are drawn: it cannot stream tokens")
        out = generate(self, input_ids.to(dev), mask.to(dev), audio_tokens, replace(cfg, mbr_samples=0), {self.media.eoc, self.media.eos},
                       on_tokens, copy=copy)  # the greedy/beam answer; MBR's samples and choice follow
        near = None
        if cfg.mbr_samples > 0:
            if mbr_rag is not None:
                near = self._mbr_neighbours(mbr_rag, sources, prompts, audio_tokens, [len(sh) for sh in shots], cfg)
            out = self._mbr(out, ids, input_ids, mask, audio_tokens, copy_w, cfg, near)
        elif mbr_rag is not None:
            raise ValueError("mbr_rag needs MBR decoding: pass mbr_samples > 0 (or generation='mbr')")
        answers = []
        for b, (toks, c, t, shot) in enumerate(zip(out, clips, texts, shots)):
            text, full = self._cut(self.tokenizer.decode(toks, skip_special_tokens=True), cfg)
            warnings = list(dict.fromkeys(w for clip in [sh[0] for sh in shot] + c for w in clip.warnings))
            finish = "length" if len(toks) >= cfg.max_new_tokens and text == full else "stop"
            if finish == "length":  # the stop tokens are not in `toks`: a full budget means no end was generated
                warnings.append(f"the answer was cut at max_new_tokens={cfg.max_new_tokens} before the model ended it; "
                                "raise max_new_tokens for the whole answer")
            used = [min(clip.seconds, self.config.audio.max_seconds) for clip in c]
            used_examples = [{"id": sid, "score": sc, "answer": sa, "audio": sclip.path} for sclip, _, sa, sid, sc in shot]
            if copy_w is not None:  # each example's share of the copy component
                for ex, w in zip(used_examples, copy_w[b].tolist()):
                    ex["copy_weight"] = w
            neigh = [{"id": i, "score": sc, "answer": a} for a, sc, i in near[b]] if near is not None else []
            answers.append(Answer(text.strip(), warnings, used, used_examples, t, finish, neigh))
        return answers

    @staticmethod
    def _cut(text: str, cfg) -> tuple[str, str]:
        """(the text cut before the first of cfg.stop's strings, the text whole)."""
        full = text
        for s in cfg.stop:
            text = text.split(s)[0]
        return text, full

    def _mbr(self, first, ids, input_ids, mask, audio_tokens, copy_w, cfg, neighbours=None) -> list[list[int]]:
        """Minimum Bayes risk (model/mbr.py): cfg.mbr_samples seeded samples per row, then per row the candidate,
        `first[b]` (greedy/beam), a sample or (with `neighbours`: per row [(answer, cosine, id)]) a neighbour's answer,
        with the highest expected word F1 against the samples and the neighbours' answers."""
        factory = None
        if copy_w is not None:  # the samples decode from the same mixture with the examples' answers, one state each
            def factory(rows):
                return CopyMixture.from_prompts([ids[i].tolist() for i in rows], [copy_w[i] for i in rows],
                                                self.config.shot_copy.weight, self.media.sep, self.media.eoc)
        dev = self.device
        samples = draw_samples(self, input_ids.to(dev), mask.to(dev), audio_tokens, cfg, {self.media.eoc, self.media.eos}, factory)

        def text(toks):
            return self._cut(self.tokenizer.decode(toks, skip_special_tokens=True), cfg)[0].strip()

        out = []
        for b, (f, ss) in enumerate(zip(first, samples)):
            near = [(a, c) for a, c, *_ in neighbours[b]] if neighbours is not None else []
            k = mbr_choose(text(f), [text(x) for x in ss], near, cfg.mbr_neighbour_weight if near else 0.0,
                           cfg.mbr_neighbour_temperature)
            if k <= len(ss):
                out.append(([f] + ss)[k])
            else:  # a neighbour's answer, as tokens
                out.append(self.tokenizer(near[k - 1 - len(ss)][0], add_special_tokens=False)["input_ids"])
        return out

    def _mbr_neighbours(self, rag, sources, prompts, audio_tokens, n_shots, cfg) -> list[list[tuple[str, float, str]]]:
        """Per query [(answer, cosine, id)] of the cfg.mbr_neighbours nearest index items (one per file, never the query's
        own) among those of the task whose prompts include the query's prompt; none (and a warning) for a prompt
        that no index item was asked."""
        import warnings

        from audioflamingo.retrieval.index import AudioIndex
        from audioflamingo.retrieval.neighbours import NeighbourConfig, select_neighbours

        index = rag if isinstance(rag, AudioIndex) else AudioIndex.load(rag)
        index.check_fingerprint(self.embedding_fingerprint())
        task_of: dict = {}  # prompt -> the task of the first row asked it (one pass over the rows: 0.03 s for 50 k)
        for row in index.rows:
            task_of.setdefault(row.get("prompt"), row.get("task"))
        if audio_tokens.embedding is not None:  # each query's first audio (after its examples): (B, E)
            vectors = torch.stack([audio_tokens.embedding[b, n] for b, n in enumerate(n_shots)]).detach().float().cpu().numpy()
        else:
            vectors = self.embed_audio([s[0] for s in sources]).float().cpu().numpy()
        unknown = [p for p in prompts if p not in task_of]
        if unknown:
            warnings.warn(f"{index.where}: no item was asked {unknown[0]!r}"
                          + (f" (and {len(unknown) - 1} more prompts)" if len(unknown) > 1 else "")
                          + "; MBR uses the model's samples alone for it")
        rows = [{"task": task_of[p]} if p in task_of else None for p in prompts]
        keep = [i for i, r in enumerate(rows) if r is not None]
        out: list[list[tuple[str, float, str]]] = [[] for _ in prompts]
        if keep:
            found = select_neighbours(index, vectors[keep], [sources[i][0] for i in keep],
                                      NeighbourConfig(cfg.mbr_neighbours, order="nearest_first", same=("task",)),
                                      query_rows=[rows[i] for i in keep])
            for i, shots in zip(keep, found):
                out[i] = [(s.answer, float(s.score), s.id) for s in shots]
        return out

    def ask(self, audio, prompt, **kwargs):
        """Answer `prompt` about `audio` -> str; lists of prompts and audios -> list[str] (one batch)."""
        batched, _, _ = self._normalise(audio, prompt)
        answers = self.answer(audio, prompt, **kwargs)
        return [a.text for a in answers] if batched else answers[0].text

    @torch.no_grad()
    def score_options(self, audio, prompt, options, *, task=None, examples=None, normalize: bool = False,
                      calibrate: bool = False) -> list[list[float]]:
        """Log-likelihood of each option as the answer. audio/prompt as in `ask` (batched: lists);
        options: one list of strings per sample (or one list for a single prompt) -> [[logp per option]].
        `normalize`: per answer token. `calibrate` (contextual calibration, Zhao et al. 2021): minus the
        option's log-likelihood with the same prompt and examples but the query audio replaced by silence of
        the same length, which removes the LM's prior for some options over others."""
        import numpy as np

        from audioflamingo.audio import Clip

        batched, sources, prompts = self._normalise(audio, prompt)
        options = [options] if not batched else options
        clips = [[self.load_clip(s) for s in srcs] for srcs in sources]
        shots = self._shots(examples, prompts)
        audio_tokens = self.encode_audio([[sh[0] for sh in shot] + c for shot, c in zip(shots, clips)])
        null_tokens = None
        if calibrate:
            silent = [[Clip(np.zeros_like(x.samples), x.sample_rate, "<silence>") for x in c] for c in clips]
            null_tokens = self.encode_audio([[sh[0] for sh in shot] + c for shot, c in zip(shots, silent)])
        copy_w = self._copy_weights(shots, clips, audio_tokens)
        null_w = self._copy_weights(shots, clips, null_tokens) if null_tokens is not None else None
        result = []
        for b, (p, c, opts, shot) in enumerate(zip(prompts, clips, options, shots)):
            seqs, labs, spans = [], [], []
            for o in opts:
                ids, lab = encode(self.tokenizer, self._text(p, len(c), task, shot, answer=o))
                held = answer_spans(ids.tolist(), self.media.sep, self.media.eoc)  # the shots' answers, then the option
                seps = [i for i, tok in enumerate(ids.tolist()) if tok == self.media.sep]
                ends = [i for i, tok in enumerate(ids.tolist()) if tok == self.media.eoc and seps and i > seps[-1]]
                if ends:  # only the option's tokens count (through its <|endofchunk|>): not the examples'
                    lab[: seps[-1] + 1] = IGNORE  # answers, nor the end-of-text after it
                    lab[ends[0] + 1 :] = IGNORE
                else:  # a template whose option has no closing <|endofchunk|>: the labels as encoded, no copying
                    held = []
                seqs.append(ids)
                labs.append(lab)
                spans.append(held)
            input_ids, mask = pad_batch(seqs, self.media.pad, side="right")  # (O, T)
            labels, _ = pad_batch(labs, IGNORE, side="right")  # (O, T)
            rows = torch.full((len(opts),), b, dtype=torch.long, device=self.device)
            total = self._option_logp(input_ids, mask, labels, audio_tokens.select(rows), spans, copy_w, b, normalize)  # (O,)
            if null_tokens is not None:
                total = total - self._option_logp(input_ids, mask, labels, null_tokens.select(rows), spans, null_w, b, normalize)
            result.append(total.tolist())
        return result

    def _copy_weights(self, shots, clips, audio_tokens) -> list[torch.Tensor] | None:
        """Per sample (K_b,) weights of its examples in the copy component, or None when it is off."""
        weight = self.config.shot_copy.weight
        if weight <= 0 or not any(shots) or self.media is None:
            return None
        emb = audio_tokens.embedding
        if emb is None:  # AF1 fixed-slot encoding has no per-audio embedding: compute it
            flat = [[sh[0] for sh in shot] + c for shot, c in zip(shots, clips)]
            vecs = [self.embed_audio(row) for row in flat]  # B x (A_b, E)
            emb = torch.nn.utils.rnn.pad_sequence(vecs, batch_first=True)  # (B, A, E)
        return shot_weights(emb, [len(s) for s in shots], [len(c) for c in clips], self.config.shot_copy.temperature)

    def _option_logp(self, input_ids, mask, labels, audio, spans, copy_w, b: int, normalize: bool) -> torch.Tensor:
        """(O,) log-prob of each option: the LM's, mixed with the examples' answers when copying is on."""
        total, count = self._answer_logp(input_ids, mask, labels, audio)  # (O,), (O,)
        if copy_w is not None:  # held: the examples' answers, then the option's (one span each, else no copying)
            w = self.config.shot_copy.weight
            total = torch.stack([mix_sequence(t, held[:-1], held[-1], copy_w[b], w) if len(held) == len(copy_w[b]) + 1 else t
                                 for t, held in zip(total, spans)])
        return total / count.clamp(min=1) if normalize else total

    def _answer_logp(self, input_ids, mask, labels, audio) -> tuple[torch.Tensor, torch.Tensor]:
        """(O, T) ids, mask and labels -> (O,) summed log-prob of the labelled tokens, (O,) their number."""
        logits, _ = self(input_ids.to(self.device), mask.to(self.device), audio)
        logp = logits[:, :-1].float().log_softmax(-1)  # (O, T-1, V)
        tgt = labels[:, 1:].to(self.device)  # (O, T-1)
        keep = tgt != IGNORE
        tok_lp = logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * keep  # (O, T-1)
        return tok_lp.sum(-1), keep.sum(-1)  # (O,), (O,)
