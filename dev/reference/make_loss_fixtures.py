#!/usr/bin/env python3
"""Generates tests/fixtures/train/losses.json: values and gradients of every preference loss of
docs/stapo-loss.md, by torch autograd, for tests/train/test_losses.cpp.

The baselines are written the way TRL computes them (DPOTrainer.dpo_loss for dpo/hinge/ipo,
CPOTrainer.cpo_loss for simpo/cpo, ORPOTrainer.odds_ratio_loss for orpo): a batch of B pairs, a per-pair
`losses` tensor, its mean, plus the NLL term as a token mean over every chosen token of the batch (TRL's
cross-entropy on the chosen half). StaPO follows the spec (margins m_l, m_r in units of Δ; `saturate`
evaluates the loss at min(Δ, m_r)). Inputs are random sequence log-probs, plus placed pairs: z spanning
[-100, 100], Δ spanning [-100, 100] (the 0.2-wide StaPO band far from the data), and Δ around the band.

Usage: python3 dev/reference/make_loss_fixtures.py [--out tests/fixtures/train/losses.json]
"""
import argparse
import json

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

DEFAULTS = {  # the spec's defaults (train/losses.cpp loss_defaults)
    "stapo-sigmoid": dict(reward="avg", beta=2.0, margin_left=0.5, margin_right=0.7, lambda_right=1.0,
                          right_margin="absolute", alpha=0.0),
    "stapo-hinge": dict(reward="avg", beta=2.0, margin_left=0.5, margin_right=0.7, lambda_right=1.0,
                        right_margin="absolute", alpha=0.0),
    "dpo": dict(reward="sum-ref", beta=0.1, label_smoothing=0.0),
    "simpo": dict(reward="avg", beta=2.0, gamma=1.0, label_smoothing=0.0),
    "hinge": dict(reward="sum-ref", beta=0.1),
    "ipo": dict(reward="avg-ref", beta=0.1),
    "cpo": dict(reward="sum", beta=0.1, alpha=1.0, label_smoothing=0.0),
    "orpo": dict(reward="avg", beta=0.1, orpo_lambda=0.1, alpha=1.0),
    "sft": dict(reward="avg", beta=1.0, alpha=1.0),
}


def per_response(s, n, ref, reward):
    """TRL's (policy − reference) log-ratio for one side, averaged by |y| for avg rewards."""
    if reward in ("sum-ref", "avg-ref"):
        s = s - ref
    if reward in ("avg", "avg-ref"):
        s = s / n
    return s


def batch_loss(cfg, s_w, s_l, n_w, n_l, ref_w, ref_l):
    """Returns (batch loss, per-pair preference losses, Δ, z, rewards chosen, rewards rejected)."""
    name, beta = cfg["loss"], cfg["beta"]
    eps = cfg.get("label_smoothing", 0.0)
    chosen = per_response(s_w, n_w, ref_w, cfg["reward"])
    rejected = per_response(s_l, n_l, ref_l, cfg["reward"])
    logits = chosen - rejected  # TRL: pi_logratios − ref_logratios
    z = beta * logits
    if name == "dpo":  # DPOTrainer loss_type="sigmoid"
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif name == "hinge":  # DPOTrainer loss_type="hinge"
        losses = torch.relu(1 - beta * logits)
    elif name == "ipo":  # DPOTrainer loss_type="ipo" (log-probs averaged by length)
        losses = (logits - 1 / (2 * beta)) ** 2
    elif name == "simpo":  # CPOTrainer loss_type="simpo"
        logits = logits - cfg["gamma"] / beta
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif name == "cpo":  # CPOTrainer loss_type="sigmoid"
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif name == "orpo":  # ORPOTrainer.odds_ratio_loss on average log-probs
        a_w, a_l = s_w / n_w, s_l / n_l
        log_odds = (a_w - a_l) - (torch.log1p(-torch.exp(a_w)) - torch.log1p(-torch.exp(a_l)))
        losses = -cfg["orpo_lambda"] * F.logsigmoid(log_odds)
    elif name in ("stapo-sigmoid", "stapo-hinge"):
        ml, mr, lam = cfg["margin_left"], cfg["margin_right"], cfg["lambda_right"]
        d = logits
        if cfg["right_margin"] == "saturate":  # flat above m_r: no gradient flows there
            d = torch.where(d > mr, torch.full_like(d, mr), d)
        if name == "stapo-sigmoid":
            losses = -F.logsigmoid(beta * (d - ml)) - lam * F.logsigmoid(beta * (mr - d))
        else:
            losses = torch.relu(beta * (ml - d)) + lam * torch.relu(beta * (d - mr))
    elif name == "sft":
        losses = torch.zeros_like(z)
    else:
        raise ValueError(name)
    nll = -s_w.sum() / n_w.sum()  # cross-entropy mean over every chosen token of the batch
    loss = losses.mean() + cfg.get("alpha", 0.0) * nll
    return loss, losses, chosen - rejected, z, beta * chosen, beta * rejected


