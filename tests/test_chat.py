"""The chat loop keeps the conversation: each turn sees the earlier ones; /reset leaves only the system prompt."""

from __future__ import annotations

import copy
import io


def test_turns_carry_history_and_reset_clears_it(monkeypatch):
    from llm_trainer import chat

    seen: list[list[dict]] = []

    def recording_reply(model, tokenizer, conversation, max_new_tokens, sampling=None):
        seen.append(copy.deepcopy(conversation))
        yield f"reply {len(seen)}"

    monkeypatch.setattr(chat, "stream_reply", recording_reply)
    lines = iter(["What is 2 + 2?", "And times 3?", "/reset", "", "Hello again", "/exit", "never read"])
    out = io.StringIO()
    replies = chat.chat_loop(None, None, "Be brief.", 16, lambda prompt: next(lines), out)

    system = {"role": "system", "content": "Be brief."}
    assert replies == 3 and len(seen) == 3
    assert seen[0] == [system, {"role": "user", "content": "What is 2 + 2?"}]
    assert seen[1] == [system, {"role": "user", "content": "What is 2 + 2?"},
                       {"role": "assistant", "content": "reply 1"}, {"role": "user", "content": "And times 3?"}]
    assert seen[2] == [system, {"role": "user", "content": "Hello again"}]  # after /reset: only the new turn
    text = out.getvalue()
    assert "assistant> reply 2" in text and "(conversation cleared)" in text and "reply 4" not in text


def test_end_of_input_ends_the_chat(monkeypatch):
    from llm_trainer import chat

    monkeypatch.setattr(chat, "stream_reply", lambda *args: iter(["ok"]))
    lines = iter(["hi"])

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert chat.chat_loop(None, None, "", 8, read, io.StringIO()) == 1
