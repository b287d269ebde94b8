"""Portable numerics: the pinning overrides a hostile environment, the fingerprint says what ran, and
a reduced pipeline gives byte-identical data, backbones, checkpoints, records, tables and figures
whatever the environment says — while native numerics, under the same two environments, do not."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import reduced
from lorarepro.core import numerics
from lorarepro.audit import reference
from workspace import copy_repo, user_env


def _best_capability() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512" if " avx512f" in flags else "avx2" if " avx2" in flags else "default"


# What another machine (or a careless user) brings: other ATen kernels than this CPU's best, MKL's
# automatic CNR dispatch, oneDNN unrestricted, more threads, NumPy's full dispatch.
HOSTILE = {"ATEN_CPU_CAPABILITY": "avx2" if _best_capability() == "avx512" else "default", "MKL_CBWR": "AUTO",
           "ONEDNN_MAX_CPU_ISA": "ALL", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "NPY_DISABLE_CPU_FEATURES": ""}


def test_pin_overrides_a_hostile_environment(monkeypatch):
    for key, value in HOSTILE.items():
        monkeypatch.setenv(key, value)
    numerics.pin("portable", 1)
    assert {k: os.environ[k] for k in numerics.PORTABLE_ENV} == numerics.PORTABLE_ENV
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ[numerics.MODE_ENV] == "portable"


def test_native_leaves_the_libraries_settings_alone(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    monkeypatch.setattr(sys, "modules", {k: v for k, v in sys.modules.items() if k != "torch"})
    numerics.pin("native", 3)
    assert os.environ["MKL_CBWR"] == "AUTO" and os.environ["MKL_NUM_THREADS"] == "3"
    numerics.pin("portable", 1)  # the suite's own state back (monkeypatch restores the rest)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="numerics: 'fast'"):
        numerics.pin("fast", 1)


def test_portable_refuses_a_process_whose_torch_runs_other_kernels(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with pytest.raises(numerics.NumericsError, match="imported before lorarepro.core.numerics.pin"):
        numerics.apply("portable", 1)


def test_fingerprint_records_what_runs_and_differences_name_the_setting():
    numerics.apply("portable", 1)
    fp = numerics.fingerprint()
    assert fp["mode"] == "portable" and fp["aten_cpu_capability"] == "AVX2" and fp["mkl_cbwr"] == "COMPATIBLE"
    assert fp["onednn"] == "off" and fp["threads"] == 1 and fp["torch"] == torch.__version__ and fp["mkl"]
    assert numerics.differences(fp, fp) == []
    assert numerics.differences(fp, {**fp, "aten_cpu_capability": "AVX512"}) == ["aten_cpu_capability: AVX2 → AVX512"]
    assert numerics.cpu_model()


# ----------------------------------------------------------------------------- the pipeline, twice


def _config(params: dict, mode: str) -> dict:
    """The reduced pipeline at one seed, LoRA and Flat-LoRA, one task per backbone (T5, ViT, Llama)."""
    cfg = reduced(params)
    cfg.update(seeds=[0], numerics=mode)
    cfg["methods"] = {k: v for k, v in cfg["methods"].items() if k in ("lora_r8", "flat_lora_r8")}
    cfg["tables"][0]["methods"] = list(cfg["methods"])
    cfg["claims"]["comparisons"] = cfg["claims"]["comparisons"][:1]
    return cfg


def _run(root: Path, cfg: dict, extra_env: dict) -> dict[str, str]:
    copy_repo(root)
    (root / "small.yaml").write_text(yaml.safe_dump(cfg))
    env = {**user_env(src=True), **extra_env}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "small.yaml"],
                          cwd=root, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return _contents(root)


def _contents(root: Path) -> dict[str, str]:
    """Every produced file that must repeat: data, backbone weights, checkpoints, and results/ as the
    committed reference compares it (records without volatile keys; timing files exempt)."""
    out = reference.result_hashes(root)
    for folder in ("data/prepared", "models", "checkpoints"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.name not in ("lorarepro_backbone.json", ".snakemake_timestamp"):
                out[path.relative_to(root).as_posix()] = reference.canonical_sha256(path)
    return out


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return sorted(k for k in a if a[k] != b[k])


@pytest.mark.slow
def test_portable_runs_are_byte_identical_under_a_hostile_environment(tmp_path, params):
    cfg = _config(params, "portable")
    plain = _run(tmp_path / "plain", cfg, {})
    hostile = _run(tmp_path / "hostile", cfg, HOSTILE)
    assert any(k.startswith("models/") for k in plain) and any(k.startswith("results/figures/") for k in plain)
    assert _differing(plain, hostile) == []
    record = json.loads((tmp_path / "hostile/results/runs/sentiment/lora_r8/seed0.json").read_text())
    assert record["lineage"]["numerics"]["aten_cpu_capability"] == "AVX2"


@pytest.mark.slow
def test_native_runs_differ_under_the_same_two_environments(tmp_path, params):
    """The control: without the pinning, the hostile environment changes the numbers on this CPU."""
    if _best_capability() == "default":
        pytest.skip("this CPU offers one ATen capability level only: native runs cannot differ by it here")
    cfg = _config(params, "native")
    plain = _run(tmp_path / "plain", cfg, {})
    hostile = _run(tmp_path / "hostile", cfg, HOSTILE)
    differ = _differing(plain, hostile)
    assert any(k.startswith("models/") for k in differ), differ
    assert any(k.startswith("results/runs/") for k in differ)
