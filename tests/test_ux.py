"""What a user sees: training progress with an ETA (in place on a terminal, plain lines elsewhere)."""

from __future__ import annotations

import io
import re
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(step: int, total: int = 10) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=total, is_world_process_zero=True)


def run_steps(progress, clock, total: int, seconds_per_step: float, log_every: int, start: int = 0):
    progress.on_train_begin(None, state(start, total), None)
    for step in range(start + 1, total + 1):
        clock.now += seconds_per_step
        progress.on_step_end(None, state(step, total), None)
        if step % log_every == 0:
            progress.on_log(None, state(step, total), None,
                            logs={"loss": 1.0 + 1.0 / step, "train_tokens_per_second": 1234.4, "epoch": 0.5})
    progress.on_log(None, state(total, total), None, logs={"train_runtime": total * seconds_per_step,
                                                           "train_loss": 1.5})
    progress.on_train_end(None, state(total, total), None)


def test_plain_lines_off_a_terminal_one_per_logging_step_with_eta():
    from llm_trainer.progress import TrainingProgress

    clock, out = FakeClock(), io.StringIO()
    run_steps(TrainingProgress(stream=out, clock=clock), clock, total=10, seconds_per_step=2.0, log_every=5)
    lines = out.getvalue().splitlines()
    assert lines == ["train  5/10  50% | elapsed 0:10 | ETA 0:10 | loss 1.2000 | 1,234 tokens/s",
                     "train 10/10 100% | elapsed 0:20 | ETA 0:00 | loss 1.1000 | 1,234 tokens/s",
                     "trained 10 steps in 0:20, mean loss 1.5000"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()  # no terminal codes in a log file


def test_eta_ignores_start_up_and_a_resumed_run_counts_its_own_steps():
    from llm_trainer.progress import TrainingProgress, clock_text

    clock, out = FakeClock(), io.StringIO()
    progress = TrainingProgress(stream=out, clock=clock)
    progress.on_train_begin(None, state(40, 100), None)  # resumed from step 40
    clock.now += 30.0  # model loading and the evaluation before the first step
    progress.on_step_end(None, state(41, 100), None)
    clock.now += 3 * 1.5
    assert progress.eta(44, 100, clock.now) == pytest.approx(56 * 1.5)  # pace from the first step's end
    assert out.getvalue() == "resuming at step 40/100\n"
    assert [clock_text(s) for s in (None, 0, 59.6, 61, 3725)] == ["?", "0:00", "1:00", "1:01", "1:02:05"]


def test_on_a_terminal_the_line_is_redrawn_in_place_and_evaluations_stay_above_it():
    from llm_trainer.progress import TrainingProgress

    clock, out = FakeClock(), io.StringIO()
    progress = TrainingProgress(stream=out, in_place=True, clock=clock)
    progress.on_train_begin(None, state(0, 4), None)
    for step in range(1, 5):
        clock.now += 1.0
        progress.on_step_end(None, state(step, 4), None)
        if step == 2:
            progress.on_log(None, state(step, 4), None, logs={"loss": 2.5})
            progress.on_log(None, state(step, 4), None, logs={"eval_loss": 2.25})
    progress.on_train_end(None, state(4, 4), None)
    progress.on_log(None, state(4, 4), None, logs={"eval_loss": 2.0})
    text = out.getvalue()
    assert text.count("\n") == 3  # the eval line, the finished progress line, the final eval
    assert "\r\x1b[Keval  step 2/4 | eval_loss 2.2500\n\rtrain 2/4" in text  # the bar is redrawn below it
    assert text.endswith("\rtrain 4/4 100% | elapsed 0:04 | ETA 0:00 | loss 2.5000\x1b[K\nfinal eval | eval_loss 2.0000\n")


def test_the_qlora_trainer_reports_with_training_progress(make_config):
    from llm_trainer.progress import TrainingProgress
    from llm_trainer.training.qlora import QLoraTrainer

    callbacks = QLoraTrainer(make_config())._callbacks()
    assert sum(isinstance(c, TrainingProgress) for c in callbacks) == 1


def test_progress_bar_on_a_real_terminal(tmp_path):
    """The Trainer under a pseudo-terminal: the line is redrawn in place (carriage returns), the ETA falls to
    0:00, the last line stays, and transformers' dicts of quoted numbers are gone."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, [str(ROOT / "tests" / "helpers" / "toy_progress.py"), "8", "2", "0.4",
                                           str(tmp_path / "out")], cwd=str(ROOT), encoding="utf-8", timeout=240,
                          dimensions=(24, 160))
    child.expect(pexpect.EOF)
    child.close()
    text = child.before
    assert child.exitstatus == 0, text[-2000:]
    drawn = re.findall(r"\rtrain (\d+)/8 +\d+% \| elapsed (\d+):(\d\d) \| ETA (\d+):(\d\d)[^\r\n]*\x1b\[K", text)
    steps = [int(s) for s, *_ in drawn]
    assert steps == sorted(steps) and steps[-1] == 8 and len(set(steps)) >= 4  # redrawn as it goes
    etas = [int(m) * 60 + int(s) for _, _, _, m, s in drawn]
    assert etas[-1] == 0 and max(etas) >= 1
    assert re.search(r"train 8/8 100% \| elapsed [^\r\n]* \| loss \d+\.\d{4}\x1b\[K\r\n", text)  # left on screen
    assert re.search(r"trained 8 steps in \d+:\d\d, mean loss \d+\.\d{4}", text)
    assert "{'loss'" not in text and "'loss':" not in text


# --- per-command help and error messages ------------------------------------------------------------------------

def cli(*args: str, timeout: int = 300):
    import subprocess

    return subprocess.run([sys.executable, "run_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_each_command_has_its_own_options():
    from runner.arguments import build_parsers, parse_args

    _, commands = build_parsers()
    options = {name: set(sub._option_string_actions) for name, sub in commands.items()}
    assert "--prompt" in options["use"] and "--prompt" not in options["process"]
    assert "--temperature" in options["use"] and "--temperature" not in options["serve"]
    assert "--port" in options["serve"] and "--port" not in options["use"]
    assert "--schedule" in options["train"] and "--schedule" not in options["use"]
    assert "--adapter" in options["evaluate"] and "--adapter" not in options["train"]
    assert options["stack"] == {"-h", "--help", "--debug", "--verbose"}
    assert parse_args(["--config", "c.yaml"]).command == "full"  # the default command
    with pytest.raises(SystemExit) as exit_:
        parse_args(["use", "--config", "c.yaml", "--adapter", "a", "--prompt", "x", "--top-p", "0.5"])
    assert exit_.value.code == 2  # --top-p without sampling


def test_an_option_of_another_command_is_an_error_that_names_its_command():
    result = cli("process", "--config", "configs/quickstart.yaml", "--prompt", "hi")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == ("run_pipeline.py process: error: process does not take --prompt hi; "
                                              "it is an option of: use (`run_pipeline.py process --help` lists "
                                              "its options)")
    help_text = cli("use", "--help").stdout
    assert "--temperature" in help_text and "--max-new-tokens" in help_text and "--schedule" not in help_text


@pytest.mark.parametrize(("overrides", "expected"), [
    (["training.learning_rat=1e-4"], "--set training.learning_rat: unknown key; did you mean training.learning_rate?"),
    (["model.learning_rate=1e-4"], "--set model.learning_rate: unknown key; did you mean training.learning_rate?"),
    (["training.max_steps=[1"], "--set training.max_steps: the value '[1' is not valid YAML"),
    (["training.resume=/no/such/checkpoint"], "--set training.resume: '/no/such/checkpoint' is neither auto, never "
                                              "nor a checkpoint folder"),
])
def test_set_errors_name_the_set_and_suggest_the_nearest_key(overrides, expected):
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "quickstart.yaml", overrides)
    assert str(error.value).startswith(expected)


def test_yaml_errors_give_file_line_and_column_and_typos_come_first(tmp_path):
    from llm_trainer.config import load_config
    from llm_trainer.errors import ConfigError

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ndata:\n  source: a.jsonl\n   max_samples: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(broken)
    assert str(error.value) == f"{broken}:4:15: invalid YAML: mapping values are not allowed here"
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\ndata:\n  sorce: a.jsonl\nmodel:\n  base_model: tiny-llama\n")
    with pytest.raises(ConfigError) as error:
        load_config(typo)  # 'source' is then also missing: the typo is what to report
    assert str(error.value) == f"{typo}: data.sorce: unknown key; did you mean data.source? (and 1 more error)"


def test_resume_takes_a_checkpoint_folder(tmp_path, make_config):
    from llm_trainer.training.qlora import QLoraTrainer

    checkpoint = tmp_path / "checkpoint-8"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    cfg = make_config(training={"resume": str(checkpoint)})
    assert QLoraTrainer(cfg)._resume_checkpoint(tmp_path / "elsewhere" / "checkpoints") == str(checkpoint)
    assert QLoraTrainer(make_config(training={"resume": "never"}))._resume_checkpoint(tmp_path) is None


# --- use: streams, Ctrl-C, sampling, --input --------------------------------------------------------------------

FP32 = ["--set", "model.load_in_4bit=false", "--set", "model.dtype=float32"]




def use_cli(adapter, *args: str, timeout: int = 300):
    return cli("use", "--config", "configs/quickstart.yaml", *FP32, "--adapter", str(adapter.path), *args,
               timeout=timeout)


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
                          cwd=str(ROOT), encoding="utf-8", timeout=240)
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


# --- quiet by default -------------------------------------------------------------------------------------------

NOTICES = [  # (logger, message) as the dependencies log them
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community: No module named "
                                      "'kernels'. Please make sure you already `pip install kernels`"),
    ("zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker",
     "Failed to disable MLflow autologging for the following frameworks: ['fastai']."),
    ("zenml.pipelines.pipeline_definition", "You can visualize your pipeline runs in the `ZenML Dashboard`. In order "
                                            "to try it locally, please run `zenml login --local`."),
    ("zenml.orchestrators.step_run_utils", "Models can be viewed in the dashboard using ZenML Pro. Sign up for a free "
                                           "trial at https://www.zenml.io/pro/"),
]


def test_dependency_notices_are_silenced_at_their_source_and_real_warnings_stay(caplog, monkeypatch):
    import logging
    import warnings

    from runner.quiet import _DropMessages, quiet_dependencies

    def emit() -> list[str]:
        caplog.clear()
        for name, message in NOTICES:
            logging.getLogger(name).warning(message)
        logging.getLogger("zenml.pipelines.pipeline_definition").warning("a real ZenML warning stays")
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("`gradient_checkpointing_enable` is deprecated and will be removed in v6. Use "
                          "`activation_checkpointing_enable` instead.", FutureWarning)
        return [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]

    caplog.set_level(logging.INFO)
    for name in ["mlflow", *(n for n, _ in NOTICES)]:  # as before any CLI call in this session quietened them
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "filters", [f for f in logger.filters if not isinstance(f, _DropMessages)])
        monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr("os.environ", dict(__import__("os").environ))
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("always")  # a repeat from the same line shows too
        loud = emit()
        assert len(loud) == len(NOTICES) + 2  # every notice reaches the user without the quiet set-up
        quiet_dependencies()
        assert emit() == ["a real ZenML warning stays"]
    assert all(any(isinstance(f, _DropMessages) for f in logging.getLogger(n).filters) for n, _ in NOTICES)
