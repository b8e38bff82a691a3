"""training.num_processes: 2 data-parallel processes (gloo on CPU) on the tiny model in full precision."""

from __future__ import annotations

import ipaddress
import json
import math

import psutil

import pytest

from test_training import prepared


@pytest.mark.slow
def test_two_processes_train_one_adapter_and_log_once(tmp_path):
    from llm_trainer.training import run_training
    from llm_trainer.training.distributed import free_port

    port = free_port()
    cfg, tokenized, tokenizer = prepared(["model.load_in_4bit=false", "model.dtype=float32",
                                          f"training.distributed.main_process_port={port}",
                                          "training.num_processes=2", "training.max_steps=4",
                                          "training.logging_steps=1", "training.eval_steps=2",
                                          "training.save_steps=2", "training.per_device_train_batch_size=4",
                                          "training.gradient_accumulation_steps=1"])
    logged: list[tuple[int, dict]] = []
    listening: set[str] = set()

    def on_metrics(metrics, step):  # runs in this process while the workers train: look at their sockets
        logged.append((step, metrics))
        for child in psutil.Process().children(recursive=True):
            try:
                listening.update((c.laddr.ip, c.laddr.port) for c in child.net_connections("inet")
                                 if c.status == psutil.CONN_LISTEN)
            except psutil.NoSuchProcess:
                pass

    result = run_training(cfg, tokenized, tokenizer, tmp_path, on_metrics=on_metrics)
    # torch's TCPStore (the rendezvous) listens on every interface whatever address it is given (README); every
    # other socket of the run (gloo's) is on the loopback interface.
    others = {ip for ip, p in listening if p != port}
    assert others and all(ipaddress.ip_address(ip).is_loopback for ip in others), listening
    assert any(p == port for _, p in listening)  # the configured rendezvous port was the one used

    ranks = {path.name: json.loads(path.read_text()) for path in (tmp_path / "launch").glob("rank-*.json")}
    assert sorted(ranks) == ["rank-0.json", "rank-1.json"]
    assert all(r["trained_tokens"] > 0 and r["global_step"] == 4 for r in ranks.values())
    assert result.metrics["world_size"] == 2
    assert result.metrics["trained_tokens"] == sum(r["trained_tokens"] for r in ranks.values())

    adapters = [p.parent for p in tmp_path.rglob("adapter_model.safetensors") if "checkpoint-" not in str(p)]
    assert adapters == [tmp_path / "adapter"] and result.adapter.path == tmp_path / "adapter"
    loss_steps = [step for step, metrics in logged if "loss" in metrics]
    assert loss_steps == [1, 2, 3, 4]  # once per step, not once per rank
    assert all(math.isfinite(m["loss"]) for _, m in logged if "loss" in m)
    assert math.isfinite(result.metrics["eval_loss"])


@pytest.mark.slow
def test_a_failing_worker_stops_the_others_with_one_line(tmp_path):
    """Rank 1 crashes after training (its result file's name is taken by a folder) while rank 0 waits for it
    at the final barrier: accelerate's launcher (torchrun) must stop rank 0, and the run ends in one line."""
    import time

    from llm_trainer.errors import UserError
    from llm_trainer.training import run_training

    cfg, tokenized, tokenizer = prepared(["model.load_in_4bit=false", "model.dtype=float32",
                                          "training.num_processes=2", "training.max_steps=2",
                                          "training.save_steps=2", "training.per_device_train_batch_size=4"])
    (tmp_path / "launch" / "rank-1.json").mkdir(parents=True)
    earlier = set(psutil.Process().children(recursive=True))  # e.g. a scoring pool an earlier test started
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        run_training(cfg, tokenized, tokenizer, tmp_path)
    message = str(error.value)
    assert message.startswith("training in 2 processes failed (launcher exit code 1): IsADirectoryError: ")
    assert "IsADirectoryError" in (tmp_path / "launch" / "workers.log").read_text()
    assert "\n" not in message and time.monotonic() - started < 420
    assert set(psutil.Process().children(recursive=True)) - earlier == set()  # rank 0 was stopped, not left waiting


