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
import json
import os
import sys
import time

from torch_peer_setup import blas_gflops, setup

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

torch, M = setup(args.threads, args.peer_dir)
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
print(json.dumps({"ready": True, "torch": torch.__version__, "blas_gflops": blas_gflops(torch), "threads": args.threads, "config": args.config}), flush=True)
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
