#!/usr/bin/python3
"""The PyTorch peer's training step, one step per request, for `dsv2 bench train --vs-torch`.

The machines here are noisy (±20% within seconds), so the two implementations are timed in lockstep: the Node
side sends `step` on stdin, this process runs one step and answers with its seconds; Node then runs one of its
own steps. Each pair of steps sees the same machine, and the median of the per-pair ratios is the comparison.

The step is bench_torch.py's (../shared/peers): the peer model `torch_dsv2.DeepseekV2ForCausalLM`, random init
std 0.02, forward + cross-entropy + backward + AdamW (lr 1e-4) on fresh random tokens, with the same thread and
malloc settings (scripts/torch_peer_setup.py repeats bench_torch.py's set-up, which cannot be imported).

Protocol (one JSON object per line on stdout): {"ready": true, "torch": ..., ...} once the model is built and
warmed up; then {"s": seconds} per `step`; `quit` (or end of input) exits.
"""
import argparse
import json
import os
import sys
import time

from torch_peer_setup import blas_gflops, setup

ap = argparse.ArgumentParser()
ap.add_argument("--peer-dir", required=True, help="the folder holding torch_dsv2.py and configs/")
ap.add_argument("--config", default="small")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--seq", type=int, required=True)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

# as bench_torch.py: thread settings before torch is imported; glibc keeps freed memory ("malloc tuned")
torch, M = setup(args.threads, args.peer_dir)
cfg = M.DeepseekV2Config.from_json(os.path.join(args.peer_dir, "configs", f"{args.config}.json"))
model = M.DeepseekV2ForCausalLM(cfg).init_weights(std=0.02, seed=args.seed).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
g = torch.Generator().manual_seed(args.seed + 1)


def step():
    data = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=g)
    t0 = time.perf_counter()
    loss = M.cross_entropy(model(data[:, :-1]), data[:, 1:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


step()  # warm-up, as bench_torch.py
print(json.dumps({"ready": True, "torch": torch.__version__, "blas_gflops": blas_gflops(torch), "threads": args.threads, "config": args.config}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
        break
    if cmd != "step":
        sys.exit(f"torch-peer-train: unknown request {cmd!r}")
    print(json.dumps({"s": step()}), flush=True)
