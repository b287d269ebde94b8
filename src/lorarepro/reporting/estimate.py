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
   weight gradients), at UTILISATION of the GPU's dense bf16 peak (PEAK_TFLOPS); on `cpu`, at an
   effective FLOP/s per core measured at the nearest scale: results/benchmarks/numerics_cost.json
   (benchmarks/numerics_cost.py: `steps` pretraining steps of the tiny backbones params.yaml defines,
   one thread, under the config's numerics; its seconds run from the pretrain() call to its return, so
   they hold the family module's import and the model build, the loop with its per-step costs, and the
   save, but not the process start or torch's import; counted as 6·N per token at the benchmark's batch
   and max_length, the fixed part charged to the steps), or the committed
   big-matrix benchmark (results/benchmarks/flat_overhead.json, its LoRA step at its largest shape,
   4·N per token on 512x1376 matrices): whichever measured N is nearest the backbone's (log scale;
   its own architecture's on a tie). The 64-wide backbones run 2-6x below the big-matrix rate.
Flat and SAM multiply the LoRA time by the committed benchmark's time ratio (flat_overhead.json: Flat
by mode and the nearest gradient accumulation, SAM-W at accumulation 1; LoRA-SAM is charged SAM-W's
ratio: both take two forward/backward passes): on GPUs at its largest shape; on `cpu`, the benchmark's
own kind of device, at the tokens per micro-batch nearest the run's (Flat's noise costs per weight per
step, so its share falls as the tokens per step grow).

GPU-hours assume data parallelism scales perfectly: a run on 4 GPUs costs its tokens at the per-GPU rate.
`cpu` also adds what a local run spends outside training (backbone pretraining; evaluation of every
split a run scores, the vision tasks' corrupted copies and generation's decoded tokens included;
sharpness with its λ_max and landscape passes; job start-up from results/benchmarks/pipeline_overhead.json)
and spreads it over `cores`, to compare with a measured pipeline wall time; GPU kinds count training
only. Not modelled: a run's own set-up and save beyond the first of its job (no benchmark separates
them), step checkpoints, report and audit jobs beyond their start-up.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from lorarepro.core import paths
from lorarepro.core.config import column, reported_runs, sharpness_runs, spec_seeds, specs
from lorarepro.domain.experiment import resolve_run
from lorarepro.domain.records import load_finished

BENCHMARKS = paths.BENCHMARKS
FLAT_OVERHEAD = BENCHMARKS / "flat_overhead.json"
FLAT_OVERHEAD_7B = BENCHMARKS / "flat_overhead_7b.json"
PIPELINE_OVERHEAD = BENCHMARKS / "pipeline_overhead.json"
NUMERICS_COST = BENCHMARKS / "numerics_cost.json"  # the tiny backbones' pretraining, timed per numerics setting
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
    batch = training["batch_size"]  # examples per optimizer step, split over grad_accum micro-batches (step_plan)
    per_example, per_how = tokens_per_example(config, task, training)
    steps = training["epochs"] * math.ceil(examples / batch)
    return {"examples": examples, "examples_from": how, "tokens_per_example": per_example,
            "tokens_per_example_from": per_how, "steps": steps, "tokens": steps * batch * per_example}


