"""`use`: only the answer on stdout, --input checked before a model loads, answer files that keep every input field
and sample when asked, and Ctrl-C in a reply or at the prompt."""

from __future__ import annotations

import io
import sys

import pytest

from conftest import ROOT
from helpers.cli import FP32, as_at_a_terminal, use_cli


def test_use_prompt_writes_only_the_answer_to_stdout(tiny_adapter, tiny_fp32):
    from llm_trainer.chat import base_messages
    from llm_trainer.inference import generate_batch, load_for_inference

    result = use_cli(tiny_adapter, "--prompt", "What is 12 + 30?", "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_for_inference(tiny_fp32.cfg.model, tiny_adapter.base_model, tiny_adapter.path)
    conversation = base_messages(tiny_fp32.cfg.data.system_prompt) + [{"role": "user", "content": "What is 12 + 30?"}]
    answer = generate_batch(model, tiny_fp32.tokenizer, [conversation], 12, 1)[0].text
    assert result.stdout == answer + "\n"  # `> answer.txt` holds the answer (whatever it is) and nothing else
    assert f"loading the adapter in {tiny_adapter.path}" in result.stderr
    assert "gemm_4bit_forward" not in result.stderr and "\x1b[" not in result.stderr  # quiet, no colour in a pipe


def test_use_input_is_checked_before_any_model_loads(tiny_adapter, tmp_path):
    empty = tmp_path / "no-prompts.jsonl"
    empty.write_text('{"id": 1}\nnot json\n')
    result = use_cli(tiny_adapter, "--input", str(empty), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --input: {empty} has no line with a prompt")
    assert "loading" not in result.stderr and not (tmp_path / "out.jsonl").exists()


def test_answer_file_keeps_every_input_field_and_samples_when_asked(tiny_fp32, scripted_model, tmp_path):
    """The answer file's fields and the sampling seed, with a model whose words do not depend on training."""
    import json

    from llm_trainer.chat import answer_file
    from llm_trainer.inference import decoding

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a-1", "prompt": "What is 2 + 2?", "topic": "sums"}\n{"id": "b-2", "prompt": " "}\n')
    model = scripted_model

    def answers(sampling, seed):
        import torch

        torch.manual_seed(seed)
        out = tmp_path / f"out-{seed}.jsonl"
        answer_file(model, tiny_fp32.tokenizer, "", source, out, 16, 4, sampling)
        return [json.loads(line) for line in out.read_text().splitlines()]

    greedy = answers(None, 0)
    assert [(r["id"], r["line"]) for r in greedy] == [("a-1", 1), ("b-2", 2)]
    assert greedy[0]["topic"] == "sums" and greedy[1]["error"] == "empty prompt"
    assert greedy[0]["response"].startswith("four is the answer")  # the scripted words, never an empty answer
    assert answers(None, 1)[0]["response"] == greedy[0]["response"]  # greedy: the same whatever the seed
    sampled = {answers(decoding(temperature=1.5, top_p=1.0), seed)[0]["response"] for seed in range(3)}
    assert len(sampled) > 1  # sampling: the answer depends on the seed


def test_ctrl_c_in_a_reply_stops_it_and_keeps_the_conversation(tiny_fp32, scripted_model):
    """Ctrl-C arrives while the reply streams (the terminal write raises KeyboardInterrupt): the generation
    thread stops, the part already shown stays in the history, and the chat goes on. The model's words do not
    depend on training, so the reply is always long enough to be cut."""
    import threading

    from llm_trainer import chat
    from llm_trainer.inference import stream_reply

    model = scripted_model
    question = "Tell me a long story about numbers."
    full = "".join(stream_reply(model, tiny_fp32.tokenizer, [{"role": "user", "content": question}], 40)).strip()

    class Terminal(io.StringIO):
        state = "waiting"

        def write(self, text):
            super().write(text)
            if text == "assistant> " and Terminal.state == "waiting":
                Terminal.state = "armed"
            elif text.strip() and Terminal.state == "armed":
                Terminal.state = "interrupted"  # Ctrl-C right after the first word of the first reply
                raise KeyboardInterrupt
            return len(text)

    seen = []

    def recording(model, tokenizer, conversation, max_new_tokens, sampling=None):
        seen.append([dict(m) for m in conversation])
        yield from stream_reply(model, tokenizer, conversation, max_new_tokens, sampling)

    lines = iter([question, "And now?", "/exit"])
    before = threading.active_count()
    out = Terminal()
    original, chat.stream_reply = chat.stream_reply, recording
    try:
        replies = chat.chat_loop(model, tiny_fp32.tokenizer, "", 40, lambda _: next(lines), out,
                                 loaded="model 'x' version 3")
    finally:
        chat.stream_reply = original
    text = out.getvalue()
    assert text.startswith("chatting with model 'x' version 3\n") and " [stopped]\n" in text
    assert threading.active_count() == before  # the generation thread has ended
    assert len(seen) == 2 and seen[1][0] == {"role": "user", "content": question}
    kept = seen[1][1]["content"]
    assert seen[1][1]["role"] == "assistant" and kept and full.startswith(kept) and len(kept) < len(full)
    assert replies >= 1  # the stopped reply counts (the second may be empty on this untrained adapter)


def test_ctrl_c_at_the_chat_prompt_is_one_line_and_exit_130(tiny_adapter):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["run_pipeline.py", "use", "--config", "configs/quickstart.yaml", *FP32,
                                           "--adapter", str(tiny_adapter.path), "--interactive",
                                           "--max-new-tokens", "8"],
                          cwd=str(ROOT), encoding="utf-8", timeout=240, preexec_fn=as_at_a_terminal)
    try:
        child.expect_exact(f"chatting with the adapter in {tiny_adapter.path}")
        child.expect_exact("you> ")
        child.sendline("What is 5 + 6?")
        child.expect_exact("assistant> ")
        child.expect_exact("you> ")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert child.before.count("interrupted (Ctrl-C)") == 1 and "Traceback" not in child.before
