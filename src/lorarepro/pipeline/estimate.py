"""What a config costs before it runs: GPU-hours (or CPU seconds) per table and in total, the tokens they
rest on, and where each rate comes from, with its uncertainty.

Tokens per run = epochs x (training examples, rounded up to whole batches) x tokens per example, where
tokens per example is an upper bound: the family's max_length (a hub split's max_tokens where it is
smaller; images: the patches plus the class token). Training examples: the task's `sizes.train` (times
train_fraction), a hub split's slice (`train[:100000]`: 100,000, before any `where` filter, so again an
upper bound), or else a stated assumption per known dataset (HUB_TRAIN_EXAMPLES).

Rates, the first that applies (each row of the output names its source):
1. measured on this project: results/benchmarks/flat_overhead_7b.json (Llama-2-7B, CUDA), then
   MEASURED below (a Llama-2-7B LoRA step timed on an H200 with this project's training code), then a
   finished GPU run's resources.seconds_per_step under results/runs/ (GPU kinds only);
   a measured Llama rate carries over to other Llama sizes by parameter count, to other GPUs by their
   dense bf16 peak, and to full fine-tuning by 6/4;
2. otherwise FLOPs: 6·N per token for full fine-tuning, 4·N for LoRA (forward and input gradients, no
   weight gradients), at UTILISATION of the GPU's dense bf16 peak (PEAK_TFLOPS); on `cpu`, at the
   effective FLOP/s of the committed CPU benchmark (results/benchmarks/flat_overhead.json, its LoRA
   step at its largest shape) per core.
Flat and SAM multiply the LoRA time by the committed benchmark's time ratio at its largest shape
(flat_overhead.json: Flat by mode and the nearest gradient accumulation, SAM-W at accumulation 1;
LoRA-SAM is charged SAM-W's ratio: both take two forward/backward passes).

GPU-hours assume data parallelism scales perfectly: a run on 4 GPUs costs its tokens at the per-GPU rate.
`cpu` also adds what a local run spends outside training (backbone pretraining, evaluation, sharpness,
job start-up from results/benchmarks/pipeline_overhead.json) and spreads it over `cores`, to compare
with a measured pipeline wall time; GPU kinds count training only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from lorarepro import paths
from lorarepro.config import column, reported_runs, sharpness_runs, spec_seeds, specs
from lorarepro.experiment import resolve_run
from lorarepro.records import load_finished

BENCHMARKS = paths.RESULTS / "benchmarks"
FLAT_OVERHEAD = BENCHMARKS / "flat_overhead.json"
FLAT_OVERHEAD_7B = BENCHMARKS / "flat_overhead_7b.json"
PIPELINE_OVERHEAD = BENCHMARKS / "pipeline_overhead.json"
GPUS = ("h100", "h200", "a100", "4090", "cpu")
PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "4090": 165.0}  # dense bf16, no sparsity
UTILISATION = 0.40  # assumed share of that peak a training step reaches (model FLOPs utilisation)
UNCERTAINTY = {"measured": 1.5, "flops": 3.0, "cpu": 2.0}  # a factor either way, by the kind of rate
# Measured rates of this project's training code, with their conditions (until the GPU benchmark replaces them).
MEASURED = [
    {"model": "llama-2-7b", "gpu": "h200", "seconds": 0.27, "tokens": 2048, "dtype": "bfloat16", "adapter": "lora r=8",
     "conditions": "one Llama-2-7B LoRA step (r=8 on q,k,v,o,gate,up,down), bf16, 2,048 tokens per step, one H200, "
                   "this project's training loop, before the fused Flat kernels (issue 28)"},
]
# Parameters of hub backbones (counted by their model cards; CLIP: the image tower the vision family trains).
KNOWN_PARAMS = {
    "meta-llama/llama-2-7b-hf": 6.74e9, "meta-llama/llama-2-13b-hf": 13.0e9, "google-t5/t5-base": 0.22e9,
    "t5-base": 0.22e9, "openai/clip-vit-base-patch32": 0.088e9, "roberta-base": 0.125e9,
    "FacebookAI/roberta-base": 0.125e9, "roberta-large": 0.355e9, "FacebookAI/roberta-large": 0.355e9,
}
KNOWN_PARAMS = {k.lower(): v for k, v in KNOWN_PARAMS.items()}
# Training examples of hub data sets without `sizes` (their train splits as published; an assumption).
HUB_TRAIN_EXAMPLES = {
    "mnli": 392_702, "sst2": 67_349, "cola": 8_551, "qnli": 104_743, "mrpc": 3_668, "qqp": 363_846, "rte": 2_490,
    "stsb": 5_749, "cifar10": 50_000, "cifar100": 50_000, "cars": 8_144, "svhn": 73_257, "dtd": 1_880,
    "alpaca": 52_002, "wizardlm": 70_000, "codefeedback": 100_000, "metamath": 100_000,
}
DEFAULT_HUB_EXAMPLES = 100_000  # a hub task none of the above names
IMAGE_TOKENS = {"clip": 50, "vit": None}  # CLIP ViT-B/32 at 224 px: 7x7 patches + the class token
NLU_TARGET_TOKENS = 4  # a text-to-text label's decoder tokens (T5)
SLICE = re.compile(r"\[(-?\d*)%?:(-?\d*)%?\]")


def parameters(config: dict, backbone: str) -> tuple[float, str]:
    """(N, how): parameters of a backbone from its size fields (the architecture's matrices, embeddings
    left out: they cost no matmul per token) or the table of known hub models."""
    spec = config["backbones"][backbone]
    model = str(spec.get("model") or "").lower()
    if model in KNOWN_PARAMS:
        return KNOWN_PARAMS[model], f"{spec['model']}: {KNOWN_PARAMS[model]:.3g} (known hub model)"
    size, arch = spec.get("size") or {}, spec.get("arch")
    if arch == "llama" and size:
        h, f, layers = size["hidden_size"], size["intermediate_size"], size["num_hidden_layers"]
        kv = size.get("num_key_value_heads", size["num_attention_heads"]) / size["num_attention_heads"]
        n = layers * ((2 + 2 * kv) * h * h + 3 * h * f)
    elif arch == "t5" and size:
        d, ff, inner = size["d_model"], size["d_ff"], size["num_heads"] * size["d_kv"]
        n = size["num_layers"] * (4 * d * inner + 2 * d * ff) \
            + size.get("num_decoder_layers", size["num_layers"]) * (8 * d * inner + 2 * d * ff)
    elif arch in ("vit", "clip") and size:
        h, f = size["hidden_size"], size["intermediate_size"]
        n = size["num_hidden_layers"] * (4 * h * h + 2 * h * f)
    else:
        raise ValueError(f"backbone '{backbone}': no size fields and not a known hub model; add it to KNOWN_PARAMS")
    return float(n), f"{backbone}: {n:.3g} from its size fields (non-embedding matrices)"


def _split_examples(split) -> int | None:
    text = split if isinstance(split, str) else (split or {}).get("split") if isinstance(split, dict) else None
    match = SLICE.search(text or "")
    if match and "%" not in (text or "") and match.group(2):
        return int(match.group(2)) - int(match.group(1) or 0)
    return None


def train_examples(config: dict, task: str) -> tuple[int, str]:
    """(examples, how) of a task's training split."""
    spec = config["tasks"][task]
    sizes = spec.get("sizes") or {}
    if sizes.get("train"):
        return int(sizes["train"]), "sizes.train"
    sliced = _split_examples((spec.get("splits") or {}).get("train"))
    if sliced:
        return sliced, "the train split's slice (before filters: an upper bound)"
    for key, count in sorted(HUB_TRAIN_EXAMPLES.items(), key=lambda kv: -len(kv[0])):  # cifar100 before cifar10
        if key in task.lower() or key in str(spec.get("dataset", "")).lower():
            return count, f"assumed: {key}'s published train split, {count:,}"
    return DEFAULT_HUB_EXAMPLES, f"assumed: {DEFAULT_HUB_EXAMPLES:,} (unknown hub data set)"