def _points(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("points") or []


def _ratio(points: list[dict], method: str, accum: int, tokens: int | None = None) -> tuple[float, int] | tuple[None, None]:
    """(time ratio of `method` over LoRA, at which tokens per micro-batch) in the benchmark, at the
    nearest accumulation and at its largest tokens, or (`tokens` given) the tokens nearest those."""
    rows = [p for p in points if p["method"] == method]
    if not rows:
        return None, None
    near = min({p["accum"] for p in rows}, key=lambda a: (abs(math.log(a / max(accum, 1))), a))
    rows = [p for p in rows if p["accum"] == near]
    row = max(rows, key=lambda p: p["tokens"]) if tokens is None else \
        min(rows, key=lambda p: (abs(math.log(p["tokens"] / max(tokens, 1))), -p["tokens"]))
    return max(1.0, row["time_ratio"]), row["tokens"]  # below 1 is the benchmark's noise


def multiplier(spec, points: list[dict], tokens: int | None = None) -> tuple[float, str]:
    """(factor over a LoRA step, source) of a run's step strategy; `tokens` (a run's tokens per
    micro-batch; `cpu` only): the benchmark's ratio nearest them, else at its largest shape."""
    accum = spec.training.get("grad_accum", 1)
    if spec.strategies.get("sam"):
        ratio, at = _ratio(points, "sam_w", 1, tokens)
        space = spec.strategies["sam"].get("space", "weight")
        return (ratio, f"SAM ({space}): flat_overhead.json sam_w ratio {ratio:.2f} at {at} tokens") if ratio \
            else (2.0, "SAM: assumed 2x")
    if spec.strategies.get("flat"):
        mode = spec.strategies["flat"].get("mode", "exact")
        ratio, at = _ratio(points, f"flat_{mode}", accum, tokens)
        return (ratio, f"Flat ({mode}): flat_overhead.json ratio {ratio:.3f} at {at} tokens") if ratio \
            else (1.0, "Flat: assumed 1x")
    return 1.0, "LoRA/full: 1x"


def cpu_flops_per_core(root: Path = Path(".")) -> tuple[float, str]:
    """Effective FLOP/s of one core from the committed big-matrix CPU benchmark: its LoRA step at the
    largest shape, counted as 4·N·tokens (N: the stack's weights, 512x1376 matrices)."""
    data = json.loads((root / FLAT_OVERHEAD).read_text(encoding="utf-8"))
    n = sum(i * o for i, o in data["shapes"]["layers_in_out"])
    row = max((p for p in data["points"] if p["method"] == "lora" and p["accum"] == 1), key=lambda p: p["tokens"])
    rate = 4 * n * row["tokens"] / (row["step_ms"] / 1000) / max(1, data.get("threads", 1))
    return rate, (f"{FLAT_OVERHEAD}: LoRA step {row['step_ms']} ms at {row['tokens']} tokens on N={n:,} "
                  f"-> {rate / 1e9:.1f} GFLOP/s per core")


def _pretrain_tokens(spec: dict) -> int:
    """Tokens per pretraining example of a backbone entry, an upper bound as for fine-tuning: the
    pretext's max_length, or the image's patches plus the class token."""
    p, size = spec.get("pretrain") or {}, spec.get("size") or {}
    return p.get("max_length") or (size.get("image_size", 0) // max(1, size.get("patch_size", 1))) ** 2 + 1


def measured_cpu_rates(root: Path = Path("."), numerics: str = "portable") -> list[dict]:
    """Effective FLOP/s of one core at every scale a committed CPU benchmark measured, each with its N
    and architecture: the tiny backbones of results/benchmarks/numerics_cost.json under the setting of
    `numerics` (their `steps` pretraining steps, full fine-tuning: 6·N per token at the batch size and
    max_length params.yaml gives them, the file numerics_cost.py reads; its median seconds run from
    pretrain()'s call to its return, so the family module's import, the model build, per-step batch
    building, optimizer and scheduler, and the save are in the rate, the process start and torch's
    import are not), then the big-matrix LoRA step of results/benchmarks/flat_overhead.json."""
    rates = []
    cost, defined = root / NUMERICS_COST, root / paths.PARAMS
    if cost.is_file() and defined.is_file():
        data = json.loads(cost.read_text(encoding="utf-8"))
        backbones = (yaml.safe_load(defined.read_text(encoding="utf-8")) or {}).get("backbones") or {}
        setting = "native" if numerics == "native" else "portable"
        for name, settings in sorted((data.get("results") or {}).items()):
            spec, entry = backbones.get(name), settings.get(setting)
            if not spec or not entry or not (spec.get("pretrain") or {}).get("batch_size"):
                continue
            n, _ = parameters({"backbones": {name: spec}}, name)
            batch, length = spec["pretrain"]["batch_size"], _pretrain_tokens(spec)
            rate = 6 * n * data["steps"] * batch * length / entry["median_seconds"]
            rates.append({"name": name, "arch": spec.get("arch"), "n": n, "rate": rate, "how": (
                f"{NUMERICS_COST} ({setting}): {data['steps']} pretraining steps of {name} (N={n:.3g}, "
                f"{batch}x{length} tokens a step, 6·N per token) in {entry['median_seconds']} s "
                f"-> {rate / 1e9:.1f} GFLOP/s per core")})
    if (root / FLAT_OVERHEAD).is_file():
        rate, how = cpu_flops_per_core(root)
        data = json.loads((root / FLAT_OVERHEAD).read_text(encoding="utf-8"))
        rates.append({"name": "big matrices", "arch": None, "rate": rate, "how": how,
                      "n": float(sum(i * o for i, o in data["shapes"]["layers_in_out"]))})
    return rates


def cpu_rate(config: dict, backbone: str, measured: list[dict]) -> tuple[float, str]:
    """(FLOP/s of one core, source) for a backbone: the measured rate whose N is nearest its own on a
    log scale (its own architecture's on a tie), as matmuls this small run far below large ones."""
    if not measured:
        raise FileNotFoundError(f"no CPU rate: neither {NUMERICS_COST} nor {FLAT_OVERHEAD} is committed")
    n, _ = parameters(config, backbone)
    arch = config["backbones"][backbone].get("arch")
    best = min(measured, key=lambda m: (round(abs(math.log(m["n"] / n)), 9), m["arch"] != arch))
    if best["arch"] is None:
        why = "the nearest measured size is the big-matrix benchmark"
    elif best["arch"] != arch:
        why = f"{arch} not measured at small scale; the nearest measured size, {best['name']}"
    else:
        why = "measured at its own scale" if math.isclose(best["n"], n) else f"the nearest measured {arch}, {best['name']}"
    return best["rate"], f"{backbone} (N={n:.3g}): {why}: {best['how']}"


def _recorded_rate(root: Path, task: str, method: str, spec) -> float | None:
    """Tokens/s of a finished GPU run of (task, method) from its seconds_per_step, if any."""
    for path in sorted((root / paths.RESULTS / "runs" / task / method).glob("seed*.json")):
        record = load_finished(path)
        res = (record or {}).get("resources") or {}
        if res.get("seconds_per_step") and str(res.get("device", "cpu")).startswith("cuda"):
            tokens = spec.training["batch_size"] * (spec.training.get("max_length") or 1)  # batch_size: per optimizer step
            return tokens / res["seconds_per_step"]
    return None


def lora_rate(config: dict, spec, gpu: str, root: Path, cpu_rates: dict | None) -> tuple[float, str, str]:
    """(tokens/s of a plain LoRA or full fine-tuning step, source, kind of rate) on one `gpu`;
    `cpu_rates`: {backbone: (FLOP/s of one core, source)} (`cpu` only)."""
    n, n_how = parameters(config, spec.backbone)
    full = spec.adapter is None
    k = 6 if full else 4
    model = str(config["backbones"][spec.backbone].get("model") or "").lower()
    arch = config["backbones"][spec.backbone].get("arch")
    if gpu == "cpu":
        return cpu_rates[spec.backbone][0] / (k * n), f"{k}·N FLOPs/token, N {n_how}; CPU rate of {spec.backbone} below", "cpu"
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


def _cpu_extras(config: dict, runs: dict, specs_: dict, cpu_rates: dict, root: Path) -> dict:
    """CPU seconds outside training, for the `cpu` estimate of a local pipeline (each a stated model),
    every FLOP count at its backbone's CPU rate (cpu_rate)."""
    # deferred: these modules import torch, which only the `cpu` estimate needs
    from lorarepro.domain.data import GENERATED_SOURCES
    from lorarepro.domain.data.vision import SEVERITIES
    from lorarepro.domain.families.generation import MAX_NEW_TOKENS
    from lorarepro.stages.sharpness import ALPHAS

    out = {}
    pretrain = 0.0
    used = {specs_[pair].backbone for pair in runs}
    for name, bb in config["backbones"].items():
        if bb.get("source") != "pretrain" or name not in used:
            continue
        n, _ = parameters(config, name)
        p = bb.get("pretrain") or {}
        # full training of every weight, 6·N per token, at the rate numerics_cost.json measured for this scale
        pretrain += 6 * n * p.get("steps", 0) * p.get("batch_size", 0) * _pretrain_tokens(bb) / cpu_rates[name][0]
    out["backbone pretraining (6·N per token)"] = pretrain
    evaluation = 0.0
    for (task, method), seeds in runs.items():
        spec, task_cfg = specs_[(task, method)], config["tasks"][task]
        n, _ = parameters(config, spec.backbone)
        per, _ = tokens_per_example(config, task, spec.training)
        sizes = task_cfg.get("sizes") or {}
        # every split but train, scored once after training (data.load_eval_splits): validation and test
        examples = sizes.get("validation", 0) + sizes.get("test", 0)
        if task_cfg.get("family") == "vision" and task_cfg.get("source") in GENERATED_SOURCES:
            examples += len(SEVERITIES) * sizes.get("test", 0)  # a generated vision task's corrupted test copies
        if spec.training.get("checkpoint_selection", "last") != "last":
            examples += spec.training["epochs"] * sizes.get("validation", 0)  # validation after every epoch (selection)
        if task_cfg.get("family") == "generation":
            per += task_cfg.get("max_new_tokens", MAX_NEW_TOKENS)  # greedy decoding: one forward per new token
        evaluation += len(seeds) * 2 * n * per * examples / cpu_rates[spec.backbone][0]
    out["evaluation (every split once, OOD copies, decoded tokens; 2·N per token)"] = evaluation
    sharp = config.get("sharpness")
    seconds = 0.0
    if sharp:
        for (task, method), seeds in sharpness_runs(config).items():
            spec = specs_.get((task, method)) or resolve_run(config, task, method)
            n, _ = parameters(config, spec.backbone)
            per, _ = tokens_per_example(config, task, spec.training)
            probe = min(sharp.get("n_eval", 64), run_tokens(config, task, spec.training)["examples"])  # first training rows
            per_token = 2 * n * per * probe / cpu_rates[spec.backbone][0]
            detail = sharp.get("detail_seeds")
            detail = len(seeds) if detail is None else len(set(seeds) & set(detail))  # default: every seed
            # the clean loss, then one forward per (radius, draw)
            seconds += len(seeds) * (1 + sharp.get("draws", 8) * len(sharp.get("radii") or [1])) * per_token
            # λ_max: one Hessian-vector product per Lanczos vector, ≈ 2 forward/backward passes (6·N each);
            # the landscape: one forward per α (sharpness.ALPHAS)
            seconds += detail * (sharp.get("hessian_iters", 12) * 6 + len(ALPHAS)) * per_token
    out["sharpness (probe forwards; Hessian-vector products; landscape)"] = seconds
    overhead = json.loads((root / PIPELINE_OVERHEAD).read_text(encoding="utf-8")) if (root / PIPELINE_OVERHEAD).is_file() else {}
    startup = overhead.get("job_startup_seconds") or {}
    warm, cold = (startup.get("warm") or {}).get("median", 0.5), (startup.get("cold") or {}).get("median", 5.0)
    pretext = sum(1 for b in used if config["backbones"][b].get("source") == "pretrain")
    # one job per trained (task, method), prepared task, backbone and its pretext, sharpness pair, and
    # tables, figures, captions and audit: each a fork of the warm server; the server's imports once
    jobs = len(runs) + len({t for t, _ in runs}) + len(used) + pretext + len(sharpness_runs(config)) + 4
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
    cpu_rates = None
    if gpu == "cpu":
        measured = measured_cpu_rates(root, config.get("numerics", "portable"))
        cpu_rates = {b: cpu_rate(config, b, measured) for b in sorted({s.backbone for s in specs_.values()})}
    per_run = {}
    for pair, seeds in runs.items():
        spec = specs_[pair]
        tok = run_tokens(config, pair[0], spec.training)
        rate, source, kind = lora_rate(config, spec, gpu, root, cpu_rates)
        # on `cpu` (the benchmark's own kind of device) Flat's and SAM's ratio at the run's tokens per micro-batch
        micro = math.ceil(spec.training["batch_size"] / spec.training.get("grad_accum", 1)) * tok["tokens_per_example"]
        factor, factor_how = multiplier(spec, points, micro if gpu == "cpu" else None)
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
        extras = _cpu_extras(config, runs, specs_, cpu_rates, root)
        core_seconds = total["hours"] * 3600 + sum(extras.values())
        out["cpu"] = {"rates": {b: how for b, (_, how) in cpu_rates.items()}, "cores": cores, "extras_seconds": extras,
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
        lines += ["", "CPU rates (FLOP/s of one core, per backbone):", *(f"  {how}" for how in c["rates"].values()),
                  f"training: {c['training_seconds']:.0f} core-s"]
        lines += [f"{k}: {v:.0f} core-s" for k, v in c["extras_seconds"].items()]
        lines.append(f"pipeline wall time on {c['cores']} cores: {c['wall_seconds']:.0f} s "
                     f"({c['wall_range_seconds'][0]:.0f}-{c['wall_range_seconds'][1]:.0f} s)")
    a = result["assumptions"]
    lines += ["", f"assumed: {a['utilisation']:.0%} of dense bf16 peak where a FLOP model is used; "
              f"uncertainty x/÷ {a['uncertainty']}; {a['tables_overlap']}."]
    return "\n".join(lines)
