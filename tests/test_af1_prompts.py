"""AF1's exact inference strings (hand-written from the release's inference/data.py)."""

from audioflamingo.compat.af1_prompts import chat_prompt, clean_answer, foundation_prompt


def test_foundation_prompt_is_lower_cased_with_lower_answer():
    text = foundation_prompt("Describe the sound in a sentence. ", "The task is audio captioning.")
    assert text == "</s>the task is audio captioning. <audio>describe the sound in a sentence.\nanswer:<SEP>"


def test_foundation_prompt_keeps_options_lines():
    text = foundation_prompt("Please answer this question: Are there waves?\nOPTIONS:\nyes.\nno.",
                             "The task is audio question answering.")
    assert text.endswith("<audio>please answer this question: are there waves?\noptions:\nyes.\nno.\nanswer:<SEP>")


def test_chat_prompt_rounds():
    dialogue = [{"user": "What genre is this?", "assistant": "It is Jazz."}, {"user": "Any vocals?"}]
    assert chat_prompt(dialogue) == (
        "</s>the task is dialog.<audio>"
        "user: What genre is this? \nassistant: <SEP>It is Jazz.<|endofchunk|></s>\n"
        "user: Any vocals? \nassistant: <SEP>"
    )


def test_clean_answer_takes_text_after_last_sep():
    decoded = "</s></s>the task is dialog.<audio>user: a \nassistant: <SEP>x<|endofchunk|></s>\nuser: b \nassistant: <SEP> Yes, a piano.<|endofchunk|></s><pad>"
    assert clean_answer(decoded) == " Yes, a piano."
