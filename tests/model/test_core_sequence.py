"""build_sequence / collate / loss: video tokens land exactly at their placeholders and
the loss sees assistant text (and its closing EOS) only."""

from __future__ import annotations

import pytest
import torch

from model.engine.base import Turn
from model.network import (
    IGNORE_INDEX,
    VIDEO_TOKEN,
    GPT4VideoModel,
    MissingVideoFeatures,
    labelled_run_ids,
    opening_token_weights,
)


def video_features(model: GPT4VideoModel, names: list[str]) -> dict[str, torch.Tensor]:
    """Distinct random `(Nq, D)` features per id (no need to run the encoder here)."""
    gen = torch.Generator().manual_seed(123)
    dim = model.llm.get_input_embeddings().weight.shape[1]
    return {n: torch.randn(model.num_video_tokens, dim, generator=gen) for n in names}  # (Nq, D) each


# The tiny checkpoint's chat template (model/tiny_chat_template.jinja), written out here
# independently: `<s>` opens a turn, `</s>` (EOS) closes it.
ASSISTANT_PREFIX = "<s>assistant\n"


def expected_layout(model: GPT4VideoModel, parts: list[tuple[str, str, bool]]) -> tuple[list[int], list[int]]:
    """Token ids and labels the template must produce, written out independently.

    parts: ("text", s, trainable) | ("video", id, False) | ("eos", "", True); adjacent
    untrained text is one run (it is tokenised as one piece of the rendered template).
    """
    tok, nq = model.tokenizer, model.num_video_tokens
    merged: list[tuple[str, str, bool]] = []
    for part in parts:
        if merged and part[0] == "text" and not part[2] and merged[-1][0] == "text" and not merged[-1][2]:
            merged[-1] = ("text", merged[-1][1] + part[1], False)
        else:
            merged.append(part)
    ids: list[int] = []
    labels: list[int] = []
    for kind, value, trainable in merged:
        if kind == "video":
            piece = [VIDEO_TOKEN] * nq
        elif kind == "eos":
            piece = [tok.eos_token_id]
        else:
            piece = tok.encode(value, add_special_tokens=False)
        ids += piece
        labels += piece if trainable else [IGNORE_INDEX] * len(piece)
    return ids, labels


def system_part(model: GPT4VideoModel, text: str | None = None) -> tuple[str, str, bool]:
    return ("text", f"<s>system\n{model.prompt.system if text is None else text}</s>\n", False)


def user_parts(model: GPT4VideoModel, content: str, videos: tuple[str, ...] = ()) -> list[tuple[str, str, bool]]:
    return [("text", "<s>user\n", False), *[("video", v, False) for v in videos], ("text", content + "</s>\n", False)]


def assistant_parts(model: GPT4VideoModel, content: str) -> list[tuple[str, str, bool]]:
    return [("text", ASSISTANT_PREFIX, False), ("text", content, True), ("eos", "", True), ("text", "\n", False)]


def assert_embeddings_in_place(model: GPT4VideoModel, seq, feats: dict[str, torch.Tensor], order: list[str]) -> None:
    nq = model.num_video_tokens
    table = model.llm.get_input_embeddings().weight  # (V, D)
    assert seq.inputs_embeds.shape == (len(seq.token_ids), table.shape[1])
    assert len(seq.video_spans) == len(order)
    video_rows = set()
    for (start, end), vid in zip(seq.video_spans, order, strict=True):
        assert end - start == nq
        assert torch.equal(seq.inputs_embeds[start:end], feats[vid])  # (Nq, D)
        assert seq.token_ids[start:end] == [VIDEO_TOKEN] * nq
        video_rows.update(range(start, end))
    for i, token in enumerate(seq.token_ids):
        if i in video_rows:
            continue
        assert token != VIDEO_TOKEN, f"VIDEO_TOKEN outside a span at {i}"
        assert torch.equal(seq.inputs_embeds[i], table[token]), f"row {i} is not the embedding of {token}"


def test_no_video_conversation(tiny_model) -> None:
    turns = [Turn("user", "What colour is it?")]
    with torch.no_grad():
        seq = tiny_model.build_sequence(turns, {}, add_generation_prompt=True)
    ids, labels = expected_layout(tiny_model, [
        system_part(tiny_model), *user_parts(tiny_model, "What colour is it?"),
        ("text", ASSISTANT_PREFIX, False),
    ])
    assert seq.token_ids == ids
    assert seq.labels.tolist() == labels == [IGNORE_INDEX] * len(ids)  # nothing to learn in a prompt
    assert seq.video_spans == []
    assert_embeddings_in_place(tiny_model, seq, {}, [])


