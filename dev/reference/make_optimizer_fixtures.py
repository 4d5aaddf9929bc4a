#!/usr/bin/env python3
"""Generates tests/fixtures/train/optimizer.json for tests/train/test_optimizer.cpp:
torch.optim.AdamW over several steps (decay on one tensor, none on a "norm" tensor, clipped gradients via
torch.nn.utils.clip_grad_norm_), and transformers' constant / linear / cosine schedules with warm-up.

Usage: python3 dev/reference/make_optimizer_fixtures.py [--out tests/fixtures/train/optimizer.json]
"""
import argparse
import json
import math

import torch
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)


def adamw_case(gen):
    weight = torch.randn(37, generator=gen, dtype=torch.float64)
    norm = 1.0 + 0.1 * torch.randn(11, generator=gen, dtype=torch.float64)
    params = [torch.nn.Parameter(weight.clone()), torch.nn.Parameter(norm.clone())]
    cfg = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_norm=1.0)
    opt = torch.optim.AdamW([{"params": [params[0]], "weight_decay": cfg["weight_decay"]},
                             {"params": [params[1]], "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
    grads, norms = [], []
    for step in range(5):
        g = [torch.randn(p.shape, generator=gen, dtype=torch.float64) * (3.0 if step % 2 else 0.05) for p in params]
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg["max_norm"])))
        grads.append([gi.tolist() for gi in g])
        opt.step()
    return {"config": cfg, "initial": [weight.tolist(), norm.tolist()], "grads": grads, "grad_norms": norms,
            "final": [p.detach().tolist() for p in params]}


def schedule_cases():
    out = []
    make = {"constant": lambda o, w, t: get_constant_schedule_with_warmup(o, w),
            "linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}
    for name in ("constant", "linear", "cosine"):
        for total, ratio in ((100, 0.1), (37, 0.0), (10, 0.25)):
            warmup = math.ceil(total * ratio)
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
            sched = make[name](opt, warmup, total)
            lrs = []
            for _ in range(total):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            out.append({"schedule": name, "peak": 2e-5, "total": total, "warmup_ratio": ratio, "lrs": lrs})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/train/optimizer.json")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(7)
    out = {"generator": "dev/reference/make_optimizer_fixtures.py", "version": 1, "adamw": adamw_case(gen),
           "schedules": schedule_cases()}
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
