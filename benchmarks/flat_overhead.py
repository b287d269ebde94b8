"""Step-time and memory overhead of Flat-LoRA (exact, in-place) and SAM-W over LoRA.

Cost model (lorarepro.domain.methods.flat): one noise draw is O(m*n) random numbers; a pass through the layer is
O(tokens*m*n) FLOPs. So the overhead depends on the tokens per micro-batch and, for the in-place mode
(two draws per optimizer step, not per micro-batch), on gradient accumulation. This script measures
that dependence with the real implementations (lorarepro.domain.methods.flat.FlatLoRA, lorarepro.domain.methods.sam.SAM)
driven by the real training loop (lorarepro.stages.training.loop.train_steps) on one of three models (`--model`):
- `stack` (default): a PEFT-LoRA stack of linears shaped like Llama-2-7B's MLP (4096 <-> 11008), scaled
  down; a sweep over tokens per micro-batch;
- `llama-2-7b`: the full Llama-2-7B architecture built from its config (transformers' LlamaConfig,
  random weights, no hub), bf16 on CUDA, LoRA r=8 on q,k,v,o,gate,up,down, micro-batches of 4 x 512;
- `tiny`: the same code path with a tiny Llama config, for CPU (a smoke run).

Timing: per (tokens, accumulation) point, every method runs one optimizer step in turn (the order
rotates every round), `--warmup` rounds are discarded and the step time is the median of `--steps`
rounds. Memory (`--memory-repeats` times, the median and every repeat kept): torch keeps no CPU allocator
statistics, so each method runs in a fresh subprocess
(glibc mmap threshold fixed, so freed tensors leave RSS): after two warm-up steps the RSS high-water
mark is reset (/proc/self/clear_refs) and the peak rise over three steps is read from VmHWM; extra
memory = that rise minus LoRA's. On CUDA: torch.cuda.max_memory_allocated, the same way, in process.

    python benchmarks/flat_overhead.py                      # full sweep: ~15 CPU-minutes (1 thread)
    python benchmarks/flat_overhead.py --quick              # seconds: smoke run
    python benchmarks/flat_overhead.py --tokens 2048 --accum 1 16 --hidden 1024 --ffn 2752
    python benchmarks/flat_overhead.py --device cuda        # bf16, Llama/4 shapes
    python benchmarks/flat_overhead.py --model llama-2-7b --device cuda   # ~3 GPU-minutes on one H200
    python benchmarks/flat_overhead.py --model tiny --quick                 # the 7B code path on CPU

Writes results/benchmarks/flat_overhead.json|png (stack), flat_overhead_7b.json|png (llama-2-7b, CUDA
only, so no CPU number ever carries the 7B name) or flat_overhead_tiny.json|png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from lorarepro.core.atomic import temp_sibling, write_json
from lorarepro.stages.training.loop import train_steps
from lorarepro.domain.methods.flat import FlatLoRA
from lorarepro.domain.methods.sam import SAM

METHODS = ("lora", "flat_exact", "flat_inplace", "sam_w")
OUT_DIR = Path("results/benchmarks")
RHO = 0.05
# Llama configs built in place (random weights): the 7B's sizes are Llama-2-7B's config.json.
LLAMA = {
    "llama-2-7b": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
                   "rms_norm_eps": 1e-5},
    "tiny": {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256},
}
MODELS = ("stack", *LLAMA)
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OUT_NAME = {"stack": "flat_overhead", "llama-2-7b": "flat_overhead_7b", "tiny": "flat_overhead_tiny"}
# Targets at 2,048 tokens per micro-batch: (method, accumulation, limit on time_ratio); the stack's are
# CPU limits, the 7B's GPU limits (the cost model in lorarepro.domain.methods.flat), with its limit on extra peak memory.
TARGETS = {"stack": (("flat_exact", 1, 1.25), ("flat_inplace", 16, 1.05)),
           "llama-2-7b": (("flat_exact", 1, 1.10), ("flat_inplace", 8, 1.02))}
MEMORY_LIMIT_GB = {"llama-2-7b": 0.12}


class Stack(nn.Module):
    """Alternating up (hidden -> ffn) and down (ffn -> hidden) projections, SiLU between, no bias."""

    def __init__(self, hidden: int, ffn: int, layers: int):
        super().__init__()
        dims = [(hidden, ffn) if i % 2 == 0 else (ffn, hidden) for i in range(layers)]
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in dims)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nn.functional.silu(x)
        return SimpleNamespace(loss=x.float().square().mean())


def build(hidden: int, ffn: int, layers: int, rank: int, dtype: torch.dtype, device: str, seed: int = 0):
    """The PEFT-LoRA-wrapped stack (every linear adapted, B initialised nonzero so sigma sees BA)."""
    from peft import LoraConfig, get_peft_model

    if layers < 1 or hidden < 1 or ffn < 1 or rank < 1:
        raise ValueError(f"--layers, --hidden, --ffn, --rank must be >= 1, got {layers}, {hidden}, {ffn}, {rank}")
    torch.manual_seed(seed)
    base = Stack(hidden, ffn, layers).to(device=device, dtype=dtype)
    targets = [f"layers.{i}" for i in range(layers)]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(base, config)


def build_llama(name: str, rank: int, dtype: torch.dtype, device: str, seed: int = 0):
    """A Llama of config LLAMA[name] with random weights, made on `device` in `dtype` (no hub), every
    attention and MLP projection LoRA-adapted (B initialised nonzero so sigma sees BA)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        base = LlamaForCausalLM._from_config(LlamaConfig(**LLAMA[name], use_cache=False), dtype=dtype)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LLAMA_TARGETS, lora_dropout=0.0,
                        init_lora_weights=False)
    return get_peft_model(base, config)