def test_one_video(tiny_model) -> None:
    feats = video_features(tiny_model, ["v0"])
    turns = [Turn("user", "Describe the video.", ("v0",)), Turn("assistant", "a red circle moves to the left.")]
    with torch.no_grad():
        seq = tiny_model.build_sequence(turns, feats, add_generation_prompt=False)
    ids, labels = expected_layout(tiny_model, [
        system_part(tiny_model), *user_parts(tiny_model, "Describe the video.", ("v0",)),
        *assistant_parts(tiny_model, "a red circle moves to the left."),
    ])
    assert seq.token_ids == ids
    assert seq.labels.tolist() == labels
    prefix = len(tiny_model.tokenizer.encode(
        f"<s>system\n{tiny_model.prompt.system}</s>\n<s>user\n", add_special_tokens=False))
    assert seq.video_spans == [(prefix, prefix + tiny_model.num_video_tokens)]
    assert_embeddings_in_place(tiny_model, seq, feats, ["v0"])


def test_three_videos_two_in_one_turn_and_one_later(tiny_model) -> None:
    feats = video_features(tiny_model, ["a", "b", "c"])
    turns = [
        Turn("system", "Be brief."),
        Turn("user", "Compare these.", ("b", "a")),  # order of the turn, not of the dict
        Turn("assistant", "a blue square moves up."),
        Turn("user", "And this one?", ("c",)),
        Turn("assistant", "Sure, here is a video: <video>a green triangle moves down.</video>"),
    ]
    with torch.no_grad():
        seq = tiny_model.build_sequence(turns, feats, add_generation_prompt=False)
    ids, labels = expected_layout(tiny_model, [
        system_part(tiny_model, "Be brief."),
        *user_parts(tiny_model, "Compare these.", ("b", "a")),
        *assistant_parts(tiny_model, "a blue square moves up."),
        *user_parts(tiny_model, "And this one?", ("c",)),
        *assistant_parts(tiny_model, "Sure, here is a video: <video>a green triangle moves down.</video>"),
    ])
    assert seq.token_ids == ids
    assert seq.labels.tolist() == labels
    nq = tiny_model.num_video_tokens
    (_, b1), (a0, a1), (c0, _) = seq.video_spans
    assert b1 == a0  # two videos in one turn sit back to back
    assert c0 > a1 + nq  # the later turn's video comes after text
    assert seq.token_ids.count(VIDEO_TOKEN) == 3 * nq
    assert_embeddings_in_place(tiny_model, seq, feats, ["b", "a", "c"])


def test_labels_cover_assistant_text_and_eos_only(tiny_model) -> None:
    tok = tiny_model.tokenizer
    feats = video_features(tiny_model, ["v"])
    replies = ["a red circle moves to the left.", "I cannot help with that request."]
    turns = [Turn("user", "What happens?", ("v",)), Turn("assistant", replies[0]),
             Turn("user", "Make it blue."), Turn("assistant", replies[1])]
    with torch.no_grad():
        seq = tiny_model.build_sequence(turns, feats, add_generation_prompt=False)
    labels = seq.labels.tolist()
    assert labels[0] == IGNORE_INDEX and seq.token_ids[0] == tok.bos_token_id
    labelled = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert all(labels[i] == seq.token_ids[i] for i in labelled)
    # The labelled positions are exactly: reply 1, EOS, reply 2, EOS, in two runs.
    expected_runs = [[*tok.encode(r, add_special_tokens=False), tok.eos_token_id] for r in replies]
    runs, current = [], []
    for i in range(len(labels)):
        if labels[i] != IGNORE_INDEX:
            current.append(labels[i])
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    assert runs == expected_runs
    # Video positions, the role prefixes and the user turns are never labelled.
    for start, end in seq.video_spans:
        assert set(labels[start:end]) == {IGNORE_INDEX}
    assistant_prefix = tok.encode(ASSISTANT_PREFIX, add_special_tokens=False)
    for i in range(len(seq.token_ids) - len(assistant_prefix) + 1):
        if seq.token_ids[i:i + len(assistant_prefix)] == assistant_prefix:
            assert set(labels[i:i + len(assistant_prefix)]) == {IGNORE_INDEX}
    assert tok.decode([t for t, lab in zip(seq.token_ids, labels, strict=True) if lab == IGNORE_INDEX
                       and t != VIDEO_TOKEN]).count("Make it blue.") == 1


