"""benchmarks/flat_overhead.py on a tiny shape: the JSON schema and the figure, not the timings."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "16", "--ffn", "24", "--layers", "2", "--rank", "2", "--steps", "2", "--warmup", "0"]


@pytest.fixture(scope="module")
def bench():
    import torch

    threads = torch.get_num_threads()  # the script sets its own thread count; give the session back its own
    yield _load()
    torch.set_num_threads(threads)


def _load():
    spec = importlib.util.spec_from_file_location("flat_overhead", ROOT / "benchmarks" / "flat_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_writes_json_with_ratio_per_point_and_figure(bench, tmp_path):
    result = bench.main([*TINY, "--tokens", "8", "2048", "--accum", "1", "16", "--no-memory", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "flat_overhead.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert {"device", "dtype", "shapes", "timing", "points", "targets", "memory"} <= set(saved)
    assert saved["dtype"] == "float32" and saved["device"].startswith("cpu")
    assert saved["shapes"]["layers_in_out"] == [[16, 24], [24, 16]] and saved["shapes"]["rank"] == 2
    assert saved["timing"]["clock"] == "process_cpu"
    grid = {(p["tokens"], p["accum"], p["method"]) for p in saved["points"]}
    flat = {(t, a, m) for t in (8, 2048) for a in (1, 16) for m in ("lora", "flat_exact", "flat_inplace")}
    assert grid == flat | {(8, 1, "sam_w"), (2048, 1, "sam_w")}  # SAM-W at accumulation 1 by default
    for p in saved["points"]:
        assert p["steps"] == 2 and p["step_ms"] > 0 and p["time_ratio"] > 0 and p["wall_ratio"] > 0
        if p["method"] == "lora":
            assert p["time_ratio"] == 1.0 and p["wall_ratio"] == 1.0
    assert [(t["method"], t["accum"]) for t in saved["targets"]] == [("flat_exact", 1), ("flat_inplace", 16)]
    assert all(isinstance(t["met"], bool) and t["tokens"] == 2048 for t in saved["targets"])
    assert (tmp_path / "flat_overhead.png").stat().st_size > 1000


def test_methods_really_perturb_the_stack(bench):
    """The timed hooks are the real Flat-LoRA / SAM-W: the perturbed loss differs, W comes back."""
    import torch

    args = bench.parse_args([*TINY, "--tokens", "8", "--accum", "1"])
    runner = bench.Runner(args, bench.METHODS)
    weights = [p.detach().clone() for n, p in runner.model.named_parameters() if "base_layer" in n]
    x = {"x": runner._input(8)}
    plain = runner.model(**x).loss.item()
    flat = runner.hooks["flat_exact"]
    flat.begin_step(0)
    assert flat.flat.sigma(0).abs().sum() > 0  # full noise (f(t) = 1), not the schedule's zero at step 0
    assert runner.model(**x).loss.item() != plain
    flat.end_step()
    for method in bench.METHODS:
        runner.step(method, 8, 2)
    after = [p.detach() for n, p in runner.model.named_parameters() if "base_layer" in n]
    assert all(torch.allclose(a, w, atol=1e-6) for a, w in zip(after, weights))  # in-place drift only


@pytest.mark.slow  # two fresh interpreters importing torch + peft
def test_memory_probe_reports_extra_over_lora(bench):
    args = bench.parse_args([*TINY, "--memory-tokens", "8"])
    memory = bench.peak_memory(args, ("lora", "sam_w"))
    assert memory["methods"]["lora"]["extra_mb"] == 0.0
    assert set(memory["methods"]["sam_w"]) == {"step_peak_mb", "extra_mb", "extra_vs_largest_weight", "repeats_mb"}
    assert "VmHWM" in memory["how"] and memory["tokens"] == 8


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--tokens", "0"])
    with pytest.raises(ValueError, match="unknown method"):
        bench.make_hook(None, "dora")


def test_llama_code_path_runs_on_a_tiny_llama_and_the_7b_refuses_the_cpu(bench, tmp_path):
    """`--model tiny` runs the 7B benchmark's code (a Llama built from its config, LoRA on every
    projection, the real training loop) on CPU; the 7B itself is CUDA-only, so no CPU number can be
    written under its file name."""
    result = bench.main(["--model", "tiny", "--quick", "--no-memory", "--out", str(tmp_path)])
    methods = {p["method"] for p in result["points"]}
    assert {"lora", "flat_exact", "flat_inplace", "sam_w"} <= methods
    assert all(p["tokens_per_s"] > 0 for p in result["points"])
    assert not (tmp_path / "flat_overhead_7b.json").exists()
    with pytest.raises(SystemExit):
        bench.main(["--model", "llama-2-7b", "--device", "cpu", "--out", str(tmp_path)])
