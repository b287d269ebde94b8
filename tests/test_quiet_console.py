"""What a training job prints where people look: no kineto trace lines from the memory probe, no
known-harmless FutureWarning from PEFT per adapter."""

import subprocess
import sys
import warnings

PROBE = """
import torch
from lorarepro.stages.training.memory import StepMemoryProbe
probe = StepMemoryProbe(1)
probe.on_step_start(1)
x = torch.ones(1000) * 2
probe.on_step_end(1)
print(probe.peak_mb)
"""


def test_memory_probe_prints_no_kineto_trace_lines():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert "USDT" not in done.stderr and "profiler_start" not in done.stderr, done.stderr
    assert float(done.stdout) > 0


def test_peft_quietly_drops_only_the_is_gradient_checkpointing_warning():
    from transformers import T5Config, T5ForConditionalGeneration

    from lorarepro.domain.methods import lora

    model = T5ForConditionalGeneration(T5Config(d_model=8, d_ff=8, num_layers=1, num_heads=1, d_kv=8, vocab_size=16))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.is_gradient_checkpointing  # still warns upstream: the filter's message matches it
        with lora.peft_quietly():
            model.is_gradient_checkpointing
            warnings.warn("another", FutureWarning)
    messages = [str(w.message) for w in seen]
    assert sum("is_gradient_checkpointing" in m for m in messages) == 1 and "another" in messages
