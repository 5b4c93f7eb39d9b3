#!/usr/bin/env python3
"""Logits of a model directory through Hugging Face transformers, for the interoperability test.

Reads {"dir": ..., "input_ids": [[...]]} on stdin, loads the directory with AutoModelForCausalLM.from_pretrained
exactly as a user would (no trust_remote_code: transformers' own deepseek_v2), and prints {"logits": [...],
"transformers": version} with the logits flattened in row-major order (float32). Any failure is one line on stderr
and exit 1.
"""
import json
import sys

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    req = json.load(sys.stdin)
    model = AutoModelForCausalLM.from_pretrained(req["dir"], torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor(req["input_ids"], dtype=torch.long)).logits
    print(json.dumps({"logits": out.reshape(-1).tolist(), "transformers": transformers.__version__}))
except Exception as e:  # noqa: BLE001 - one line for the test to show
    print(f"{type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
    sys.exit(1)