@pytest.mark.slow
def test_two_processes_of_four_equal_one_process_of_eight(tmp_path):
    """Data parallelism is exact: 2 ranks x batch 4 make the same update as 1 x batch 8 (plain SGD, fp32, no
    dropout: the update is proportional to the gradient), each rank on different rows, both holding the same
    LoRA weights at the end."""
    from safetensors.torch import load_file

    from llm_trainer.training import run_training

    common = ["model.load_in_4bit=false", "model.dtype=float32", "lora.lora_dropout=0.0", "training.max_steps=2",
              "training.optim=sgd", "training.learning_rate=0.5", "training.warmup_steps=0",
              "training.lr_scheduler_type=constant", "training.max_grad_norm=1.0e9", "training.eval_steps=1000",
              "training.save_steps=1000", "training.gradient_accumulation_steps=1",
              "training.gradient_checkpointing=false"]
    single_cfg, tokenized, tokenizer = prepared([*common, "training.per_device_train_batch_size=8"])
    single = run_training(single_cfg, tokenized, tokenizer, tmp_path / "one")
    pair_cfg, _, _ = prepared([*common, "training.per_device_train_batch_size=4", "training.num_processes=2"])
    pair = run_training(pair_cfg, tokenized, tokenizer, tmp_path / "two")

    ranks = [json.loads((tmp_path / "two" / "launch" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["lora_digest"] == ranks[1]["lora_digest"]  # the ranks agree on the weights
    assert ranks[0]["trained_tokens"] != ranks[1]["trained_tokens"]  # and trained on different rows
    assert sum(r["trained_tokens"] for r in ranks) == single.metrics["trained_tokens"]  # the same 16 blocks
    one = load_file(single.adapter.path / "adapter_model.safetensors")
    two = load_file(pair.adapter.path / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        assert one[name].abs().max() > 0
        assert (two[name] - one[name]).abs().max() <= 1e-5 + 1e-4 * one[name].abs().max(), name


@pytest.mark.slow
def test_two_machines_sharing_the_output_folder_train_once_and_only_machine_0_locks_and_logs(tmp_path, monkeypatch):
    """Two launches with num_machines 2 on this one machine (ranks 0 and 1, gloo) and one output folder, as on
    NFS: the run-folder lock would be cluster-wide, so machine 1 must not wait for it while machine 0 waits for
    machine 1 at the rendezvous; metrics are logged and the result written by machine 0 only."""
    import threading

    from llm_trainer.training import run_training
    from llm_trainer.training.distributed import free_port

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    common = ["model.load_in_4bit=false", "model.dtype=float32", "training.num_processes=1",
              "training.distributed.num_machines=2", f"training.distributed.main_process_port={free_port()}",
              "training.distributed.main_process_ip=127.0.0.1", "training.max_steps=2", "training.save_steps=2",
              "training.eval_steps=1000", "training.logging_steps=1", "training.per_device_train_batch_size=4",
              "training.gradient_accumulation_steps=1"]
    machines = {rank: prepared([*common, f"training.distributed.machine_rank={rank}"]) for rank in (0, 1)}
    results, logged, errors = {}, {0: [], 1: []}, []

    def machine(rank):
        cfg, tokenized, tokenizer = machines[rank]
        try:
            results[rank] = run_training(cfg, tokenized, tokenizer, tmp_path,
                                         on_metrics=lambda metrics, step: logged[rank].append(step))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=machine, args=(rank,), daemon=True) for rank in (1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=420)
    assert not any(thread.is_alive() for thread in threads), "a machine is still waiting (for the run folder?)"
    assert errors == []
    assert results[0].primary and not results[1].primary and results[1].metrics == {}
    assert results[0].metrics["world_size"] == 2 and results[0].adapter.path == tmp_path / "adapter"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert logged[1] == [] and {1, 2} <= set(logged[0])  # once, by machine 0
    assert (tmp_path / "launch-machine-1" / "rank-1.json").is_file() and (tmp_path / "launch" / "rank-0.json").is_file()


def accelerate_reads(command, monkeypatch):
    """The launch command as accelerate's own launcher reads and checks it (no accelerate config file taken)."""
    from accelerate.commands import launch

    monkeypatch.setattr(launch, "default_config_file", "/nonexistent/accelerate/default_config.yaml")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args, _, _ = launch._validate_launch_command(launch.launch_command_parser().parse_args(command[3:]))
    return args


def test_the_launch_command_for_two_machines_comes_from_config_or_environment(make_config, tmp_path, monkeypatch):
    """What each machine of a two-node run (e.g. a Kubernetes PyTorchJob, which sets NODE_RANK, MASTER_ADDR and
    MASTER_PORT) runs: accelerate's launcher with the processes of all machines, its rank and machine 0's address."""
    from llm_trainer.training.distributed import launch_command

    spec = make_config(training={"num_processes": 4, "distributed": {"num_machines": 2}}).train_spec()
    args = accelerate_reads(launch_command(spec, tmp_path, env={"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5",
                                                                "MASTER_PORT": "29600"}), monkeypatch)
    assert args.multi_gpu and not args.use_fsdp
    assert (args.num_processes, args.num_machines, args.machine_rank) == (8, 2, 1)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.5", 29600)
    assert args.module and args.training_script == "llm_trainer.training.distributed"
    assert args.training_script_args == [str(tmp_path)]


def test_fsdp_is_a_launch_accelerate_accepts(make_config, tmp_path, monkeypatch):
    """accelerate refuses --multi_gpu with --use_fsdp ("You can only use one of ..."); the config wins over the
    environment."""
    from llm_trainer.training.distributed import launch_command

    configured = make_config(training={"num_processes": 2, "distributed": {
        "num_machines": 2, "machine_rank": 0, "main_process_ip": "node-0", "main_process_port": 29700,
        "fsdp": True}}).train_spec()
    args = accelerate_reads(launch_command(configured, tmp_path, env={"NODE_RANK": "1", "MASTER_ADDR": "elsewhere"}),
                            monkeypatch)
    assert (args.machine_rank, args.main_process_ip, args.main_process_port) == (0, "node-0", 29700)
    assert args.use_fsdp and not args.multi_gpu and args.num_processes == 4
    assert args.fsdp_use_orig_params == "false" and args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_cpu_ram_efficient_loading == "true" and args.fsdp_sync_module_states == "true"


def test_one_machine_meets_on_the_loopback_address_at_a_free_port(make_config, tmp_path, monkeypatch):
    from llm_trainer.training.distributed import launch_command

    args = accelerate_reads(launch_command(make_config(training={"num_processes": 2}).train_spec(), tmp_path, env={}),
                            monkeypatch)
    assert args.main_process_ip == "127.0.0.1" and args.num_machines == 1
    assert 0 < args.main_process_port < 65536


def test_fsdp_stores_the_4bit_weights_in_the_compute_dtype(make_config):
    import torch

    from llm_trainer.modeling import bnb_config

    for compute, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        model = make_config(model={"load_in_4bit": True, "bnb_4bit_compute_dtype": compute}).model
        assert bnb_config(model, fsdp=True).bnb_4bit_quant_storage == dtype
        assert bnb_config(model).bnb_4bit_quant_storage == torch.uint8  # bitsandbytes' default without FSDP


def test_a_machine_rank_beyond_the_machines_is_a_config_error(make_config):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="machine_rank 2 must be below num_machines 2"):
        make_config(training={"distributed": {"num_machines": 2, "machine_rank": 2}})


def test_the_fsdp_prepared_4bit_model_wraps_into_units_of_one_dtype(tiny_fp32):
    """The 4-bit model as the FSDP path prepares it, wrapped by torch's FSDP (one gloo process) with the policy the
    Trainer installs for peft models and use_orig_params false: FSDP flattens each unit into one tensor and refuses
    mixed dtypes ("Must flatten tensors with uniform dtype", as after prepare_model_for_kbit_training)."""
    import os

    import torch
    import torch.distributed as dist
    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from llm_trainer.modeling import load_model
    from llm_trainer.training.distributed import free_port
    from llm_trainer.training.kit import attach_lora, prepare_for_training

    folder = tiny_fp32.model.name_or_path
    cfg = tiny_fp32.cfg.model_copy(update={"model": tiny_fp32.cfg.model.model_copy(update={
        "base_model": folder, "load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16", "allow_cpu": True})})
    model = load_model(folder, cfg.model, device_map={"": "cpu"}, fsdp=True)
    model = attach_lora(prepare_for_training(model, cfg, fsdp=True), cfg, folder, fsdp=True)
    assert any(type(p).__name__ == "Params4bit" for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        wrapped = FSDP(model, auto_wrap_policy=fsdp_auto_wrap_policy(model), use_orig_params=False,
                       device_id=torch.device("cpu"))
        units = [m for m in wrapped.modules() if isinstance(m, FSDP)]
        assert len(units) > 2 * model.config.num_hidden_layers  # the layers and the LoRA matrices, each a unit
        for unit in units:
            assert len({p.dtype for p in unit.params}) <= 1
            assert len({p.requires_grad for p in unit.params}) <= 1
    finally:
        dist.destroy_process_group()


def test_full_on_another_machine_than_0_trains_only(make_config, monkeypatch, capsys):
    """The same `full` command on every node: machine 0 evaluates and registers once, the others train their share."""
    from runner.run import command_for_this_machine

    monkeypatch.delenv("NODE_RANK", raising=False)
    two = {"distributed": {"num_machines": 2, "main_process_ip": "10.0.0.1"}}
    assert command_for_this_machine("full", make_config(training=two)) == "full"  # rank 0 (no NODE_RANK)
    monkeypatch.setenv("NODE_RANK", "1")
    assert command_for_this_machine("full", make_config(training=two)) == "train"
    assert "machine 1 of 2: `full` runs as `train` here" in capsys.readouterr().err
    assert command_for_this_machine("process", make_config(training=two)) == "process"
    assert command_for_this_machine("full", make_config()) == "full"  # one machine: NODE_RANK alone changes nothing