def tokens_per_example(config: dict, task: str, training: dict) -> tuple[int, str]:
    """(tokens, how): an upper bound on what one training example costs."""
    spec, family = config["tasks"][task], config["tasks"][task]["family"]
    if family == "vision":
        size = config["backbones"][spec["backbone"]].get("size") or {}
        if size.get("image_size") and size.get("patch_size"):
            return (size["image_size"] // size["patch_size"]) ** 2 + 1, "image patches + class token"
        return 50, "assumed: 224 px at patch 32 (CLIP ViT-B/32): 49 patches + class token"
    length = int(training.get("max_length") or 0)
    split = (spec.get("splits") or {}).get("train")
    cap = split.get("max_tokens") if isinstance(split, dict) else None
    cap = cap or spec.get("max_tokens")
    if cap and (not length or cap < length):
        return int(cap), "the train split's max_tokens (upper bound)"
    if family == "nlu":
        return length + NLU_TARGET_TOKENS, f"max_length {length} (upper bound) + {NLU_TARGET_TOKENS} label tokens"
    return length, f"max_length {length} (upper bound)"


def run_tokens(config: dict, task: str, training: dict) -> dict:
    """Tokens and optimizer steps of one training run (one seed)."""
    examples, how = train_examples(config, task)
    examples = max(1, round(examples * training.get("train_fraction", 1.0)))
    batch = training["batch_size"] * training.get("grad_accum", 1)
    per_example, per_how = tokens_per_example(config, task, training)
    steps = training["epochs"] * math.ceil(examples / batch)
    return {"examples": examples, "examples_from": how, "tokens_per_example": per_example,
            "tokens_per_example_from": per_how, "steps": steps, "tokens": steps * batch * per_example}


def _points(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("points") or []


def _ratio(points: list[dict], method: str, accum: int) -> float | None:
    """The benchmark's time ratio of `method` over LoRA at its largest tokens, at the nearest accumulation."""
    rows = [p for p in points if p["method"] == method]
    if not rows:
        return None
    near = min({p["accum"] for p in rows}, key=lambda a: (abs(math.log(a / max(accum, 1))), a))
    rows = [p for p in rows if p["accum"] == near]
    return max(1.0, max(rows, key=lambda p: p["tokens"])["time_ratio"])  # below 1 is the benchmark's noise


def multiplier(spec, points: list[dict]) -> tuple[float, str]:
    """(factor over a LoRA step, source) of a run's step strategy."""
    accum = spec.training.get("grad_accum", 1)
    if spec.strategies.get("sam"):
        ratio = _ratio(points, "sam_w", 1)
        space = spec.strategies["sam"].get("space", "weight")
        return (ratio, f"SAM ({space}): flat_overhead.json sam_w ratio {ratio:.2f}") if ratio else (2.0, "SAM: assumed 2x")
    if spec.strategies.get("flat"):
        mode = spec.strategies["flat"].get("mode", "exact")
        ratio = _ratio(points, f"flat_{mode}", accum)
        return (ratio, f"Flat ({mode}): flat_overhead.json ratio {ratio:.3f}") if ratio else (1.0, "Flat: assumed 1x")
    return 1.0, "LoRA/full: 1x"


def cpu_flops_per_core(root: Path = Path(".")) -> tuple[float, str]:
    """Effective FLOP/s of one core from the committed CPU benchmark: its LoRA step at the largest
    shape, counted as 4·N·tokens (N: the stack's weights)."""
    data = json.loads((root / FLAT_OVERHEAD).read_text(encoding="utf-8"))
    n = sum(i * o for i, o in data["shapes"]["layers_in_out"])
    row = max((p for p in data["points"] if p["method"] == "lora" and p["accum"] == 1), key=lambda p: p["tokens"])
    rate = 4 * n * row["tokens"] / (row["step_ms"] / 1000) / max(1, data.get("threads", 1))
    return rate, (f"{FLAT_OVERHEAD}: LoRA step {row['step_ms']} ms at {row['tokens']} tokens on N={n:,} "
                  f"-> {rate / 1e9:.1f} GFLOP/s per core")


def _recorded_rate(root: Path, task: str, method: str, spec) -> float | None:
    """Tokens/s of a finished GPU run of (task, method) from its seconds_per_step, if any."""
    for path in sorted((root / paths.RESULTS / "runs" / task / method).glob("seed*.json")):
        record = load_finished(path)
        res = (record or {}).get("resources") or {}
        if res.get("seconds_per_step") and str(res.get("device", "cpu")).startswith("cuda"):
            tokens = spec.training["batch_size"] * spec.training.get("grad_accum", 1) * (spec.training.get("max_length") or 1)
            return tokens / res["seconds_per_step"]
    return None


def lora_rate(config: dict, spec, gpu: str, root: Path, cpu_rate: float | None) -> tuple[float, str, str]:
    """(tokens/s of a plain LoRA or full fine-tuning step, source, kind of rate) on one `gpu`."""
    n, n_how = parameters(config, spec.backbone)
    full = spec.adapter is None
    k = 6 if full else 4
    model = str(config["backbones"][spec.backbone].get("model") or "").lower()
    arch = config["backbones"][spec.backbone].get("arch")
    if gpu == "cpu":
        return cpu_rate / (k * n), f"{k}·N FLOPs/token, N {n_how}; CPU rate above", "cpu"
    if arch == "llama" and "llama-2-7b" in model and (root / FLAT_OVERHEAD_7B).is_file():
        lora = [p for p in _points(root / FLAT_OVERHEAD_7B) if p["method"] == "lora"]
        if lora:
            row = max(lora, key=lambda p: p["tokens"])
            rate = row["tokens_per_s"] * PEAK_TFLOPS[gpu] / PEAK_TFLOPS["h200"] * (4 / k)
            return rate, f"measured: {FLAT_OVERHEAD_7B} ({row['tokens']} tokens/step), scaled by peak to {gpu}", "measured"
    if arch == "llama":
        for m in MEASURED:
            n7b = KNOWN_PARAMS["meta-llama/llama-2-7b-hf"]
            rate = m["tokens"] / m["seconds"] * (n7b / n) * PEAK_TFLOPS[gpu] / PEAK_TFLOPS[m["gpu"]] * (4 / k)
            scaled = [s for s, on in ((f"to N={n:.3g}", n != n7b), (f"to {gpu} by peak", gpu != m["gpu"]),
                                      ("x4/6 for full fine-tuning", full)) if on]
            return rate, (f"measured: {m['tokens'] / m['seconds']:,.0f} tokens/s ({m['conditions']})"
                          + (f", scaled {', '.join(scaled)}" if scaled else "")), "measured"
    recorded = _recorded_rate(root, spec.task, spec.method, spec)
    if recorded:
        return recorded, f"measured: a finished GPU run's seconds_per_step (results/runs/{spec.task}/{spec.method})", "measured"
    rate = UTILISATION * PEAK_TFLOPS[gpu] * 1e12 / (k * n)
    return rate, f"FLOPs: {k}·N per token, N {n_how}, at {UTILISATION:.0%} of {gpu}'s {PEAK_TFLOPS[gpu]:g} TFLOP/s bf16", "flops"


def _cpu_extras(config: dict, runs: dict, specs_: dict, cpu_rate: float, root: Path) -> dict:
    """CPU seconds outside training, for the `cpu` estimate of a local pipeline (each a stated model)."""
    out = {}
    pretrain = 0.0
    for name, bb in config["backbones"].items():
        if bb.get("source") != "pretrain" or not any(s.backbone == name for s in specs_.values()):
            continue
        n, _ = parameters(config, name)
        p = bb.get("pretrain") or {}
        size = bb.get("size") or {}
        length = p.get("max_length") or ((size.get("image_size", 0) // max(1, size.get("patch_size", 1))) ** 2 + 1)
        pretrain += 6 * n * p.get("steps", 0) * p.get("batch_size", 0) * length / cpu_rate
    out["backbone pretraining (6·N per token)"] = pretrain
    evaluation = 0.0
    for (task, method), seeds in runs.items():
        spec = specs_[(task, method)]
        n, _ = parameters(config, spec.backbone)
        per, _ = tokens_per_example(config, task, spec.training)
        sizes = config["tasks"][task].get("sizes") or {}
        # validation every epoch, test once: forward only, 2·N per token
        examples = sizes.get("validation", 0) * spec.training["epochs"] + sizes.get("test", 0)
        evaluation += len(seeds) * 2 * n * per * examples / cpu_rate
    out["evaluation (validation each epoch + test, 2·N per token)"] = evaluation
    sharp = config.get("sharpness")
    seconds = 0.0
    if sharp:
        for (task, method), seeds in sharpness_runs(config).items():
            spec = specs_.get((task, method)) or resolve_run(config, task, method)
            n, _ = parameters(config, spec.backbone)
            per, _ = tokens_per_example(config, task, spec.training)
            forwards = 1 + sharp.get("draws", 8) * len(sharp.get("radii") or [1])
            detail = len(set(seeds) & set(sharp.get("detail_seeds") or []))
            seconds += len(seeds) * forwards * 2 * n * per * sharp.get("n_eval", 64) / cpu_rate
            # λ_max: a Hessian-vector product ≈ 2 forward/backward passes (6·N each) per iteration
            seconds += detail * sharp.get("hessian_iters", 12) * 12 * n * per * sharp.get("n_eval", 64) / cpu_rate
    out["sharpness (probe forwards; Hessian-vector products)"] = seconds
    overhead = json.loads((root / PIPELINE_OVERHEAD).read_text(encoding="utf-8")) if (root / PIPELINE_OVERHEAD).is_file() else {}
    startup = overhead.get("job_startup_seconds") or {}
    warm, cold = (startup.get("warm") or {}).get("median", 0.5), (startup.get("cold") or {}).get("median", 5.0)
    jobs = len(runs) + len(config["tasks"]) + len(config["backbones"]) + len(sharpness_runs(config)) + 4
    out[f"job start-up ({jobs} jobs warm, {cold:g} s cold once; {PIPELINE_OVERHEAD})"] = jobs * warm + cold
    return out


def estimate(config: dict, gpu: str = "h100", root: Path = Path("."), cores: int = 2) -> dict:
    """The estimate as a dict: per table (and for runs only figures or claims read), in total."""
    if gpu not in GPUS:
        raise ValueError(f"unknown --gpu {gpu!r}; known: {', '.join(GPUS)}")
    root = Path(root)
    runs = reported_runs(config)
    specs_ = {pair: resolve_run(config, *pair) for pair in runs}
    points = _points(root / FLAT_OVERHEAD)
    cpu_rate, cpu_how = cpu_flops_per_core(root) if gpu == "cpu" else (None, None)
    per_run = {}
    for pair, seeds in runs.items():
        spec = specs_[pair]
        tok = run_tokens(config, pair[0], spec.training)
        rate, source, kind = lora_rate(config, spec, gpu, root, cpu_rate)
        factor, factor_how = multiplier(spec, points)
        seconds = tok["tokens"] / rate * factor
        per_run[pair] = {**tok, "seeds": seeds, "tokens_per_s": rate, "multiplier": factor, "rate_from": source,
                         "multiplier_from": factor_how, "kind": kind, "seconds_per_seed": seconds,
                         "uncertainty": UNCERTAINTY[kind]}

    def group(pairs_seeds) -> dict:
        tokens = seconds = low = high = 0.0
        for pair, seeds in pairs_seeds:
            r = per_run[pair]
            tokens += r["tokens"] * len(seeds)
            s = r["seconds_per_seed"] * len(seeds)
            seconds, low, high = seconds + s, low + s / r["uncertainty"], high + s * r["uncertainty"]
        return {"tokens": int(tokens), "hours": seconds / 3600, "low_hours": low / 3600, "high_hours": high / 3600,
                "runs": sum(len(s) for _, s in pairs_seeds)}

    tables = {}
    for tid, spec in specs(config, "tables").items():
        seeds = spec_seeds(config, spec)
        pairs = sorted({(column(t)[0], m) for t in spec["tasks"] for m in spec["methods"]})
        tables[tid] = group([(p, seeds) for p in pairs])
    total = group(list(runs.items()))
    out = {"gpu": gpu, "unit": "CPU core-hours" if gpu == "cpu" else "GPU-hours", "tables": tables, "total": total,
           "runs": {f"{t}/{m}": v for (t, m), v in per_run.items()},
           "assumptions": {"utilisation": UTILISATION, "peak_tflops": PEAK_TFLOPS, "uncertainty": UNCERTAINTY,
                           "measured": MEASURED, "tables_overlap": "a run two tables read counts in both; the "
                           "total counts each run once"}}
    if gpu == "cpu":
        extras = _cpu_extras(config, runs, specs_, cpu_rate, root)
        core_seconds = total["hours"] * 3600 + sum(extras.values())
        out["cpu"] = {"rate": cpu_how, "cores": cores, "extras_seconds": extras,
                      "training_seconds": total["hours"] * 3600, "core_seconds": core_seconds,
                      "wall_seconds": core_seconds / cores,
                      "wall_range_seconds": [core_seconds / cores / UNCERTAINTY["cpu"],
                                             core_seconds / cores * UNCERTAINTY["cpu"]]}
    return out


def render(result: dict, runs: bool = False) -> str:
    """The estimate as a readable table."""
    unit = result["unit"]
    lines = [f"Cost estimate on {result['gpu']} ({unit}; range: the rates' uncertainty factors)", "",
             f"{'table':<22} {'runs':>5} {'tokens':>12} {unit:>14} {'range':>22}"]
    rows = [*result["tables"].items(), ("TOTAL (each run once)", result["total"])]
    for name, t in rows:
        lines.append(f"{name:<22} {t['runs']:>5} {t['tokens']:>12.3e} {t['hours']:>14.4g} "
                     f"{t['low_hours']:>10.3g} - {t['high_hours']:<10.3g}")
    sources = sorted({r["rate_from"] for r in result["runs"].values()} | {r["multiplier_from"] for r in result["runs"].values()})
    lines += ["", "rates and multipliers used (--runs: per (task, method)):", *(f"  {s}" for s in sources)]
    if runs:
        lines += ["", "per (task, method), one seed:"]
    for name, r in result["runs"].items() if runs else ():
        lines.append(f"  {name}: {r['steps']:,} steps, {r['tokens']:.3e} tokens ({r['examples']:,} examples: "
                     f"{r['examples_from']}; {r['tokens_per_example']} tokens each: {r['tokens_per_example_from']}), "
                     f"{r['tokens_per_s']:,.0f} tokens/s [{r['rate_from']}] x{r['multiplier']:.3g} "
                     f"[{r['multiplier_from']}], x/÷{r['uncertainty']:g}")
    if "cpu" in result:
        c = result["cpu"]
        lines += ["", f"CPU rate: {c['rate']}", f"training: {c['training_seconds']:.0f} core-s"]
        lines += [f"{k}: {v:.0f} core-s" for k, v in c["extras_seconds"].items()]
        lines.append(f"pipeline wall time on {c['cores']} cores: {c['wall_seconds']:.0f} s "
                     f"({c['wall_range_seconds'][0]:.0f}-{c['wall_range_seconds'][1]:.0f} s)")
    a = result["assumptions"]
    lines += ["", f"assumed: {a['utilisation']:.0%} of dense bf16 peak where a FLOP model is used; "
              f"uncertainty x/÷ {a['uncertainty']}; {a['tables_overlap']}."]
    return "\n".join(lines)