def random_pairs(gen, B, placed, cfg):
    """placed: None (random), "z" (z on [-100, 100]), "delta" (Δ on [-100, 100]) or "band" (Δ uniform on
    [m_l − 1, m_r + 1])."""
    n_w = torch.randint(1, 200, (B,), generator=gen).double()
    n_l = torch.randint(1, 200, (B,), generator=gen).double()
    ref_w = -n_w * torch.empty(B).uniform_(0.2, 3.0, generator=gen)
    ref_l = -n_l * torch.empty(B).uniform_(0.2, 3.0, generator=gen)
    if cfg["loss"] == "orpo":  # odds need average log-probs strictly below 0
        a_w = -torch.empty(B).uniform_(1e-3, 4.0, generator=gen)
        a_l = -torch.empty(B).uniform_(1e-3, 4.0, generator=gen)
        if placed:  # log-odds of about ±60
            a_w[: B // 2], a_l[: B // 2] = -1e-4, -60.0
            a_w[B // 2 :], a_l[B // 2 :] = -60.0, -1e-4
        return a_w * n_w, a_l * n_l, n_w, n_l, ref_w, ref_l
    s_w = -n_w * torch.empty(B).uniform_(0.2, 3.0, generator=gen)
    s_l = -n_l * torch.empty(B).uniform_(0.2, 3.0, generator=gen)
    if placed:  # place Δ by moving S_w
        if placed == "z":
            delta = torch.linspace(-100.0, 100.0, B) / cfg["beta"]
        elif placed == "delta":
            delta = torch.linspace(-100.0, 100.0, B)
        else:
            delta = torch.empty(B).uniform_(cfg["margin_left"] - 1.0, cfg["margin_right"] + 1.0, generator=gen)
        reward = cfg["reward"]
        u_l = per_response(s_l, n_l, ref_l, reward)
        u_w = u_l + delta
        if reward in ("avg", "avg-ref"):
            u_w = u_w * n_w
        s_w = u_w + (ref_w if reward in ("sum-ref", "avg-ref") else 0.0)
    return s_w, s_l, n_w, n_l, ref_w, ref_l


def make_case(name, cfg, gen, B, placed):
    s_w, s_l, n_w, n_l, ref_w, ref_l = random_pairs(gen, B, placed, cfg)
    s_w = s_w.clone().requires_grad_(True)
    s_l = s_l.clone().requires_grad_(True)
    loss, losses, delta, z, r_c, r_r = batch_loss(cfg, s_w, s_l, n_w, n_l, ref_w, ref_l)
    g_w, g_l = torch.autograd.grad(loss, (s_w, s_l), allow_unused=True, materialize_grads=True)
    t = lambda x: [float(v) for v in x.detach()]
    return {
        "name": name,
        "config": cfg,
        "pairs": {"logp_chosen": t(s_w), "logp_rejected": t(s_l), "len_chosen": t(n_w), "len_rejected": t(n_l),
                  "ref_chosen": t(ref_w), "ref_rejected": t(ref_l)},
        "expected": {"batch_loss": float(loss.detach()), "pair_losses": t(losses), "delta": t(delta), "z": t(z),
                     "rewards_chosen": t(r_c),
                     "rewards_rejected": t(r_r), "grad_logp_chosen": t(g_w), "grad_logp_rejected": t(g_l)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/train/losses.json")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20260611)
    configs = [(n, dict(loss=n, **d)) for n, d in DEFAULTS.items()]
    configs += [  # non-default settings each loss must honour
        ("dpo-smoothed", dict(DEFAULTS["dpo"], loss="dpo", label_smoothing=0.1)),
        ("simpo-smoothed", dict(DEFAULTS["simpo"], loss="simpo", label_smoothing=0.2, gamma=0.5)),
        ("stapo-nll-right0.5", dict(DEFAULTS["stapo-sigmoid"], loss="stapo-sigmoid", lambda_right=0.5, alpha=0.3)),
        ("stapo-sum-ref", dict(DEFAULTS["stapo-sigmoid"], loss="stapo-sigmoid", reward="sum-ref", beta=0.1,
                               margin_left=5.0, margin_right=15.0)),
        ("stapo-hinge-avg-ref", dict(DEFAULTS["stapo-hinge"], loss="stapo-hinge", reward="avg-ref", beta=1.0)),
        ("stapo-saturate", dict(DEFAULTS["stapo-sigmoid"], loss="stapo-sigmoid", right_margin="saturate")),
        ("stapo-hinge-saturate", dict(DEFAULTS["stapo-hinge"], loss="stapo-hinge", right_margin="saturate")),
        ("stapo-wide-saturate", dict(DEFAULTS["stapo-sigmoid"], loss="stapo-sigmoid", right_margin="saturate",
                                     margin_left=-1.0, margin_right=3.0, lambda_right=0.3, beta=0.7)),
        ("dpo-avg-ref", dict(DEFAULTS["dpo"], loss="dpo", reward="avg-ref", beta=0.5)),
        ("cpo-avg", dict(DEFAULTS["cpo"], loss="cpo", reward="avg", beta=2.0, alpha=0.5)),
    ]
    cases = []
    for name, cfg in configs:
        cases.append(make_case(name + "/random", cfg, gen, 16, None))
        cases.append(make_case(name + "/extreme", cfg, gen, 16, "z"))
        if cfg["loss"].startswith("stapo"):  # the 0.2-wide band seen from |Δ| up to 100, and Δ around it
            cases.append(make_case(name + "/wide-delta", cfg, gen, 16, "delta"))
            cases.append(make_case(name + "/band", cfg, gen, 16, "band"))
    out = {"generator": "dev/reference/make_loss_fixtures.py", "torch": torch.__version__, "version": 2,
           "cases": cases}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=None)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
