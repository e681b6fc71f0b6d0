"""trainer/sft.py's pieces that need no training run: tokenisation equals serving's, packing
keeps examples apart, the config rejects what it cannot run, and the run directory's resume
bookkeeping (incomplete checkpoints, metrics after the resumed step)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from remed_stack.paths import REPO_ROOT
from trainer import config, packing, sft

pytestmark = pytest.mark.unit

MODEL_PY = REPO_ROOT / "model_repo" / "remed_planner" / "1" / "model.py"
PROMPT = (
    "Incident: nginx on web is down.\n```\nsupervisorctl status nginx\nnginx EXITED\n```\n"
    "Write the playbook."
)


@pytest.fixture(scope="module")
def served_model() -> Any:
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils_stand_in"))
    spec = importlib.util.spec_from_file_location("remed_planner_model_for_sft", MODEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_training_prompt_tokens_are_the_served_prompt_tokens(served_model: Any, hf: Any) -> None:
    tokenizer, _ = hf
    server = served_model.TritonPythonModel.__new__(served_model.TritonPythonModel)
    server.tokenizer = tokenizer
    request = served_model.parse_request(PROMPT, {}, {})
    served_ids = server._encode(request)
    completion = "```yaml\n- hosts: web\n  tasks: []\n```"
    ids, labels = sft.encode(tokenizer, PROMPT, completion)
    assert sft.chat_messages(PROMPT) == served_model.chat_messages(PROMPT)
    assert ids[: len(served_ids)] == served_ids
    assert labels[: len(served_ids)] == [-100] * len(served_ids)
    target = ids[len(served_ids) :]
    assert labels[len(served_ids) :] == target
    assert target[-1] == tokenizer.convert_tokens_to_ids(sft.END_OF_TURN)
    assert tokenizer.decode(target, skip_special_tokens=True) == completion


@pytest.mark.parametrize("attention", ["sdpa", packing.ATTENTION])
def test_packed_examples_do_not_attend_across_each_other(hf: Any, attention: str) -> None:
    """The padding-free sequence trl's collator builds (position_ids restarting per example,
    boundaries in cu_seq_lens) gives each example the logits it has alone."""
    from transformers import AutoModelForCausalLM

    tokenizer, model = hf
    packing.register()
    packed_model = AutoModelForCausalLM.from_pretrained(
        model.name_or_path, dtype=torch.float32, attn_implementation=attention
    ).eval()
    texts = ["restart nginx on web", "the cart service leaks connections to redis on db", "df -h"]
    seqs = [torch.tensor(tokenizer(t)["input_ids"]) for t in texts]
    lengths = torch.tensor([len(s) for s in seqs])
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(torch.int32)
    with torch.no_grad():
        alone = [packed_model(input_ids=s[None]).logits[0] for s in seqs]
        packed = packed_model(
            input_ids=torch.cat(seqs)[None],
            position_ids=torch.cat([torch.arange(len(s)) for s in seqs])[None],
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=int(lengths.max()),
            max_length_k=int(lengths.max()),
            use_cache=False,  # as in training (trl sets it): with a cache, sdpa sees no packing
        ).logits[0]
    for i, want in enumerate(alone):
        got = packed[int(cu[i]) : int(cu[i + 1])]
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    # A mask that did leak would change the second example's logits visibly.
    with torch.no_grad():
        leaky = packed_model(input_ids=torch.cat(seqs)[None], use_cache=False).logits[0]
    second = leaky[int(cu[1]) : int(cu[2])]
    assert (second - alone[1]).abs().max() > 1e-2


def test_cpu_bf16_detection_reads_the_flags() -> None:
    assert sft.cpu_has_bf16("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert sft.cpu_has_bf16("flags : fpu amx_bf16 amx_tile\n")
    assert not sft.cpu_has_bf16("flags : fpu avx2 avx512f\n")


def test_shipped_configs_load() -> None:
    shipped = config.load(REPO_ROOT / "trainer" / "configs" / "sft.toml")
    assert shipped.method == "lora" and shipped.adapter_dtype == "fp16"
    tiny = config.load(REPO_ROOT / "trainer" / "configs" / "sft-tiny.toml")
    assert tiny.max_steps > 0 and tiny.save_steps < tiny.max_steps
    assert config.load(REPO_ROOT / "trainer" / "configs" / "sft.toml", name="x").name == "x"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[sft]\nlora_rank = 8\n", "did you mean 'lora_r'"),
        ("[sft]\nmethod = 'qlora'\n", "method must be one of lora, full"),
        ("[sft]\nmethod = 'full'\nlearning_rate = 2e-4\n", "full fine-tuning"),
        ("[sft]\nlora_r = '16'\n", "lora_r must be int"),
        ("[sft]\nepochs = 0\nmax_steps = -1\n", "max_steps > 0"),
        ("[sft]\nprecision = 'fp16'\n", "precision must be one of"),
        ("name = 'x'\n", "put the keys under [sft]"),
        ("[sft\n", "not valid TOML"),
    ],
)
def test_bad_configs_say_what_to_do(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        config.load(path)


def test_config_round_trips_through_its_toml(tmp_path: Path) -> None:
    cfg = config.SFTConfig(name="rt", lora_target=["q_proj", "v_proj"], learning_rate=1e-3)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert config.load(path) == cfg


def test_resume_skips_a_checkpoint_cut_short(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    for step, complete in ((2, True), (4, True), (6, False)):
        d = ckpts / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "optimizer.pt").write_bytes(b"x")
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (ckpts / "checkpoint-8").mkdir()
    (ckpts / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # cut mid-write
    found = sft.last_checkpoint(ckpts)
    assert found == ckpts / "checkpoint-4"
    assert sft.checkpoint_step(found) == 4
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_a_run_directory_refuses_another_config_or_changed_data(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"files": {}}')
    cfg = config.SFTConfig(name="r", runs_dir=str(tmp_path / "runs"))
    run = sft.prepare_run(cfg, manifest)
    assert run.config.read_text() == cfg.to_toml()
    assert sft.prepare_run(cfg, manifest) == run  # the same run again: resumes
    with pytest.raises(sft.SFTError, match="another config"):
        sft.prepare_run(config.SFTConfig(name="r", runs_dir=cfg.runs_dir, lora_r=8), manifest)
    manifest.write_text('{"files": {"train": {}}}')
    with pytest.raises(sft.SFTError, match="dataset changed"):
        sft.prepare_run(cfg, manifest)


def test_dataset_hashes_are_checked(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import sft_fixture

    data = sft_fixture.write_dataset(tmp_path)
    assert sft.check_dataset(data)["files"]["train"]["examples"] == 4
    with (data / "train.jsonl").open("a") as fh:
        fh.write(json.dumps(sft_fixture.example(9, "redis", "db", 6379)) + "\n")
    with pytest.raises(sft.SFTError, match="does not match its manifest"):
        sft.check_dataset(data)


def test_a_version_pins_its_weight_format_in_serving_json(
    served_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class ModelError(Exception):
        pass

    monkeypatch.setattr(served_model.pb_utils, "TritonModelException", ModelError, raising=False)
    assert served_model.read_serving(tmp_path) == {}
    (tmp_path / "serving.json").write_text('{"weights": "q8"}')
    assert served_model.read_serving(tmp_path) == {"weights": "q8"}
    for bad in ('{"weights": "q3"}', '{"weight": "q8"}', "[1]", "{"):
        (tmp_path / "serving.json").write_text(bad)
        with pytest.raises(ModelError, match=r"serving\.json"):
            served_model.read_serving(tmp_path)