class _AtStep:
    """Flat at the schedule's end (f(t) = 1, full noise) for every timed step."""

    def __init__(self, flat: FlatLoRA):
        self.flat = flat

    def begin_step(self, step: int) -> None:
        self.flat.begin_step(self.flat.total_steps)

    def end_step(self) -> None:
        self.flat.end_step()


def make_hook(model, method: str):
    if method == "lora":
        return None
    if method in ("flat_exact", "flat_inplace"):
        mode = method.removeprefix("flat_")
        return _AtStep(FlatLoRA(model, rho=RHO, total_steps=1, seed=0, mode=mode))
    if method == "sam_w":
        return SAM(model, rho=RHO, space="weight")
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


class Runner:
    """One model, one optimizer, one hook per method: runs a single optimizer step of any method."""

    def __init__(self, args, methods):
        self.device = args.device
        self.dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        self.llama = args.model in LLAMA
        if self.llama:
            self.model = build_llama(args.model, args.rank, self.dtype, args.device)
        else:
            self.model = build(args.hidden, args.ffn, args.layers, args.rank, self.dtype, args.device)
        self.hooks = {m: make_hook(self.model, m) for m in methods}
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.hidden, self.seq_len = args.hidden, args.seq_len

    def step(self, method: str, tokens: int, accum: int) -> tuple[float, float]:
        """(wall, process CPU) seconds of one optimizer step (`accum` micro-batches of `tokens` tokens)."""
        x = self._input(tokens)
        batch = {"input_ids": x, "labels": x} if self.llama else {"x": x}
        plan = [[list(range(tokens))] * accum]
        self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        train_steps(self.model, plan, lambda _: batch, self.optimizer, self.scheduler, hook=self.hooks[method])
        self._sync()
        return time.perf_counter() - wall, time.process_time() - cpu

    def _input(self, tokens: int) -> torch.Tensor:
        """The stack's activations (tokens x hidden), or a Llama's token ids (tokens / seq_len x seq_len)."""
        gen = torch.Generator().manual_seed(tokens)
        if self.llama:
            vocab = self.model.config.vocab_size
            return torch.randint(0, vocab, (tokens // self.seq_len, self.seq_len), generator=gen).to(self.device)
        return torch.randn(tokens, self.hidden, generator=gen).to(device=self.device, dtype=self.dtype)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def clock(device: str) -> str:
    """The clock of step_ms / time_ratio. CPU: process CPU time, because the shared machine's load
    (other jobs) inflates wall time at random; with one torch thread it is the step's compute. CUDA:
    wall time between synchronisations. Both clocks are recorded either way."""
    return "wall" if device.startswith("cuda") else "process_cpu"


def measure(args, runner: Runner) -> list[dict]:
    """Median step time per (tokens, accum, method), methods interleaved; ratio to LoRA."""
    methods = tuple(runner.hooks)
    if "lora" not in methods:
        raise ValueError("the methods must include 'lora' (the reference of time_ratio)")
    primary = 0 if clock(args.device) == "wall" else 1
    points = []
    for accum in args.accum:
        # SAM-W runs both passes over every micro-batch: its ratio does not depend on accumulation.
        here = tuple(m for m in methods if m != "sam_w" or accum in args.sam_accum)
        for tokens in args.tokens:
            times = {m: [] for m in here}
            for rnd in range(args.warmup + args.steps):
                for m in here[rnd % len(here):] + here[: rnd % len(here)]:  # rotate the order each round
                    dt = runner.step(m, tokens, accum)
                    if rnd >= args.warmup:
                        times[m].append(dt)
            points += _point_rows(tokens, accum, times, primary)
            print(_summary(points[-len(here):]), flush=True)
    return points


def _point_rows(tokens: int, accum: int, times: dict, primary: int) -> list[dict]:
    med = {m: [statistics.median(t[i] for t in ts) for i in (0, 1)] for m, ts in times.items()}
    rows = []
    for m, ts in times.items():
        main = [t[primary] for t in ts]
        rows.append({"tokens": tokens, "accum": accum, "method": m, "steps": len(ts),
                     "step_ms": round(1e3 * med[m][primary], 3),
                     "time_ratio": round(med[m][primary] / med["lora"][primary], 4),
                     "tokens_per_s": round(tokens * accum / med[m][primary], 1),
                     "wall_ms": round(1e3 * med[m][0], 3), "wall_ratio": round(med[m][0] / med["lora"][0], 4),
                     "min_ms": round(1e3 * min(main), 3), "max_ms": round(1e3 * max(main), 3),
                     # every round's time, in round order: per-round ratios give each ratio an interval
                     "round_ms": [round(1e3 * t, 3) for t in main]})
    return rows


def _summary(rows: list[dict]) -> str:
    head = f"tokens={rows[0]['tokens']:5d} accum={rows[0]['accum']:2d}"
    return head + "  " + "  ".join(f"{r['method']} {r['step_ms']:.0f}ms x{r['time_ratio']:.3f}" for r in rows)


# --------------------------------------------------------------------------- memory


def peak_memory(args, methods=METHODS, runner: Runner | None = None) -> dict:
    """Peak memory per method at (args.memory_tokens, accum 1); extra = method minus LoRA. On CUDA it
    runs in `runner` (a new one if None); on CPU in fresh subprocesses."""
    tokens = args.memory_tokens
    if args.device.startswith("cuda"):
        how = "torch.cuda.max_memory_allocated over 3 steps per method minus memory allocated before, one process"
        runner = runner or Runner(args, methods)
        repeats = [_cuda_peaks(runner, methods, tokens) for _ in range(args.memory_repeats)]
    else:
        how = ("rise of peak RSS (VmHWM, reset via /proc/self/clear_refs) over RSS during 3 steps, after 2 warm-up "
               "steps, in a fresh subprocess per method with MALLOC_MMAP_THRESHOLD_=131072")
        repeats = [{m: _subprocess_peak(args, m, tokens) for m in methods} for _ in range(args.memory_repeats)]
    peaks = {m: statistics.median(r[m] for r in repeats) for m in methods}
    largest = max(args.hidden * args.ffn * (2 if args.device.startswith("cuda") else 4), 1) / 2**20
    per = {m: {"step_peak_mb": round(peaks[m], 1), "extra_mb": round(peaks[m] - peaks["lora"], 1),
               "extra_vs_largest_weight": round((peaks[m] - peaks["lora"]) / largest, 3),
               "repeats_mb": [round(r[m], 3) for r in repeats]} for m in methods}
    return {"how": how, "tokens": tokens, "accum": 1, "largest_weight_mb": round(largest, 2), "methods": per}


def _cuda_peaks(runner: Runner, methods, tokens) -> dict:
    runner.step("lora", tokens, 1)  # optimizer state, allocator warm
    out = {}
    for m in methods:
        runner.step(m, tokens, 1)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(3):
            runner.step(m, tokens, 1)
        out[m] = (torch.cuda.max_memory_allocated() - before) / 2**20
    return out


def _subprocess_peak(args, method: str, tokens: int) -> float:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", method, "--device", args.device,
           "--model", args.model, *(["--seq-len", str(args.seq_len)] if args.seq_len else []),
           "--hidden", str(args.hidden), "--ffn", str(args.ffn), "--layers", str(args.layers),
           "--rank", str(args.rank), "--threads", str(args.threads), "--memory-tokens", str(tokens)]
    # A fixed mmap threshold: glibc's adaptive one would keep freed m x n blocks in the heap, so RSS
    # would stop following the live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe for {method} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def _probe(args) -> None:
    """Subprocess entry: warm up, reset the RSS high-water mark, run three steps of one method and
    print how far the peak RSS rose above the RSS before them (Linux /proc/self/clear_refs + VmHWM)."""
    runner = Runner(args, ("lora", args.probe) if args.probe != "lora" else ("lora",))
    runner.step("lora", args.memory_tokens, 1)  # optimizer state and autograd warm for every method alike
    runner.step(args.probe, args.memory_tokens, 1)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    for _ in range(3):
        runner.step(args.probe, args.memory_tokens, 1)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024}))


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


