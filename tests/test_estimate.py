"""lorarepro estimate: the arithmetic on a constructed config, and the embedded default against its measured wall time."""

import json
import math

import pytest

from conftest import ROOT
from lorarepro.experiment import load
from lorarepro.pipeline import estimate as est


@pytest.fixture
def config():
    return load(ROOT / "params.yaml")


def one_table(config, tasks, methods, seeds):
    config["tables"] = [{"id": "t", "tasks": tasks, "methods": methods, "seeds": seeds}]
    config["figures"] = []
    config["claims"]["comparisons"] = []
    return config


def test_arithmetic_on_a_constructed_config(config):
    config = one_table(config, ["nli"], ["lora_r8"], [0, 1])  # nli: 384 examples, batch 32, 6 epochs, max_length 48
    result = est.estimate(config, "h100", root=ROOT)
    run = result["runs"]["nli/lora_r8"]
    assert run["steps"] == 6 * 12
    assert run["tokens_per_example"] == 48 + est.NLU_TARGET_TOKENS
    assert run["tokens"] == 72 * 32 * 52 == 119_808
    # t5-tiny (d_model 64, d_ff 128, 4 heads of 16, 2 + 2 layers): encoder 2·(4·64·64 + 2·64·128), decoder 2·(8·64·64 + 2·64·128)
    n = 2 * (4 * 64 * 64 + 2 * 64 * 128) + 2 * (8 * 64 * 64 + 2 * 64 * 128)
    assert est.parameters(config, "t5-tiny")[0] == n == 163_840
    rate = est.UTILISATION * est.PEAK_TFLOPS["h100"] * 1e12 / (4 * n)
    assert run["kind"] == "flops" and run["tokens_per_s"] == pytest.approx(rate)
    table = result["tables"]["t"]
    assert table["tokens"] == result["total"]["tokens"] == 2 * 119_808
    assert table["hours"] == pytest.approx(2 * 119_808 / rate / 3600)
    assert table["low_hours"] == pytest.approx(table["hours"] / 3) and table["high_hours"] == pytest.approx(table["hours"] * 3)


def test_flat_and_sam_multipliers_come_from_the_benchmark(config):
    config = one_table(config, ["paraphrase"], ["lora_r8", "flat_lora_r8", "sam_w_r8"], [0])
    runs = est.estimate(config, "h100", root=ROOT)["runs"]
    points = json.loads((ROOT / est.FLAT_OVERHEAD).read_text())["points"]
    largest = max((p for p in points if p["method"] == "sam_w"), key=lambda p: p["tokens"])
    assert runs["paraphrase/sam_w_r8"]["multiplier"] == pytest.approx(largest["time_ratio"])
    assert runs["paraphrase/flat_lora_r8"]["multiplier"] >= 1.0
    assert runs["paraphrase/sam_w_r8"]["seconds_per_seed"] == pytest.approx(
        runs["paraphrase/lora_r8"]["seconds_per_seed"] * largest["time_ratio"])


def test_the_measured_llama_rate_is_used_and_scaled(config):
    paper = load(ROOT / "params.yaml", ROOT / "workflow/configs/paper.yaml")
    result = est.estimate(paper, "h200", root=ROOT)
    run = result["runs"]["metamath_gsm8k/lora_r8"]
    assert run["kind"] == "measured" and run["tokens_per_s"] == pytest.approx(2048 / 0.27)
    assert result["runs"]["alpaca_instruct/lora_r8"]["tokens_per_s"] == pytest.approx(2048 / 0.27 * 6.74 / 13.0)
    assert result["total"]["hours"] > 0 and set(result["tables"]) == {t["id"] for t in paper["tables"]}


def test_cpu_estimate_never_reads_the_runs_step_times(config, monkeypatch):
    def refuse(*_):
        raise AssertionError("the CPU estimate read a run's recorded step time")

    monkeypatch.setattr(est, "_recorded_rate", refuse)
    monkeypatch.setattr(est, "load_finished", refuse)
    result = est.estimate(config, "cpu", root=ROOT)
    assert result["cpu"]["wall_seconds"] > 0 and all(r["kind"] == "cpu" for r in result["runs"].values())


@pytest.mark.xfail(strict=True, reason=(
    "honest gap: the FLOP model at the committed CPU benchmark's rate (~100 GFLOP/s per core on 512x1376 matrices) "
    "predicts ~170 s for the default against 612.8 s measured (x3.6): the tiny backbones' 64-wide matrices run far "
    "below that rate, and no committed benchmark measures small shapes (issue 28)"))
def test_default_estimate_within_a_factor_of_2_of_its_measured_wall_time(config):
    measured = json.loads((ROOT / "results/benchmarks/default_run.json").read_text())["pipeline_seconds"]
    predicted = est.estimate(config, "cpu", root=ROOT, cores=2)["cpu"]["wall_seconds"]
    assert abs(math.log(predicted / measured)) <= math.log(2), (predicted, measured)
