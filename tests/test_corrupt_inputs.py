"""Corrupt inputs (issue 31, section 3): a damaged adapter folder, a base model folder that is gone or does not fit
the tokenizer, a binary config or a folder given as one. Each is one line and exit 2 from the CLI, before a model
loads, naming the file and what is wrong with it."""

from __future__ import annotations

import json
import re
import shutil
import struct

import pytest

from helpers.cli import FP32, one_error_line, run_cli

WEIGHTS, CONFIG, INFO = "adapter_model.safetensors", "adapter_config.json", "llm_trainer_adapter.json"


def use(adapter_dir, *extra: str):
    return run_cli("use", "--config", "configs/quickstart.yaml", *FP32, *extra, "--adapter", str(adapter_dir),
                   "--prompt", "What is 12 + 30?", "--max-new-tokens", "4", timeout=300)


@pytest.fixture
def adapter_copy(tiny_adapter, tmp_path):
    """A copy of the session's tiny adapter, to damage."""
    return shutil.copytree(tiny_adapter.path, tmp_path / "adapter")


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate(folder) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("command", ["use", "serve", "evaluate"])
def test_a_truncated_weights_file_is_one_line_from_every_command(adapter_copy, command):
    truncate(adapter_copy)
    extra = {"use": ["--prompt", "hi"], "serve": ["--port", "0"], "evaluate": []}[command]
    result = run_cli(command, "--config", "configs/quickstart.yaml", *FP32, "--adapter", str(adapter_copy), *extra,
                     timeout=300)
    assert one_error_line(result) == (
        f"error: adapter: {adapter_copy / WEIGHTS} is truncated or damaged (Error while deserializing header: "
        "incomplete metadata, file not fully covered); save or copy the adapter again")


def damage_header(folder) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])  # header length past the end


CASES = {
    "empty weights": (lambda f: (f / WEIGHTS).write_bytes(b""),
                      r"adapter: {w} is empty \(0 bytes\): the save or copy was cut short; save or copy the adapter "
                      r"again"),
    "header past the end": (damage_header, r"adapter: {w} is truncated or damaged \(.*\); save or copy the adapter "
                                           r"again"),
    "config not JSON": (lambda f: (f / CONFIG).write_text('{"r": 8,'),
                        r"adapter: {c} is not valid JSON \(Expecting property name enclosed in double quotes at line 1 "
                        r"column 9\); save or copy the adapter again"),
    "config a binary file": (lambda f: (f / CONFIG).write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"),
                             r"{c} is not a JSON file: byte 0x89 at offset 0 is not UTF-8 text \(a binary file\?\)"),
    "config a list": (lambda f: (f / CONFIG).write_text("[]"),
                      r"adapter: {c} holds a JSON list, not an object; save or copy the adapter again"),
    "no base model named": (lambda f: (edit_json(f / CONFIG, lambda c: c.pop("base_model_name_or_path")),
                                       (f / INFO).unlink()),
                            r"adapter: {c} has no base_model_name_or_path \(and no llm_trainer_adapter.json names the "
                            r"base model\), so which base model the adapter belongs to is unknown"),
    "rank does not match": (lambda f: edit_json(f / CONFIG, lambda c: c.update(r=4)),
                            r"adapter: {w} holds rank-8 LoRA weights \(base_model\.model\.model\.layers\.0\.self_attn"
                            r"\.q_proj\.lora_A\.weight: \[8, 64\]\), but {c} says r: 4; the two files come from "
                            r"different adapters"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_adapter_folder_is_one_line_naming_the_file(adapter_copy, case):
    damage, expected = CASES[case]
    damage(adapter_copy)
    line = one_error_line(use(adapter_copy))
    pattern = expected.format(w=re.escape(str(adapter_copy / WEIGHTS)), c=re.escape(str(adapter_copy / CONFIG)))
    assert re.fullmatch(f"error: {pattern}", line), line


def test_rank_pattern_entries_set_each_modules_rank(tiny_adapter, tmp_path):
    """peft's per-module ranks count: a config whose r differs but whose rank_pattern covers every module is fine."""
    from llm_trainer.adapter_folder import check_adapter_folder

    folder = shutil.copytree(tiny_adapter.path, tmp_path / "adapter")
    edit_json(folder / CONFIG, lambda c: c.update(r=4, rank_pattern={"q_proj": 8, "v_proj": 8}))
    assert check_adapter_folder(folder) == tiny_adapter.base_model


def gone_base(folder, tmp_path) -> str:
    missing = str(tmp_path / "cleaned" / "tiny-llama" / "0123456789abcdef")
    (folder / INFO).write_text(json.dumps({"base_model": missing}))
    return missing


def test_a_gone_tiny_base_model_is_replaced_by_the_same_build_here(adapter_copy, tmp_path, tiny_fp32):
    missing = gone_base(adapter_copy, tmp_path)
    result = use(adapter_copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"warning: the adapter's base model folder {missing} is gone; using the same tiny model built here: "
            f"{tiny_fp32.model.name_or_path}") in result.stderr.splitlines()


def test_a_gone_tiny_base_model_not_built_here_names_the_folder_and_the_command(adapter_copy, tmp_path):
    missing = gone_base(adapter_copy, tmp_path)
    line = one_error_line(use(adapter_copy, "--set", "seed=9173"))  # no tiny model of this seed is built here
    assert line == (f"error: model.base_model: the adapter's base model folder {missing} is gone (`make clean`, or "
                    "another machine); rebuild it from the same data, seed and model.tiny settings with `python "
                    "run_pipeline.py process --config configs/quickstart.yaml --set model.load_in_4bit=false --set "
                    "model.dtype=float32 --set seed=9173`, then run this again")


def test_a_base_model_with_a_smaller_vocabulary_than_the_tokenizer(adapter_copy, tmp_path, tiny_fp32):
    import copy

    small = copy.deepcopy(tiny_fp32.model)
    small.resize_token_embeddings(300)  # the byte alphabet and the special tokens: most merges fall outside
    small.save_pretrained(tmp_path / "small-base")
    (adapter_copy / INFO).write_text(json.dumps({"base_model": str(tmp_path / "small-base")}))
    line = one_error_line(use(adapter_copy))
    assert line == (f"error: model.base_model: {tmp_path / 'small-base' / 'config.json'} has vocab_size 300, fewer "
                    f"than the {len(tiny_fp32.tokenizer)} tokens of the tokenizer in {adapter_copy}: the tokenizer is "
                    "not this base model's")


@pytest.mark.parametrize("kind", ["binary", "latin-1", "folder"])
def test_a_binary_config_or_a_folder_given_as_config_is_one_line(tmp_path, kind):
    path = tmp_path / "config.yaml"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\x00\x01\xfe\xff" * 64 if kind == "binary" else "name: caf\xe9\n".encode("latin-1"))
    line = one_error_line(run_cli("use", "--config", str(path), "--adapter", "x", "--prompt", "hi", timeout=120))
    offset = {"binary": "0xfe at offset 2", "latin-1": "0xe9 at offset 9"}.get(kind)
    assert line == (f"error: {path} is a folder, not a config file" if kind == "folder" else
                    f"error: {path} is not a config file: byte {offset} is not UTF-8 text (a binary file?)")