# --------------------------------------------------------------------------- report


def report(args, points: list[dict], memory: dict | None, seconds: float) -> dict:
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    return {
        "device": _device_name(args.device), "dtype": dtype, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "model": args.model, "shapes": _shapes(args),
        "timing": {"statistic": "median", "clock": clock(args.device), "steps": args.steps, "warmup": args.warmup,
                   "sam_w_accum": args.sam_accum,
                   "protocol": "one optimizer step per method in turn, order rotating each round, one process",
                   "flat": {"rho": RHO, "schedule_factor": 1.0}, "sam": {"rho": RHO, "space": "weight"}},
        "points": points, "memory": memory, "targets": _targets(args.model, points, memory),
        "seconds": round(seconds, 1),
    }


def _shapes(args) -> dict:
    if args.model in LLAMA:
        return {"config": LLAMA[args.model], "lora_targets": LLAMA_TARGETS, "rank": args.rank,
                "lora_alpha": 2 * args.rank, "seq_len": args.seq_len}
    layers = [[args.hidden, args.ffn] if i % 2 == 0 else [args.ffn, args.hidden] for i in range(args.layers)]
    return {"layers_in_out": layers, "rank": args.rank, "lora_alpha": 2 * args.rank,
            "scaled_from": "Llama-2-7B MLP 4096 <-> 11008"}


