#!/usr/bin/env python3
"""Writes test/fixtures/adamw-idle.json: torch.optim.AdamW over four steps in which some parameters get no
gradient (.grad is None: an expert no token was routed to), with clip_grad_norm_ before each step. PyTorch skips
such a parameter entirely: no moment decay, no weight decay, and its own step count (bias correction) stands still.
Run by hand with a Python that has torch; the suite reads only the JSON.

  python3 scripts/make-adamw-fixture.py
"""
import json, sys
import torch

torch.manual_seed(0)
shapes = {"w": (3, 4), "expert": (2, 4), "norm": (4,)}
params = {k: torch.nn.Parameter(torch.randn(*s, dtype=torch.float64).float()) for k, s in shapes.items()}
init = {k: p.detach().clone().flatten().tolist() for k, p in params.items()}
decay = [params["w"], params["expert"]]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.1}, {"params": [params["norm"]], "weight_decay": 0.0}],
    lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
)
# which parameters get a gradient at each step
active = [["w", "expert", "norm"], ["w", "norm"], ["w", "expert"], ["w"]]
steps = []
for s, names in enumerate(active):
    opt.zero_grad(set_to_none=True)
    grads = {}
    for k in names:
        g = (torch.randn(*shapes[k]) * (3.0 if s == 0 else 0.5)).float()
        params[k].grad = g.clone()
        grads[k] = g.flatten().tolist()
    norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=1.0)
    opt.step()
    steps.append({"grads": grads, "grad_norm": float(norm), "params": {k: p.detach().flatten().tolist() for k, p in params.items()}})
out = {"torch": torch.__version__, "lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "max_grad_norm": 1.0,
       "shapes": {k: list(s) for k, s in shapes.items()}, "init": init, "steps": steps}
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/adamw-idle.json", "w"), indent=1)
print("ok")
