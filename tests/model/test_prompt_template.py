"""`model.prompt.render`: conversations through the tokenizer's own chat template, as segments.

The tokenizers are copies of the tiny checkpoint's, with other Jinja chat templates set
on them (LLaMA-2-like, one that drops replies, one that adds its own system prompt).
"""

from __future__ import annotations

import copy

import pytest

from model.engine.base import Turn
from model.prompt import ChatTemplateError, PromptConfig, Segment, render, render_text

# LLaMA-2's layout: `[INST] user [/INST] reply</s>`; how a reply is closed varies.
LLAMA2 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>\n{{ message['content'] }}\n<</SYS>>\n\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'].strip() }} [/INST]"
    "{% else %} {{ message['content'].strip() }}CLOSE{% endif %}"
    "{% endfor %}"
)
DROPS_REPLIES = (
    "{% for message in messages %}{% if message['role'] != 'assistant' %}"
    "<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
REPEATS_USER = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}{{ message['content'] }}</s>\n"
    "{% endfor %}"
)
OWN_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<s>system\nTEMPLATE DEFAULT</s>\n{% endif %}"
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

CONFIG = PromptConfig(system="You are a test assistant.")
DIALOGUE = [
    Turn("user", "What colour is it?"),
    Turn("assistant", "It is red."),
    Turn("user", "And the shape?"),
    Turn("assistant", "It is a circle."),
]


def with_template(tokenizer, template: str | None):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def kinds(segments: list[Segment]) -> list[str]:
    return [s.kind for s in segments]


def check_replies_closed_once(segments: list[Segment], replies: list[str], eos: str) -> None:
    trainable = [s for s in segments if s.trainable]
    assert [(s.kind, s.text) for s in trainable] == [x for r in replies for x in (("text", r), ("eos", ""))]
    for i, s in enumerate(segments):
        if s.trainable and s.kind == "text":
            assert segments[i + 1] == Segment("eos", trainable=True)  # exactly one EOS, right after
    # The reply's EOS is a segment of its own, never also left at the start of the text after it.
    for i, s in enumerate(segments[:-1]):
        if s.kind == "eos":
            assert not segments[i + 1].text.lstrip().startswith(eos), segments[i + 1]
    # Each reply appears once, as its trainable segment only.
    for r in replies:
        assert sum(r in s.text for s in segments) == 1


def test_tiny_chatml_template_renders_turns_and_replies(tiny_model) -> None:
    tok = tiny_model.tokenizer
    segments = render(DIALOGUE, CONFIG, tok, add_generation_prompt=False)
    check_replies_closed_once(segments, ["It is red.", "It is a circle."], tok.eos_token)
    assert segments[0] == Segment("text", "<s>system\nYou are a test assistant.</s>\n<s>user\n"
                                          "What colour is it?</s>\n<s>assistant\n")
    assert render_text(segments, CONFIG, eos=tok.eos_token) == tok.apply_chat_template(
        [{"role": "system", "content": CONFIG.system}]
        + [{"role": t.role, "content": t.content} for t in DIALOGUE], tokenize=False)


def test_generation_prompt_ends_untrainable(tiny_model) -> None:
    segments = render(DIALOGUE[:1], CONFIG, tiny_model.tokenizer, add_generation_prompt=True)
    assert not any(s.trainable for s in segments)
    assert segments[-1].kind == "text" and segments[-1].text.endswith("<s>assistant\n")


@pytest.mark.parametrize("close", [
    "{{ eos_token }}",
    "",
    " {{ eos_token }}",  # LLaMA-2's ' </s>': failed (two EOS per reply) before render stripped the space
], ids=["eos", "no-eos", "llama2-space-eos"])
def test_llama2_like_template_gets_one_eos_per_reply(tiny_model, close: str) -> None:
    tok = with_template(tiny_model.tokenizer, LLAMA2.replace("CLOSE", close))
    segments = render(DIALOGUE, CONFIG, tok, add_generation_prompt=False)
    check_replies_closed_once(segments, ["It is red.", "It is a circle."], tok.eos_token)
    # LLaMA-2 puts an EOS after replies only: none may be left in the plain text.
    assert all(tok.eos_token not in s.text for s in segments if s.kind == "text")
    assert "[INST] And the shape? [/INST]" in render_text(segments, CONFIG, eos=tok.eos_token)


