#!/usr/bin/python3
"""The PyTorch peer's inference, one measurement per request, for `dsv2 bench decode --vs-torch`.

As scripts/torch-peer-train.py: the two implementations are timed in lockstep so each pair sees the same machine.
The measurements are bench_torch.py's (../shared/peers): `decode` is batch-1 greedy decoding of N new tokens after a
P-token prompt with the peer's absorbed MLA cache (the prompt's prefill not timed); `prefill` is one L-token prompt
through the model into a fresh cache, logits for the last position only. Random init std 0.02, inference mode.

Protocol (one JSON object per line on stdout): {"ready": true, ...} once warmed up; then {"s": seconds} per
`decode` or `prefill` request; `quit` (or end of input) exits.
"""
import argparse
import ctypes
import json
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--peer-dir", required=True)
ap.add_argument("--config", default="small")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--prompt", type=int, default=16)
ap.add_argument("--new-tokens", type=int, default=128)
ap.add_argument("--prefill", type=int, default=256)
ap.add_argument("--mode", default="absorb", choices=["absorb", "naive"])
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[k] = str(args.threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_libc = ctypes.CDLL("libc.so.6")
_libc.mallopt(-4, 0)  # M_MMAP_MAX
_libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD

import torch  # noqa: E402

sys.path.insert(0, args.peer_dir)
import torch_dsv2 as M  # noqa: E402

torch.set_num_threads(args.threads)
cfg = M.DeepseekV2Config.from_json(os.path.join(args.peer_dir, "configs", f"{args.config}.json"))
model = M.DeepseekV2ForCausalLM(cfg).init_weights(std=0.02, seed=args.seed).eval()
g = torch.Generator().manual_seed(args.seed + 1)


@torch.inference_mode()
def decode():
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt), generator=g)
    cache = M.KVCache(cfg, 1, args.prompt + args.new_tokens, args.mode)
    nxt = model(prompt, cache, logits_to_keep=1)[:, -1].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(args.new_tokens):
        nxt = model(nxt[:, None], cache, logits_to_keep=1)[:, -1].argmax(-1)
    return time.perf_counter() - t0


@torch.inference_mode()
def prefill():
    tokens = torch.randint(0, cfg.vocab_size, (1, args.prefill), generator=g)
    t0 = time.perf_counter()
    model(tokens, M.KVCache(cfg, 1, args.prefill, args.mode), logits_to_keep=1)
    return time.perf_counter() - t0


decode()
prefill()
print(json.dumps({"ready": True, "torch": torch.__version__, "threads": args.threads, "config": args.config}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
        break
    if cmd == "decode":
        print(json.dumps({"s": decode()}), flush=True)
    elif cmd == "prefill":
        print(json.dumps({"s": prefill()}), flush=True)
    else:
        sys.exit(f"torch-peer-decode: unknown request {cmd!r}")
