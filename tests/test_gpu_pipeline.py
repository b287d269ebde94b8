"""benchmarks/gpu_pipeline.py on this CPU, up to the device check: the GPU run itself needs a GPU
machine; here the same two from-scratch runs with the gpu-local profile must be
bit-identical, and no GPU JSON may be written from a CPU run."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_pipeline", ROOT / "benchmarks" / "gpu_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_refuses_unless_told_to_run_on_the_cpu(tmp_path):
    bench = _load()
    if bench.device()["type"] == "cuda":
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit, match="no GPU visible"):
        bench.main(["run", "--reduced", "--out", str(tmp_path / "gpu.json")])
    assert not (tmp_path / "gpu.json").exists()


def test_wheelhouse_leaves_out_torch_and_what_the_gpu_machine_has(tmp_path):
    bench = _load()
    have = tmp_path / "freeze.txt"
    have.write_text("snakemake==0.0.1\nmlflow-skinny==3.0\n")  # snakemake at another version: still needed
    pins = bench.pins(ROOT / "constraints.txt", have)
    names = {bench._name(p) for p in pins}
    assert "torch" not in names and "snakemake" in names and "lm-eval" in names
    assert all("==" in p for p in pins)


@pytest.mark.slow
def test_cpu_run_of_the_gpu_profile_is_bit_identical_and_writes_no_json(tmp_path):
    bench = _load()
    if bench.device()["type"] == "cuda":
        pytest.skip("a GPU is visible: the real benchmark applies")
    out = tmp_path / "gpu.json"
    result = bench.main(["run", "--allow-cpu", "--reduced", "--cores", "2", "--out", str(out)])
    assert result["device"]["type"] == "cpu" and result["job_devices"] == ["cpu"] and result["warm_start"]
    assert result["determinism"]["bit_identical"] and result["determinism"]["runs_compared"] > 0
    assert result["jobs"] > 0 and not out.exists()
