"""What portable numerics cost, and what each candidate setting gives: the pretraining of the embedded
ViT and T5 backbones (their real code, lorarepro.stages.backbone.pretrain, shortened to --steps) under

- native: torch's own choices on this CPU (ATen's best kernels, MKL's automatic dispatch, oneDNN on);
- portable: lorarepro.core.numerics as shipped (ATen AVX2, MKL CNR COMPATIBLE, oneDNN off, NumPy x86-64-v3);
- portable-scalar: the same with ATen's `default` (non-vectorised) kernels, the floor every x86-64 CPU has;
- native-mkl-avx2: native with MKL_CBWR=AVX2 (cheap, but MKL documents it as reproducible on Intel CPUs
  only: on others it falls back to automatic dispatch), to show what that branch would save.

Each setting runs in a fresh process (the settings must be in place before torch starts), --repeats
times; the JSON holds each one's median seconds, its ratio to native and the weights' hash (equal
hashes within a setting: deterministic; across settings: the settings change the numbers).

    python benchmarks/numerics_cost.py            # -> results/benchmarks/numerics_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "benchmarks" / "numerics_cost.json"
SETTINGS = {  # name -> (numerics mode, extra environment)
    "native": ("native", {}),
    "portable": ("portable", {}),
    "portable-scalar": ("portable", {"ATEN_CPU_CAPABILITY": "default"}),
    "native-mkl-avx2": ("native", {"MKL_CBWR": "AVX2"}),
}
CHILD = """
import json, sys, time, yaml
from pathlib import Path
from lorarepro.core import numerics
mode, name, steps, override, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), Path(sys.argv[5])
numerics.pin(mode, 1)
import os
os.environ.update(override)  # after the pin: a deliberate variant of it
import torch
torch.set_num_threads(1)
torch.backends.mkldnn.enabled = mode != "portable"  # as numerics.apply, without its check of the (varied) pin
torch.use_deterministic_algorithms(True)
from lorarepro.domain import families
from lorarepro.stages.backbone import pretrain
from lorarepro.domain.data import prepare_pretext
cfg = yaml.safe_load(open("params.yaml"))["backbones"][name]
cfg["pretrain"]["steps"] = steps
pretext = workdir / f"pretext-{name}"
if not pretext.exists():
    prepare_pretext(families.of_arch(cfg["arch"]), 1234, cfg["pretrain"]["examples"], pretext)
start = time.perf_counter()
info = pretrain(name, cfg, pretext, workdir / f"out-{name}-{time.monotonic_ns()}", 1234)
print(json.dumps({"seconds": time.perf_counter() - start, "sha256": info["sha256"],
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def measure(setting: str, backbone: str, steps: int, workdir: Path) -> dict:
    mode, extra = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                                                             "NPY_DISABLE_CPU_FEATURES", "LORAREPRO_NUMERICS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", CHILD, mode, backbone, str(steps), json.dumps(extra), str(workdir)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{setting}/{backbone} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps per backbone (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from default_run import machine  # the machine description every benchmark records

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="lorarepro-numerics-") as tmp:
        for backbone in ("vit-tiny", "t5-tiny"):
            for setting in SETTINGS:
                runs = [measure(setting, backbone, args.steps, Path(tmp)) for _ in range(args.repeats)]
                results.setdefault(backbone, {})[setting] = {
                    "median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
                    "seconds": [round(r["seconds"], 3) for r in runs], "capability": runs[0]["capability"],
                    "sha256": sorted({r["sha256"] for r in runs}), "deterministic": len({r["sha256"] for r in runs}) == 1}
            native = results[backbone]["native"]["median_seconds"]
            for entry in results[backbone].values():
                entry["vs_native"] = round(entry["median_seconds"] / native, 3)
    out = {"what": "backbone pretraining steps under each numerics setting (lorarepro.core.numerics)", "steps": args.steps,
           "repeats": args.repeats, "machine": machine(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
