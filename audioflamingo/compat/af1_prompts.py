"""AF1's inference strings, token set and decoding presets, exactly as the released inference code used them.

Source: NVIDIA/audio-flamingo (2024) inference/data.py (`AudioTextDataProcessor.process`),
inference/inference_examples.py, foundation/inference/inference.py, src/factory.py. The released weights
were evaluated with these strings; any other spelling (capitalised "Answer:", no space before <audio>)
is a different prompt to the model. See docs/af1.md.
"""

from __future__ import annotations

# tokenizer: OPT's own </s> (bos = eos, id 2) and <pad> (id 1) are kept; these are added, in this order
ADDED_SPECIAL_TOKENS = ["<audio>", "<|endofchunk|>"]  # additional_special_tokens -> ids 50265, 50266
SEP_TOKEN = "<SEP>"  # added as sep_token (OPT has none) -> id 50267; len(tokenizer) = 50268
PAD_TOKEN_IF_MISSING = "<PAD>"  # only added when the tokenizer has no pad token (OPT has one)
# OPT's tokenizer itself prepends </s>, and the prompt string starts with </s> again: the ids begin with
# two </s> (AF1's training masked labels[:, :2] for that reason).

FOUNDATION_TASK_PREFIXES = {  # the prefixes of the release's own examples
    "caption": "The task is audio captioning.",
    "aqa": "The task is audio question answering.",
    "scene": "The task is scene classification.",
    "event": "The task is event classification.",
}
CHAT_PREFIX = "The task is dialog."

# decoding: what the release used
MAX_NEW_TOKENS = 128
FOUNDATION_SAMPLING = {"do_sample": True, "top_k": 30, "top_p": 0.95, "num_return_sequences": 1}
CHAT_SAMPLING = {"do_sample": True, "top_k": 50, "top_p": 0.95, "num_return_sequences": 1}
BENCHMARK_DECODING = {"num_beams": 3, "temperature": 1.0}  # foundation/inference/inference.py defaults
# eos for generation: tokenizer.eos_token_id (</s>); Flamingo.generate's own default would be <|endofchunk|>
MAX_PROMPT_TOKENS = 512 * 5  # tokenizer(max_length=max_tokens*5, truncation="only_first"); max_tokens = 512

# audio slots the model is fed (every slot is a 7 s ClapCap window; padding slots are zeros, masked in xattn)
WINDOWS_PER_AUDIO = 16
AUDIO_SLOTS = {"foundation": 1, "chat": 4}  # clap_config.max_num_fewshot: 16 and 64 windows in total


def _clean(text: str) -> str:
    """AF1's preprocess_string_for_eval: strip both ends and lower-case."""
    return text.strip().lower()


def foundation_prompt(prompt: str, prefix: str, bos: str = "</s>", sep: str = SEP_TOKEN) -> str:
    """One audio, one question: '</s>the task is … <audio>question…\\nanswer:<SEP>' (all lower case)."""
    head = f"{_clean(prefix)} " if prefix.strip() else ""  # no task: nothing between </s> and <audio>
    return f"{bos}{head}<audio>{_clean(prompt)}\nanswer:{sep}"


def chat_prompt(dialogue: list[dict], prefix: str = CHAT_PREFIX, bos: str = "</s>", sep: str = SEP_TOKEN,
                eos: str = "</s>") -> str:
    """Multi-turn chat about one audio. `dialogue` = [{"user": …, "assistant": …}, …, {"user": …}].

    The prefix is lower-cased but not stripped and has no space before <audio>; user and assistant
    turns keep their case. Each finished round ends with '<|endofchunk|></s>\\n'.
    """
    text = f"{bos}{prefix.lower()}<audio>"
    for turn in dialogue:
        text += f"user: {turn['user']} \nassistant: {sep}"
        if "assistant" in turn:
            text += f"{turn['assistant']}<|endofchunk|>{eos}\n"
    return text


def clean_answer(decoded: str, sep: str = SEP_TOKEN, eos: str = "</s>", pad: str = "<pad>") -> str:
    """The release's post-processing of `tokenizer.decode(output)`: text after the last <SEP>, without
    </s>, <pad> and <|endofchunk|> (no stripping of spaces)."""
    return decoded.split(sep)[-1].replace(eos, "").replace(pad, "").replace("<|endofchunk|>", "")


def leading_specials(tokenizer) -> str:
    """The tokens a tokenizer prepends by itself ('</s>' for OPT, '' for ours): AF1 tokenised its strings
    with add_special_tokens=True, our `text.encode` never adds any, so af1 texts spell them out."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return "".join(tokenizer.convert_ids_to_tokens(ids))


def task_prefix(task: str | None) -> str:
    """'caption' / 'aqa' / 'scene' / 'event' -> the release's prefix; other text t -> 'The task is t.'"""
    if not task:
        return ""
    return FOUNDATION_TASK_PREFIXES.get(task, f"The task is {task.rstrip('.')}.")


def af1_text(tokenizer, prompt: str, n_audios: int = 1, task: str | None = None, answer: str | None = None,
             examples: bool = False) -> str:
    """The foundation inference string for `prompt_style: af1` (one audio, AF1's lower-case spelling).

    With `answer` (option scoring) the string goes on with answer + '<|endofchunk|></s>'.
    """
    if examples:
        raise ValueError("prompt_style af1: the AF1 release has no inference format for in-context examples; "
                         "use the default prompt style for examples")
    if n_audios != 1 or prompt.count("<audio>") > 1:
        raise ValueError(f"prompt_style af1: AF1 foundation prompts take exactly one audio, got {n_audios}")
    prefix = task_prefix(task)
    prompt = prompt.replace("<audio>", "")
    text = leading_specials(tokenizer) + foundation_prompt(prompt, prefix, bos=tokenizer.eos_token)
    if answer is not None:
        text += f"{answer}<|endofchunk|>{tokenizer.eos_token}"
    return text