def test_generation_prompt_ends_with_assistant_prefix(tiny_model) -> None:
    tok = tiny_model.tokenizer
    turns = [Turn("user", "hi"), Turn("assistant", "Here you go."), Turn("user", "again")]
    with torch.no_grad():
        seq = tiny_model.build_sequence(turns, {}, add_generation_prompt=True)
    prefix = tok.encode(ASSISTANT_PREFIX, add_special_tokens=False)
    assert seq.token_ids[-len(prefix):] == prefix
    # Every turn is closed by EOS (system, user, assistant, user); the open one is not.
    assert seq.token_ids.count(tok.eos_token_id) == 4
    embeds = tiny_model.prompt_embeds(turns, {})  # (L, D)
    assert torch.equal(embeds, seq.inputs_embeds)


def test_missing_features_and_misplaced_turns_are_rejected(tiny_model) -> None:
    with pytest.raises(MissingVideoFeatures, match="nope"):
        tiny_model.build_sequence([Turn("user", "x", ("nope",))], {}, add_generation_prompt=True)
    with pytest.raises(ValueError, match="only user turns"):
        tiny_model.build_sequence([Turn("user", "x"), Turn("assistant", "y", ("v",))],
                                  video_features(tiny_model, ["v"]), add_generation_prompt=False)
    with pytest.raises(ValueError, match="system turn may only come first"):
        tiny_model.build_sequence([Turn("user", "x"), Turn("system", "y")], {}, add_generation_prompt=True)


def test_collate_right_padding_masks_labels(tiny_model) -> None:
    feats = video_features(tiny_model, ["v"])
    with torch.no_grad():
        long = tiny_model.build_sequence(
            [Turn("user", "Describe the video.", ("v",)), Turn("assistant", "a red circle.")], feats, False)
        short = tiny_model.build_sequence([Turn("user", "hi"), Turn("assistant", "Sorry.")], feats, False)
    batch = GPT4VideoModel.collate([short, long], padding_side="right")
    n_short, n_long = len(short.token_ids), len(long.token_ids)
    assert batch.inputs_embeds.shape == (2, n_long, short.inputs_embeds.shape[1])
    assert batch.attention_mask[0].tolist() == [1] * n_short + [0] * (n_long - n_short)
    assert batch.attention_mask[1].tolist() == [1] * n_long
    assert batch.labels[0, :n_short].tolist() == short.labels.tolist()
    assert set(batch.labels[0, n_short:].tolist()) == {IGNORE_INDEX}  # padding is never a target
    assert torch.equal(batch.inputs_embeds[0, :n_short], short.inputs_embeds)
    assert torch.equal(batch.labels[1], long.labels)
    assert batch.position_ids[0, :n_short].tolist() == list(range(n_short))


def test_collate_left_padding_for_generation(tiny_model) -> None:
    with torch.no_grad():
        a = tiny_model.build_sequence([Turn("user", "hi")], {}, True)
        b = tiny_model.build_sequence([Turn("user", "a longer question about the video?")], {}, True)
    batch = GPT4VideoModel.collate([a, b], padding_side="left")
    pad = len(b.token_ids) - len(a.token_ids)
    assert pad > 0
    assert batch.attention_mask[0].tolist() == [0] * pad + [1] * len(a.token_ids)
    assert torch.equal(batch.inputs_embeds[0, pad:], a.inputs_embeds)
    assert batch.position_ids[0, pad:].tolist() == list(range(len(a.token_ids)))  # positions start at the text


def test_loss_is_next_token_cross_entropy_on_labelled_positions(tiny_model) -> None:
    feats = video_features(tiny_model, ["v"])
    with torch.no_grad():
        conversations = [
            [Turn("user", "What shape?", ("v",)), Turn("assistant", "a square.")],
            [Turn("user", "hi"), Turn("assistant", "Here you go. a circle.")],
        ]
        seqs = [tiny_model.build_sequence(turns, feats, add_generation_prompt=False) for turns in conversations]
        batch = GPT4VideoModel.collate(seqs, padding_side="right")
        loss = tiny_model.loss(batch)
        manual = []
        for seq in seqs:
            logits = tiny_model.llm(inputs_embeds=seq.inputs_embeds[None]).logits[0]  # (L, V)
            for j, target in enumerate(seq.labels.tolist()):
                if target != IGNORE_INDEX:
                    manual.append(torch.nn.functional.cross_entropy(logits[j - 1], torch.tensor(target)))
    torch.testing.assert_close(loss, torch.stack(manual).mean(), rtol=1e-4, atol=1e-5)