def test_template_that_drops_replies_is_refused(tiny_model) -> None:
    tok = with_template(tiny_model.tokenizer, DROPS_REPLIES)
    with pytest.raises(ChatTemplateError, match=r"dropped or repeated"):
        render(DIALOGUE, CONFIG, tok, add_generation_prompt=False)


def test_template_that_repeats_a_message_is_refused(tiny_model) -> None:
    tok = with_template(tiny_model.tokenizer, REPEATS_USER)
    with pytest.raises(ChatTemplateError):
        render(DIALOGUE, CONFIG, tok, add_generation_prompt=False)


def test_tokenizer_without_template_is_refused(tiny_model) -> None:
    tok = with_template(tiny_model.tokenizer, None)
    with pytest.raises(ChatTemplateError, match=r"no chat template"):
        render(DIALOGUE, CONFIG, tok, add_generation_prompt=True)


def _text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments)


def test_config_system_prompt_is_used_without_a_system_turn(tiny_model) -> None:
    text = _text(render(DIALOGUE[:1], CONFIG, tiny_model.tokenizer, True))
    assert text.startswith("<s>system\nYou are a test assistant.</s>\n<s>user\nWhat colour is it?")
    assert text.count("<s>system") == 1


def test_leading_system_turn_replaces_the_config_prompt(tiny_model) -> None:
    turns = [Turn("system", "Answer in one word."), *DIALOGUE[:1]]
    text = _text(render(turns, CONFIG, tiny_model.tokenizer, True))
    assert text.startswith("<s>system\nAnswer in one word.</s>\n<s>user\n")
    assert CONFIG.system not in text and text.count("<s>system") == 1


def test_empty_config_system_passes_no_system_message(tiny_model) -> None:
    empty = PromptConfig(system="")
    text = _text(render(DIALOGUE[:1], empty, tiny_model.tokenizer, True))
    assert "<s>system" not in text and text.startswith("<s>user\nWhat colour is it?")
    # A template with a default of its own adds it when no system message comes.
    own = with_template(tiny_model.tokenizer, OWN_DEFAULT_SYSTEM)
    assert _text(render(DIALOGUE[:1], empty, own, True)).startswith("<s>system\nTEMPLATE DEFAULT</s>\n<s>user\n")
    assert "TEMPLATE DEFAULT" not in _text(render(DIALOGUE[:1], CONFIG, own, True))


def test_misplaced_system_and_assistant_videos_are_errors(tiny_model) -> None:
    tok = tiny_model.tokenizer
    with pytest.raises(ValueError, match=r"system turn may only come first"):
        render([DIALOGUE[0], Turn("system", "late")], CONFIG, tok, True)
    with pytest.raises(ValueError, match=r"only user turns"):
        render([DIALOGUE[0], Turn("assistant", "here", ("v",))], CONFIG, tok, False)


def test_videos_sit_in_their_user_turn_in_order_before_its_text(tiny_model) -> None:
    turns = [
        Turn("user", "Compare these.", ("a", "b")),
        Turn("assistant", "The first is red."),
        Turn("user", "And this one?", ("c",)),
    ]
    segments = render(turns, CONFIG, tiny_model.tokenizer, add_generation_prompt=True)
    assert [(s.kind, s.video_id) for s in segments if s.kind == "video"] == [("video", "a"), ("video", "b"),
                                                                             ("video", "c")]
    assert kinds(segments) == ["text", "video", "video", "text", "text", "eos", "text", "video", "text"]
    assert all(not s.trainable for s in segments if s.kind == "video")
    first, _, _, after_ab, reply, _, between, _, last = segments
    assert first.text.endswith("<s>user\n") and after_ab.text.startswith("Compare these.</s>")
    assert reply == Segment("text", "The first is red.", trainable=True)
    assert between.text == "\n<s>user\n" and last.text.startswith("And this one?</s>")
    assert last.text.endswith("<s>assistant\n")


def test_llama2_template_keeps_videos_inside_inst(tiny_model) -> None:
    tok = with_template(tiny_model.tokenizer, LLAMA2.replace("CLOSE", "{{ eos_token }}"))
    segments = render([Turn("user", "Describe it.", ("v0",))], CONFIG, tok, add_generation_prompt=False)
    assert kinds(segments) == ["text", "video", "text"]
    assert segments[0].text.endswith("[INST] ") and segments[2].text == "Describe it. [/INST]"
    assert segments[1].video_id == "v0"
