"""Everyday-chat helpers: trimming a cut-off answer (`trim_to_sentence`) and spotting refusals (`is_refusal`)."""

from __future__ import annotations

import pytest

from model.data.chat import trim_to_sentence
from model.eval.chat import is_refusal
from model.safety.categories import CATEGORY_IDS
from model.safety.policy import refusal_message


@pytest.mark.parametrize(("text", "expected"), [
    ("Paris is the capital of France. It is known for the Eiffel Tow",
     "Paris is the capital of France."),
    ("First, open the terminal. Then type the command! Finally pre",
     "First, open the terminal. Then type the command!"),
    ("Is it raining today? Maybe, I think it could be", "Is it raining today?"),
    ("A complete answer that ends properly.", "A complete answer that ends properly."),
    ("Steps to follow here:\n1) open the lid and", "Steps to follow here:"),
    # A dot inside a number or a file name is no sentence end.
    ("The value of pi is 3.14159 roughly. And e is 2.718 appro", "The value of pi is 3.14159 roughly."),
    ("  Leading spaces are dropped here. trailing bit", "Leading spaces are dropped here."),
])
def test_trim_cuts_at_the_last_sentence_end(text: str, expected: str) -> None:
    assert trim_to_sentence(text) == expected


@pytest.mark.parametrize("text", [
    "",
    "no sentence end at all in this long piece of text",
    "Too short. and then more words that never end",  # "Too short." is under 20 characters
    "Hi! ok",
    "version 3.14 of the tool is here without an end",  # "3." is no sentence end
])
def test_trim_gives_none_when_too_little_is_left(text: str) -> None:
    assert trim_to_sentence(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    # cut inside a block: its full lines are kept and the block is closed
    ("Here is an example:\n\n```python\nimport os\n\ndef main():\n    print(os.getcwd())\n\n# Start the",
     "Here is an example:\n\n```python\nimport os\n\ndef main():\n    print(os.getcwd())\n```"),
    ("Use this:\n```bash\nkill -9 1234\nps aux | gre", "Use this:\n```bash\nkill -9 1234\n```"),
    # a closed block before the cut is left alone
    ("Run it:\n```bash\nls -la\n```\nThat lists the files. Then you can ch",
     "Run it:\n```bash\nls -la\n```\nThat lists the files."),
    # a block cut before its first line of code goes, opening fence and all
    ("You can do it with a loop. Here is how.\n```python\nfor i in ran", "You can do it with a loop. Here is how."),
])
def test_trim_never_leaves_a_code_block_open(text: str, expected: str) -> None:
    trimmed = trim_to_sentence(text)
    assert trimmed == expected
    assert trimmed.count("```") % 2 == 0


def test_trim_min_chars_is_a_parameter() -> None:
    assert trim_to_sentence("Too short. and more", min_chars=5) == "Too short."
    assert trim_to_sentence("Too short. and more", min_chars=11) is None
    assert trim_to_sentence("Twelve char.", min_chars=12) == "Twelve char."


@pytest.mark.parametrize("reply", [
    "I'm sorry, but I can't help with this request because it involves violence.",
    "I cannot assist with that.",
    "I can't help with that.",
    "I can\u2019t help with that.",  # a typographic apostrophe
    "Sorry, I won't provide instructions for that.",
    "I am unable to comply with this request.",
    "I'm not able to help with that request.",
    "i CANNOT create that video.",
    "Unfortunately I can not generate that content.",
])
def test_refusals_are_recognised(reply: str) -> None:
    assert is_refusal(reply)


@pytest.mark.parametrize("category", CATEGORY_IDS)
def test_the_projects_own_refusal_message_is_a_refusal(category: str) -> None:
    assert is_refusal(refusal_message(category))


@pytest.mark.parametrize("reply", [
    "Here is how to kill a process: run `kill -9 <pid>` in a terminal.",
    "I can't wait to help you!",
    "Sure! I can help with that. First, preheat the oven.",
    "You cannot divide by zero, so the expression is undefined.",
    "I can provide a few options: tea, coffee or juice.",
    "",
])
def test_ordinary_answers_are_not_refusals(reply: str) -> None:
    assert not is_refusal(reply)


def test_everyday_prompts_wear_the_moderation_sets_wrappers_at_the_asked_share() -> None:
    # Harmful train prompts carry these wrappers; everyday ones must too, or "hey, ..." cues a refusal.
    from model.data.chat import everyday_prompts, with_request_wrappers
    from model.safety.data.build_prompts import REQUEST_WRAPPERS

    plain = everyday_prompts("train")
    assert with_request_wrappers(plain, 0.0) == plain
    patterns = [w.split("{r}") for w in REQUEST_WRAPPERS]
    for p, q in zip(plain, with_request_wrappers(plain, 1.0), strict=True):
        assert q.origin == p.origin and q.text != p.text
        assert any(q.text.startswith(head) and q.text.endswith(tail) and q.text[len(head):len(q.text) - len(tail)]
                   in (p.text, p.text.rstrip(" .?!")) for head, tail in patterns), q.text
    half = with_request_wrappers(plain, 0.5, seed=3)
    wrapped = sum(p.text != q.text for p, q in zip(plain, half, strict=True)) / len(plain)
    assert 0.4 < wrapped < 0.6
    assert half == with_request_wrappers(plain, 0.5, seed=3)  # the same every run
    assert half != with_request_wrappers(plain, 0.5, seed=4)
    with pytest.raises(ValueError, match="share"):
        with_request_wrappers(plain, 1.5)