def test_opening_token_weights_mark_the_first_tokens_of_each_labelled_run() -> None:
    labelled = torch.tensor([[False, True, True, True, False, True, True],
                             [True, True, False, False, False, False, True]])
    weights = opening_token_weights(labelled, first=2, weight=5.0)
    assert weights.tolist() == [[1, 5, 5, 1, 1, 5, 5],
                                [5, 5, 1, 1, 1, 1, 5]]


def test_opening_weight_is_a_weighted_mean_over_each_turns_first_tokens(tiny_model) -> None:
    feats = video_features(tiny_model, ["v"])
    with torch.no_grad():
        conversations = [
            [Turn("user", "What shape?", ("v",)), Turn("assistant", "a square."),
             Turn("user", "And the colour?"), Turn("assistant", "It is red, I think.")],
            [Turn("user", "hi"), Turn("assistant", "Here you go. a circle.")],
        ]
        seqs = [tiny_model.build_sequence(turns, feats, add_generation_prompt=False) for turns in conversations]
        batch = GPT4VideoModel.collate(seqs, padding_side="right")
        plain = tiny_model.loss(batch)
        assert torch.equal(tiny_model.loss(batch, opening_tokens=2, opening_weight=1.0), plain)
        weighted = tiny_model.loss(batch, opening_tokens=2, opening_weight=4.0)
        # By hand: each assistant turn's first two predicted tokens count 4 times.
        terms, weights = [], []
        for seq in seqs:
            logits = tiny_model.llm(inputs_embeds=seq.inputs_embeds[None]).logits[0]  # (L, V)
            labels = seq.labels.tolist()
            run = 0
            for j, target in enumerate(labels):
                run = run + 1 if target != IGNORE_INDEX else 0
                if target != IGNORE_INDEX:
                    terms.append(torch.nn.functional.cross_entropy(logits[j - 1], torch.tensor(target)))
                    weights.append(4.0 if run <= 2 else 1.0)
    assert weights.count(4.0) == 6  # three assistant turns, two opening tokens each
    w = torch.tensor(weights)
    torch.testing.assert_close(weighted, (w * torch.stack(terms)).sum() / w.sum(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(weighted, plain)


def test_labelled_run_ids_number_each_turn_across_the_batch() -> None:
    labelled = torch.tensor([[False, True, True, False, True, False],
                             [True, True, False, False, True, True]])
    assert labelled_run_ids(labelled).tolist() == [[-1, 0, 0, -1, 1, -1],
                                                   [2, 2, -1, -1, 3, 3]]


def test_loss_per_turn_is_the_mean_over_turns_of_each_turns_weighted_mean(tiny_model) -> None:
    feats = video_features(tiny_model, ["v"])
    with torch.no_grad():
        conversations = [
            [Turn("user", "What shape?", ("v",)), Turn("assistant", "a square."),
             Turn("user", "Tell me a long story, please."),
             Turn("assistant", "Once upon a time there was a small red square that moved to the left all day.")],
            [Turn("user", "hi"), Turn("assistant", "Hello!")],
        ]
        seqs = [tiny_model.build_sequence(turns, feats, add_generation_prompt=False) for turns in conversations]
        batch = GPT4VideoModel.collate(seqs, padding_side="right")
        per_turn = tiny_model.loss(batch, per_turn=True)
        per_turn_weighted = tiny_model.loss(batch, opening_tokens=1, opening_weight=3.0, per_turn=True)
        token_mean = tiny_model.loss(batch)
        # By hand: group the predicted tokens by assistant turn.
        turns: list[list[tuple[torch.Tensor, float]]] = []
        for seq in seqs:
            logits = tiny_model.llm(inputs_embeds=seq.inputs_embeds[None]).logits[0]  # (L, V)
            previous = IGNORE_INDEX
            for j, target in enumerate(seq.labels.tolist()):
                if target != IGNORE_INDEX:
                    if previous == IGNORE_INDEX:
                        turns.append([])
                    term = torch.nn.functional.cross_entropy(logits[j - 1], torch.tensor(target))
                    turns[-1].append((term, 3.0 if previous == IGNORE_INDEX else 1.0))
                previous = target
    assert len(turns) == 3 and len(turns[1]) > 3 * len(turns[0])  # the long answer has many more tokens

    def mean_of_turns(weighted: bool) -> torch.Tensor:
        means = [sum(t * (w if weighted else 1.0) for t, w in turn) / sum(w if weighted else 1.0 for _, w in turn)
                 for turn in turns]
        return torch.stack(means).mean()

    torch.testing.assert_close(per_turn, mean_of_turns(False), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(per_turn_weighted, mean_of_turns(True), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(per_turn, token_mean)