def _targets(model: str, points: list[dict], memory: dict | None) -> list[dict]:
    """Each target of TARGETS / MEMORY_LIMIT_GB that this run measured, with whether it is met."""
    out = []
    for method, accum, limit in TARGETS.get(model, ()):
        hit = [p for p in points if p["method"] == method and p["accum"] == accum and p["tokens"] == 2048]
        if hit:
            out.append({"method": method, "tokens": 2048, "accum": accum, "time_ratio": hit[0]["time_ratio"],
                        "limit": limit, "met": hit[0]["time_ratio"] <= limit})
    if memory is not None and model in MEMORY_LIMIT_GB:
        for method in ("flat_exact", "flat_inplace"):
            extra = memory["methods"][method]["extra_mb"] / 1024
            out.append({"method": method, "tokens": memory["tokens"], "accum": 1, "extra_gb": round(extra, 4),
                        "limit_gb": MEMORY_LIMIT_GB[model], "met": extra <= MEMORY_LIMIT_GB[model]})
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accums = sorted({p["accum"] for p in result["points"]})
    fig, axes = plt.subplots(1, len(accums), figsize=(4.2 * len(accums), 3.6), sharey=True, squeeze=False)
    for ax, accum in zip(axes[0], accums):
        for method in METHODS[1:]:
            rows = sorted((p for p in result["points"] if p["accum"] == accum and p["method"] == method),
                          key=lambda p: p["tokens"])
            if rows:
                ax.plot([p["tokens"] for p in rows], [p["time_ratio"] for p in rows], marker="o", label=method)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"gradient accumulation {accum}")
        ax.set_xlabel("tokens per micro-batch")
    axes[0][0].set_ylabel("step time / LoRA step time")
    axes[0][0].legend(fontsize=8)
    shapes = result["shapes"]
    what = (f"layers {shapes['layers_in_out'][0]} x{len(shapes['layers_in_out'])}" if "layers_in_out" in shapes
            else result["model"])
    fig.suptitle(f"{result['device']}, {result['dtype']}, {what}, r={shapes['rank']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        fig.savefig(tmp, format="png", dpi=130, metadata={"Software": None})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


# --------------------------------------------------------------------------- entry point


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (float32) or cuda[:i] (bfloat16)")
    p.add_argument("--model", choices=MODELS, default="stack",
                   help="stack (scaled Llama MLP linears), llama-2-7b (full architecture, CUDA) or tiny (a tiny Llama)")
    p.add_argument("--seq-len", type=int, default=None, help="Llama models: tokens per sequence (--tokens: per micro-batch)")
    p.add_argument("--tokens", type=int, nargs="+", default=None, help="tokens per micro-batch")
    p.add_argument("--accum", type=int, nargs="+", default=None, help="micro-batches per optimizer step")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (Llama-2-7B: 4096)")
    p.add_argument("--ffn", type=int, default=None, help="MLP size (Llama-2-7B: 11008)")
    p.add_argument("--layers", type=int, default=2, help="linears in the stack (alternating up/down)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="timed steps per method and point (median; 20, 7B 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spin-waiting on a shared CPU)")
    p.add_argument("--sam-accum", type=int, nargs="+", default=None,
                   help="accumulations at which SAM-W is timed (stack: 1; Llama models: every --accum)")
    p.add_argument("--memory-tokens", type=int, default=None,
                   help="tokens of the memory measurement (stack: 2048; Llama models: the first --tokens)")
    p.add_argument("--memory-repeats", type=int, default=3, help="memory measurements per method (median; each kept)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 points, 3 steps: a smoke run")
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--probe", choices=METHODS, help=argparse.SUPPRESS)  # memory subprocess entry
    args = p.parse_args(argv)
    return _defaults(args, p)


def _defaults(args, parser) -> argparse.Namespace:
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.steps, args.warmup = 3, 1
    if args.model in LLAMA:
        _llama_defaults(args, parser, cuda)
    elif args.quick:
        args.tokens, args.accum = args.tokens or [64, 256], args.accum or [1, 4]
        args.hidden, args.ffn, args.memory_tokens = args.hidden or 128, args.ffn or 344, 256
    # Llama/4 on a GPU; Llama/8 on CPU, where Llama/4 makes the full sweep take over an hour.
    args.hidden = args.hidden or (1024 if cuda else 512)
    args.ffn = args.ffn or (2752 if cuda else 1376)
    args.tokens = args.tokens or [256, 512, 1024, 2048, 4096]
    args.accum = args.accum or [1, 4, 16]
    args.steps, args.sam_accum = args.steps or 20, args.sam_accum or [1]
    args.memory_tokens = args.memory_tokens or 2048
    if min(args.tokens) < 1 or min(args.accum) < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--tokens, --accum and --steps must be >= 1, --warmup >= 0")
    if args.model in LLAMA and any(t % args.seq_len for t in [*args.tokens, args.memory_tokens]):
        parser.error(f"--tokens and --memory-tokens must be multiples of --seq-len {args.seq_len}")
    torch.set_num_threads(args.threads)
    return args


def _llama_defaults(args, parser, cuda: bool) -> None:
    """A Llama's sizes come from its config; the 7B runs on CUDA only (no CPU number under its name)."""
    if args.model == "llama-2-7b" and not cuda:
        parser.error("--model llama-2-7b runs on CUDA (bf16) only; --model tiny runs the same code on CPU")
    config = LLAMA[args.model]
    args.hidden, args.ffn, args.layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    big = args.model == "llama-2-7b"
    args.seq_len = args.seq_len or (512 if big else 32)
    args.tokens = args.tokens or [4 * args.seq_len]
    args.accum = args.accum or [1, 8]
    args.sam_accum = args.sam_accum or args.accum
    args.memory_tokens = args.memory_tokens or args.tokens[0]
    if big:
        args.steps = args.steps or 10  # a 7B step at accumulation 8 takes seconds


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.probe:
        _probe(args)
        return {}
    start = time.perf_counter()
    runner = Runner(args, METHODS)
    points = measure(args, runner)
    memory = None if args.no_memory else peak_memory(args, METHODS, runner)
    result = report(args, points, memory, time.perf_counter() - start)
    write_json(args.out / f"{OUT_NAME[args.model]}.json", result)
    plot(result, args.out / f"{OUT_NAME[args.model]}.png")
    print(json.dumps({"targets": result["targets"], "memory": memory}, indent=1))
    return result


if __name__ == "__main__":
    main()
