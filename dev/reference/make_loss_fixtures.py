#!/usr/bin/env python3
"""Generates tests/fixtures/train/losses.json (version 3) for tests/train/test_losses.cpp: every preference
loss of docs/stapo-loss.md that TRL has, computed by TRL's OWN loss code, and StaPO (which TRL does not have)
by torch autograd of our spec.

TRL is pinned: 1.16.0 (DPOTrainer._compute_loss; experimental CPOTrainer and ORPOTrainer
get_batch_loss_metrics) for everything it still has, and 0.28.0 (DPOTrainer.get_batch_loss_metrics and
dpo_loss) for what 0.29 removed or changed: label-smoothed sigmoid (cDPO), `rpo_alpha`, bco_pair's running δ.
The two versions need separate environments, so this script runs itself once in each (--part), with the
interpreters given by --python-current and --python-028, and merges the parts. Each part refuses another TRL
version than the pinned one. The versions are recorded in the fixture.

How TRL's code is driven. The trainers are never constructed (that needs a real model and dataset): their
methods are called on a minimal object holding the attributes the methods read, with a fake model. Every
case is a batch of B pairs at the TOKEN level: a prompt of 2..12 tokens shared by both sequences, responses of
1..24 tokens, a per-token log-prob for every predicted token (prompt included), one leaf tensor holding them
all. The fake model returns them masked as TRL's fused LM head does (1.16 DPOTrainer), or returns logits
over a 3-token vocabulary whose log-softmax at the target is exactly that log-prob (CPO, ORPO, DPO 0.28:
logit[target] = lp, logit[next] = log(1 − e^lp), logit[third] = −1e4). So TRL builds its masks, sums,
averages, NLL terms and losses itself, and autograd gives dL/d(log-prob) of every token: for every loss here it
is one value per response (dL/dS) and one per chosen prompt (the ORPO NLL over prompt + response), which the
script asserts before recording them.

Per-pair values come from TRL too: the per-pair `losses` its loss functions return (CPO, ORPO, DPO 0.28), or,
where 1.16 returns only the batch mean, its loss on each pair alone. Rewards per pair likewise (TRL's
logged `rewards/chosen` of the pair alone). The batch loss, gradients and TRL's logged batch metrics come
from one call on the whole batch.

One deviation, in double only: ORPOTrainer.odds_ratio_loss casts the log-probs to float32 (`.float()`, for
bf16 training). While it runs, Tensor.float leaves float64 tensors as they are, so the fixture holds the same
formula in double and the C++ check can be 1e-6 relative. RunningMoments' float32 δ is left as TRL has it.

Inputs: random log-probs (z of either sign, not symmetric), and `extreme` cases with z or the one-sided
rewards placed on asymmetric ranges up to |z| = 100 (by moving the reference sums, or by lowering one
response's log-probs for the reference-free losses, whose log-probs must stay below 0).

Usage (venvs outside the repository):
  python3 -m venv --system-site-packages /work/venv-trl && /work/venv-trl/bin/pip install trl==1.16.0
  python3 -m venv --system-site-packages /work/venv-trl028 && /work/venv-trl028/bin/pip install trl==0.28.0 \
      "transformers>=4.56.2,<5" "datasets>=3,<4.3"   # 0.28 predates transformers 5
  python3 dev/reference/make_loss_fixtures.py --python-current /work/venv-trl/bin/python \
      --python-028 /work/venv-trl028/bin/python [--out tests/fixtures/train/losses.json]
"""
import argparse
import copy
import json
import math
import subprocess
import sys
import types
from collections import defaultdict
from contextlib import contextmanager

PINNED = {"current": "1.16.0", "028": "0.28.0"}
VERSION = 3


def import_torch():
    global torch, F
    import torch
    import torch.nn.functional as F

    torch.set_default_dtype(torch.float64)


# ---------------------------------------------------------------------------------------------------------
# A batch at the token level
# ---------------------------------------------------------------------------------------------------------
class Batch:
    """B pairs: row i = prompt + chosen of pair i, row B + i = prompt + rejected (TRL's concatenated order).
    lp[r, t] is the log-prob of token t + 1 of row r (the leaf everything is differentiated by)."""

    def __init__(self, gen, B):
        self.B = B
        self.prompt_len = [int(torch.randint(2, 13, (1,), generator=gen)) for _ in range(B)]
        self.resp_len = [[int(torch.randint(1, 25, (1,), generator=gen)) for _ in range(2)] for _ in range(B)]
        self.rows = 2 * B
        self.length = [self.prompt_len[r % B] + self.resp_len[r % B][r // B] for r in range(self.rows)]
        self.T = max(self.length)
        ids = torch.randint(1, 3, (self.rows, self.T), generator=gen)  # ids 1 and 2 (0 is padding)
        lp = -torch.empty(self.rows, self.T - 1).uniform_(0.01, 3.0, generator=gen)
        for i in range(B):  # the prompt is the same tokens, with the same log-probs, in both rows of a pair
            P = self.prompt_len[i]
            ids[B + i, :P] = ids[i, :P]
            lp[B + i, : P - 1] = lp[i, : P - 1]
        for r in range(self.rows):
            ids[r, self.length[r] :] = 0
            lp[r, self.length[r] - 1 :] = -1.0  # no token there: any value below 0, masked by TRL
        self.ids = ids
        self.lp = lp
        self.ref = torch.stack([-torch.tensor(self.resp_len[i], dtype=torch.float64)
                                * torch.empty(2).uniform_(0.2, 3.0, generator=gen) for i in range(B)])

    def response_positions(self, r):  # positions of lp that predict response tokens of row r
        return range(self.prompt_len[r % self.B] - 1, self.length[r] - 1)

    def prompt_positions(self, r):  # positions of lp that predict prompt tokens (2nd .. last)
        return range(0, self.prompt_len[r % self.B] - 1)

    def sums(self):
        lp = self.lp.detach()
        S = torch.tensor([float(sum(lp[r, t] for t in self.response_positions(r))) for r in range(self.rows)])
        return S[: self.B], S[self.B :]

    def lower_response(self, r, amount):
        """Lowers row r's response log-probs by `amount` in total (spread evenly): they stay below 0."""
        pos = list(self.response_positions(r))
        with torch.no_grad():
            for t in pos:
                self.lp[r, t] -= amount / len(pos)

    def completion_mask(self):
        m = torch.zeros(self.rows, self.T, dtype=torch.long)
        for r in range(self.rows):
            m[r, self.prompt_len[r % self.B] : self.length[r]] = 1
        return m

    def attention_mask(self):
        m = torch.zeros(self.rows, self.T, dtype=torch.long)
        for r in range(self.rows):
            m[r, : self.length[r]] = 1
        return m

    def pair(self, i):
        """The batch of pair i alone (same tokens and log-probs)."""
        one = copy.copy(self)
        one.B = 1
        keep = [i, self.B + i]
        one.prompt_len = [self.prompt_len[i]]
        one.resp_len = [self.resp_len[i]]
        one.rows = 2
        one.length = [self.length[r] for r in keep]
        one.T = max(one.length)
        one.ids = self.ids[keep, : one.T].clone()
        one.lp = self.lp.detach()[keep, : one.T - 1].clone()
        one.ref = self.ref[i : i + 1].clone()
        return one

    def leaf(self):
        self.lp = self.lp.detach().clone().requires_grad_(True)
        return self.lp

    def record(self):
        """The per-pair inputs of the C++ test (PairLogps)."""
        S_w, S_l = self.sums()
        lp = self.lp.detach()
        prompt = [float(sum(lp[i, t] for t in self.prompt_positions(i))) for i in range(self.B)]
        return {"logp_chosen": S_w.tolist(), "logp_rejected": S_l.tolist(),
                "len_chosen": [float(n[0]) for n in self.resp_len], "len_rejected": [float(n[1]) for n in self.resp_len],
                "ref_chosen": self.ref[:, 0].tolist(), "ref_rejected": self.ref[:, 1].tolist(),
                "prompt_chosen": prompt, "prompt_tokens_chosen": [float(p - 1) for p in self.prompt_len]}

    def gradients(self, grad):
        """dL/dS per response and dL/dP per prompt (chosen rows), from the per-token gradient: one value each."""
        def uniform(values, what):
            values = [float(v) for v in values]
            if not values:
                return 0.0
            spread = max(values) - min(values)
            assert spread <= 1e-12 * (1 + max(abs(v) for v in values)), f"{what}: per-token gradients differ {values}"
            return values[0]

        out = {"grad_logp_chosen": [], "grad_logp_rejected": [], "grad_prompt_chosen": []}
        for i in range(self.B):
            out["grad_logp_chosen"].append(uniform([grad[i, t] for t in self.response_positions(i)], f"chosen {i}"))
            out["grad_logp_rejected"].append(
                uniform([grad[self.B + i, t] for t in self.response_positions(self.B + i)], f"rejected {i}"))
            out["grad_prompt_chosen"].append(uniform([grad[i, t] for t in self.prompt_positions(i)], f"prompt {i}"))
            rejected_prompt = [float(grad[self.B + i, t]) for t in self.prompt_positions(self.B + i)]
            assert all(v == 0.0 for v in rejected_prompt), "no loss reads the rejected row's prompt"
        return out


def fake_logits(input_ids, lp):
    """Logits whose log-softmax at each next token is lp (3-token vocabulary); rows as TRL passes them."""
    rows, T = input_ids.shape
    width = T - 1
    if lp.shape[1] < width:
        lp = torch.cat([lp, torch.full((rows, width - lp.shape[1]), -1.0)], 1)
    lp = lp[:, :width]
    tgt = input_ids[:, 1:]
    logits = torch.full((rows, width, 3), -1e4)
    logits = logits.scatter(2, tgt.unsqueeze(2), lp.unsqueeze(2))
    other = torch.where(lp < -0.6931471805599453, torch.log1p(-torch.exp(lp)), torch.log(-torch.expm1(lp)))
    logits = logits.scatter(2, ((tgt + 1) % 3).unsqueeze(2), other.unsqueeze(2))
    return torch.cat([logits, torch.zeros(rows, 1, 3)], 1)


class Accelerator:  # single process: gathers are the identity
    device = "cpu"
    use_distributed = False
    is_main_process = True

    def gather(self, x):
        return x

    gather_for_metrics = gather


def as_float(metrics):
    return {k: float(v) for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------------------
# TRL 1.16
# ---------------------------------------------------------------------------------------------------------
def trl116_dpo(batch, loss_types, loss_weights, beta, label_smoothing):
    """DPOTrainer._compute_loss with precomputed reference log-probs. Returns (loss, logged metrics)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    lp = batch.lp

    class FusedOutput:  # what add_fused_lm_head's forward returns: masked per-token fields
        def __init__(self, labels):
            mask = (labels[:, 1:] != -100).to(lp.dtype)
            self.log_probs = lp[:, : labels.shape[1] - 1] * mask
            self.entropy = torch.zeros_like(mask)
            self.mean_logits = torch.zeros_like(mask)
            self.is_top1 = torch.zeros_like(mask, dtype=torch.bool)

    def model(input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, **kwargs):
        assert fused_lm_head
        return FusedOutput(labels)

    fake = types.SimpleNamespace(
        accelerator=Accelerator(), model=types.SimpleNamespace(training=True), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=loss_weights,
        beta=beta, label_smoothing=label_smoothing, use_weighting=False, _metrics={"train": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1, args=types.SimpleNamespace())
    inputs = {"input_ids": batch.ids, "attention_mask": batch.attention_mask(),
              "completion_mask": batch.completion_mask(), "ref_chosen_logps": batch.ref[:, 0],
              "ref_rejected_logps": batch.ref[:, 1]}
    loss = DPOTrainer._compute_loss(fake, model, inputs, False)
    metrics = {k: v[-1] for k, v in fake._metrics["train"].items()
               if k.startswith(("rewards/", "logps/"))}
    return loss, metrics


def trl116_dpo_case(name, cfg, batch, trl):
    """trl: dict(loss_types, loss_weights, beta, label_smoothing); the per-pair values are those of the
    preference types alone (without "sft", whose per-pair value is not a part of the batch mean)."""
    pref_types = [t for t in trl["loss_types"] if t != "sft"]
    pairs, rewards_c, rewards_r = [], [], []
    for i in range(batch.B):
        one = batch.pair(i)
        if pref_types:
            w = [trl["loss_weights"][trl["loss_types"].index(t)] for t in pref_types]
            loss, m = trl116_dpo(one, pref_types, w, trl["beta"], trl["label_smoothing"])
            pairs.append(float(loss))
        else:
            _, m = trl116_dpo(one, trl["loss_types"], trl["loss_weights"], trl["beta"], trl["label_smoothing"])
        rewards_c.append(float(m["rewards/chosen"]))
        rewards_r.append(float(m["rewards/rejected"]))
    batch.leaf()
    loss, metrics = trl116_dpo(batch, trl["loss_types"], trl["loss_weights"], trl["beta"], trl["label_smoothing"])
    (grad,) = torch.autograd.grad(loss, batch.lp)
    expected = {"batch_loss": float(loss.detach()), "rewards_chosen": rewards_c, "rewards_rejected": rewards_r,
                "metrics": as_float(metrics), **batch.gradients(grad)}
    if pref_types:
        expected["pair_losses"] = pairs
    return case(name, cfg, batch, expected, "1.16 DPOTrainer._compute_loss", trl)


def experimental_fake(trainer_cls, **attrs):
    fake = types.SimpleNamespace(accelerator=Accelerator(), is_encoder_decoder=False, aux_loss_enabled=False,
                                 pad_token_id=0, padding_value=0, **attrs)
    fake.concatenated_inputs = trainer_cls.concatenated_inputs
    fake.get_batch_logps = trainer_cls.get_batch_logps
    fake.concatenated_forward = types.MethodType(trainer_cls.concatenated_forward, fake)
    return fake


def experimental_batch(batch):
    """CPO/ORPO tokenized batch: full sequences, labels with the prompt and padding at −100."""
    ids, attention = batch.ids, batch.attention_mask()
    labels = torch.where(batch.completion_mask() == 1, ids, torch.full_like(ids, -100))
    B = batch.B
    return {"chosen_input_ids": ids[:B], "chosen_attention_mask": attention[:B], "chosen_labels": labels[:B],
            "rejected_input_ids": ids[B:], "rejected_attention_mask": attention[B:], "rejected_labels": labels[B:]}


def logits_model(batch):
    lp = batch.lp

    def model(input_ids, attention_mask=None, **kwargs):
        return types.SimpleNamespace(logits=fake_logits(input_ids, lp))

    return model


@contextmanager
def float_keeps_double():
    original = torch.Tensor.float
    torch.Tensor.float = lambda self, *a, **k: self if self.dtype == torch.float64 else original(self, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.float = original


def trl116_cpo_case(name, cfg, batch, trl):
    """CPOTrainer (simpo, sigmoid, hinge): per-pair cpo_loss on TRL's log-probs, the batch loss and metrics
    from get_batch_loss_metrics."""
    from trl.experimental.cpo import CPOTrainer

    fake = experimental_fake(CPOTrainer, loss_type=trl["loss_type"], beta=trl["beta"], alpha=0.0,
                             simpo_gamma=trl.get("simpo_gamma", 0.5), cpo_alpha=trl["cpo_alpha"],
                             label_smoothing=trl["label_smoothing"])
    fake.cpo_loss = types.MethodType(CPOTrainer.cpo_loss, fake)
    tb = experimental_batch(batch)
    batch.leaf()
    chosen, rejected = fake.concatenated_forward(logits_model(batch), tb)[:2]
    losses, r_c, r_r = fake.cpo_loss(chosen, rejected)
    loss, metrics = CPOTrainer.get_batch_loss_metrics(fake, logits_model(batch), tb)
    (grad,) = torch.autograd.grad(loss, batch.lp)
    expected = {"batch_loss": float(loss.detach()), "pair_losses": losses.tolist(), "rewards_chosen": r_c.tolist(),
                "rewards_rejected": r_r.tolist(), "metrics": as_float(metrics), **batch.gradients(grad)}
    return case(name, cfg, batch, expected, "1.16 experimental CPOTrainer.get_batch_loss_metrics", trl)


def trl116_orpo_case(name, cfg, batch, trl):
    """ORPOTrainer: the NLL of the chosen sequence over prompt + response (its concatenated_forward)."""
    from trl.experimental.orpo import ORPOTrainer

    fake = experimental_fake(ORPOTrainer, beta=trl["beta"])
    fake.odds_ratio_loss = types.MethodType(ORPOTrainer.odds_ratio_loss, fake)
    tb = experimental_batch(batch)
    batch.leaf()
    with float_keeps_double():
        chosen, rejected = fake.concatenated_forward(logits_model(batch), tb)[:2]
        losses, r_c, r_r, _, _ = fake.odds_ratio_loss(chosen, rejected)
        loss, metrics = ORPOTrainer.get_batch_loss_metrics(fake, logits_model(batch), tb)
    (grad,) = torch.autograd.grad(loss, batch.lp)
    # ORPO's `losses` are β·log σ(log_odds), subtracted from the NLL: the preference term is their negative
    expected = {"batch_loss": float(loss.detach()), "pair_losses": (-losses).tolist(), "rewards_chosen": r_c.tolist(),
                "rewards_rejected": r_r.tolist(), "metrics": as_float(metrics), **batch.gradients(grad)}
    return case(name, cfg, batch, expected, "1.16 experimental ORPOTrainer.get_batch_loss_metrics", trl)


# ---------------------------------------------------------------------------------------------------------
# TRL 0.28
# ---------------------------------------------------------------------------------------------------------
def trl028_fake(trl):
    from trl.trainer.dpo_config import FDivergenceType
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.utils import RunningMoments

    args = types.SimpleNamespace(rpo_alpha=trl.get("rpo_alpha"), ld_alpha=None, use_liger_kernel=False,
                                 discopop_tau=0.05)
    fake = types.SimpleNamespace(
        accelerator=Accelerator(), args=args, reference_free=False, f_divergence_type=FDivergenceType.REVERSE_KL,
        f_divergence_params=None, beta=trl["beta"], label_smoothing=trl["label_smoothing"],
        loss_type=trl["loss_types"], loss_weights=None, is_encoder_decoder=False, aux_loss_enabled=False,
        use_weighting=False, padding_free=False, use_logits_to_keep=False, max_length=None, pad_token_id=0,
        running=RunningMoments(Accelerator()))
    fake.concatenated_inputs = DPOTrainer.concatenated_inputs
    fake.concatenated_forward = types.MethodType(DPOTrainer.concatenated_forward, fake)
    fake.dpo_loss = types.MethodType(DPOTrainer.dpo_loss, fake)
    return fake


def trl028_batch(batch):
    """DPO 0.28's collated batch: prompts left-padded, completions right-padded, precomputed references."""
    B = batch.B
    P = max(batch.prompt_len)
    C = max(max(n) for n in batch.resp_len)
    out = {"prompt_input_ids": torch.zeros(B, P, dtype=torch.long), "prompt_attention_mask": torch.zeros(B, P, dtype=torch.long)}
    for side, name in ((0, "chosen"), (1, "rejected")):
        out[f"{name}_input_ids"] = torch.zeros(B, C, dtype=torch.long)
        out[f"{name}_attention_mask"] = torch.zeros(B, C, dtype=torch.long)
    for i in range(B):
        p = batch.prompt_len[i]
        out["prompt_input_ids"][i, P - p :] = batch.ids[i, :p]
        out["prompt_attention_mask"][i, P - p :] = 1
        for side, name in ((0, "chosen"), (1, "rejected")):
            n = batch.resp_len[i][side]
            out[f"{name}_input_ids"][i, :n] = batch.ids[side * B + i, p : p + n]
            out[f"{name}_attention_mask"][i, :n] = 1
    out["ref_chosen_logps"] = batch.ref[:, 0]
    out["ref_rejected_logps"] = batch.ref[:, 1]
    return out


def trl028_case(name, cfg, batch, trl, fake=None):
    """get_batch_loss_metrics for the batch loss, gradient and metrics; dpo_loss (from the same running-moments
    state, for bco_pair) for the per-pair values. Returns the case and the fake trainer (its δ goes on)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    fake = fake or trl028_fake(trl)
    tb = trl028_batch(batch)
    batch.leaf()
    before = copy.deepcopy(fake.running)
    out = fake.concatenated_forward(logits_model(batch), tb)
    per_pair = copy.copy(fake)
    per_pair.running = before
    per_pair.dpo_loss = types.MethodType(DPOTrainer.dpo_loss, per_pair)
    losses, r_c, r_r = per_pair.dpo_loss(out["chosen_logps"], out["rejected_logps"], tb["ref_chosen_logps"],
                                         tb["ref_rejected_logps"], trl["loss_types"][0], out)
    loss, metrics = DPOTrainer.get_batch_loss_metrics(fake, logits_model(batch), tb)
    (grad,) = torch.autograd.grad(loss, batch.lp)
    assert per_pair.running.mean == fake.running.mean
    expected = {"batch_loss": float(loss.detach()), "pair_losses": losses.tolist(), "rewards_chosen": r_c.tolist(),
                "rewards_rejected": r_r.tolist(), "metrics": as_float(metrics), **batch.gradients(grad)}
    if trl["loss_types"][0] == "bco_pair":
        expected["bco_delta"] = float(fake.running.mean)  # δ after this batch's update: the one its loss used
    return case(name, cfg, batch, expected, "0.28 DPOTrainer.get_batch_loss_metrics", trl), fake


# ---------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------
def case(name, cfg, batch, expected, source, trl):
    return {"name": name, "config": cfg, "source": source, "trl": trl, "pairs": batch.record(),
            "expected": expected}


def u_of(cfg, S, n, ref):
    """The reward's per-response value u (docs/stapo-loss.md)."""
    r = cfg["reward"]
    u = S - ref if r in ("sum-ref", "avg-ref") else S
    return u / n if r in ("avg", "avg-ref") else u


def place(batch, cfg, gen, one_sided):
    """extreme inputs: z = β·Δ on an asymmetric range up to 100 (or β·u of each side, for the losses of the
    two rewards separately). With a reference the reference sums move; without, one response is lowered."""
    B, beta = batch.B, cfg["beta"]
    z = torch.cat([torch.empty(B // 3).uniform_(-100, -15, generator=gen),
                   torch.empty(B - B // 3).uniform_(-10, 45, generator=gen)])
    z = z[torch.randperm(B, generator=gen)]
    S_w, S_l = batch.sums()
    n = torch.tensor(batch.resp_len, dtype=torch.float64)
    avg = cfg["reward"] in ("avg", "avg-ref")
    if cfg["reward"] in ("sum-ref", "avg-ref"):
        if one_sided:  # β·u_w and β·u_l each on asymmetric ranges
            zl = torch.empty(B).uniform_(-70, 30, generator=gen)
            targets = (z / 2 / beta, zl / beta)
        else:
            u_l = u_of(cfg, S_l, n[:, 1], batch.ref[:, 1])
            targets = (u_l + z / beta, u_l)
        for side, u in enumerate(targets):
            S = (S_w, S_l)[side]
            batch.ref[:, side] = S - (u * n[:, side] if avg else u)
        return
    for i in range(B):  # reference-free: Δ reaches z/β by lowering one response
        u_w = float(u_of(cfg, S_w[i], n[i, 0], 0))
        u_l = float(u_of(cfg, S_l[i], n[i, 1], 0))
        move = float(z[i]) / beta - (u_w - u_l)
        side = 1 if move > 0 else 0
        batch.lower_response(i + side * B, abs(move) * (float(n[i, side]) if avg else 1.0))


def orpo_extreme(batch):
    """Average log-probs near 0 against very low ones: log-odds of about ±60, both signs, unequal counts."""
    B = batch.B
    for i in range(B):
        hi, lo = (0, 1) if i % 3 else (1, 0)
        for side, target in ((hi, -1e-4), (lo, -60.0)):
            r = i + side * B
            pos = list(batch.response_positions(r))
            with torch.no_grad():
                for t in pos:
                    batch.lp[r, t] = target


# Our configurations (as the C++ LossConfig reads them) and the TRL call that computes the same loss.
def current_cases(gen):
    dpo = dict(reward="sum-ref", beta=0.1)
    dpo_trl = lambda types_, beta=0.1, eps=0.0, weights=None: dict(
        loss_types=types_, loss_weights=weights or [1.0] * len(types_), beta=beta, label_smoothing=eps)
    table = [
        ("dpo", dict(loss="dpo", **dpo), dpo_trl(["sigmoid"])),
        ("dpo-avg-ref", dict(loss="dpo", reward="avg-ref", beta=0.5), dpo_trl(["sigmoid_norm"], beta=0.5)),
        ("rpo", dict(loss="dpo", **dpo, alpha=0.5), dpo_trl(["sigmoid", "sft"], weights=[1.0, 0.5])),
        ("hinge", dict(loss="hinge", **dpo), dpo_trl(["hinge"])),
        ("ipo", dict(loss="ipo", reward="avg-ref", beta=0.1), dpo_trl(["ipo"])),
        ("ipo-beta0.5", dict(loss="ipo", reward="avg-ref", beta=0.5), dpo_trl(["ipo"], beta=0.5)),
        ("robust", dict(loss="robust", **dpo, label_smoothing=0.1), dpo_trl(["robust"], eps=0.1)),
        ("robust-eps0.3", dict(loss="robust", reward="sum-ref", beta=0.3, label_smoothing=0.3),
         dpo_trl(["robust"], beta=0.3, eps=0.3)),
        ("exo_pair", dict(loss="exo_pair", **dpo, label_smoothing=1e-3), dpo_trl(["exo_pair"], eps=1e-3)),
        ("exo_pair-eps0.2", dict(loss="exo_pair", **dpo, label_smoothing=0.2), dpo_trl(["exo_pair"], eps=0.2)),
        ("nca_pair", dict(loss="nca_pair", **dpo), dpo_trl(["nca_pair"])),
        ("bco_pair-delta0", dict(loss="bco_pair", **dpo, bco_delta=0.0), dpo_trl(["bco_pair"])),
        ("sppo_hard", dict(loss="sppo_hard", **dpo), dpo_trl(["sppo_hard"])),
        ("sppo_hard-beta1", dict(loss="sppo_hard", reward="sum-ref", beta=1.0), dpo_trl(["sppo_hard"], beta=1.0)),
        ("apo_zero", dict(loss="apo_zero", **dpo), dpo_trl(["apo_zero"])),
        ("apo_down", dict(loss="apo_down", **dpo), dpo_trl(["apo_down"])),
        ("sft", dict(loss="sft", **dpo, alpha=1.0), dpo_trl(["sft"])),
        ("simpo", dict(loss="simpo", reward="avg", beta=2.0, gamma=1.0),
         dict(loss_type="simpo", beta=2.0, simpo_gamma=1.0, cpo_alpha=0.0, label_smoothing=0.0)),
        ("simpo-smoothed", dict(loss="simpo", reward="avg", beta=2.5, gamma=0.5, label_smoothing=0.2),
         dict(loss_type="simpo", beta=2.5, simpo_gamma=0.5, cpo_alpha=0.0, label_smoothing=0.2)),
        ("cpo", dict(loss="cpo", reward="sum", beta=0.1, alpha=1.0),
         dict(loss_type="sigmoid", beta=0.1, cpo_alpha=1.0, label_smoothing=0.0)),
        ("cpo-smoothed", dict(loss="cpo", reward="sum", beta=0.1, alpha=0.7, label_smoothing=0.15),
         dict(loss_type="sigmoid", beta=0.1, cpo_alpha=0.7, label_smoothing=0.15)),
        ("cpo-simpo", dict(loss="cpo", reward="avg", beta=2.0, alpha=0.5, gamma=0.0),
         dict(loss_type="simpo", beta=2.0, simpo_gamma=0.0, cpo_alpha=0.5, label_smoothing=0.0)),
        ("hinge-sum", dict(loss="hinge", reward="sum", beta=0.1),
         dict(loss_type="hinge", beta=0.1, cpo_alpha=0.0, label_smoothing=0.0)),
        ("orpo", dict(loss="orpo", reward="avg", beta=0.1, alpha=1.0, nll_span="prompt+response"),
         dict(beta=0.1)),
        ("orpo-lambda0.5", dict(loss="orpo", reward="avg", beta=0.5, alpha=1.0, nll_span="prompt+response"),
         dict(beta=0.5)),
    ]
    one_sided = {"nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down"}
    cases = []
    for name, cfg, trl in table:
        for kind in ("random", "extreme"):
            batch = Batch(gen, 16 if kind == "random" else 12)
            if kind == "extreme":
                if cfg["loss"] == "orpo":
                    orpo_extreme(batch)
                else:
                    place(batch, cfg, gen, cfg["loss"] in one_sided)
            full = f"{name}/{kind}"
            if cfg["loss"] == "orpo":
                cases.append(trl116_orpo_case(full, cfg, batch, trl))
            elif "loss_type" in trl:
                cases.append(trl116_cpo_case(full, cfg, batch, trl))
            else:
                cases.append(trl116_dpo_case(full, cfg, batch, trl))
    return cases


def old_cases(gen):
    dpo = dict(reward="sum-ref", beta=0.1)
    cases = []
    table = [
        ("cdpo", dict(loss="cdpo", **dpo, label_smoothing=0.1), dict(loss_types=["sigmoid"], beta=0.1, label_smoothing=0.1)),
        ("cdpo-eps0.3", dict(loss="cdpo", reward="sum-ref", beta=0.5, label_smoothing=0.3),
         dict(loss_types=["sigmoid"], beta=0.5, label_smoothing=0.3)),
        ("rpo-0.28", dict(loss="dpo", **dpo, alpha=0.7), dict(loss_types=["sigmoid"], beta=0.1, label_smoothing=0.0, rpo_alpha=0.7)),
    ]
    for name, cfg, trl in table:
        for kind in ("random", "extreme"):
            batch = Batch(gen, 16 if kind == "random" else 12)
            if kind == "extreme":
                place(batch, cfg, gen, False)
            cases.append(trl028_case(f"{name}/{kind}", cfg, batch, trl)[0])
    # bco_pair: δ runs over four batches of one trainer; each case records the δ its loss used.
    trl = dict(loss_types=["bco_pair"], beta=0.1, label_smoothing=0.0)
    fake = None
    for step in range(4):
        batch = Batch(gen, 8 + 2 * step)
        if step % 2:
            place(batch, dict(loss="bco_pair", **dpo), gen, True)
        c, fake = trl028_case(f"bco_pair/step{step + 1}", dict(loss="bco_pair", **dpo), batch, trl, fake)
        c["config"] = dict(c["config"], bco_delta=c["expected"]["bco_delta"])
        cases.append(c)
    return cases


# ---------------------------------------------------------------------------------------------------------
# StaPO: torch autograd of our spec (TRL has no StaPO)
# ---------------------------------------------------------------------------------------------------------
STAPO = dict(reward="avg", beta=2.0, margin_left=0.5, margin_right=0.7, lambda_right=1.0, right_margin="absolute",
             alpha=0.0)


def stapo_case(name, cfg, gen, placed):
    batch = Batch(gen, 16)
    B = batch.B
    S_w, S_l = batch.sums()
    n = torch.tensor(batch.resp_len, dtype=torch.float64)
    if placed:  # Δ placed by moving the reference sums (ref rewards) or lowering a response (avg/sum)
        if placed == "delta":
            delta = torch.cat([torch.empty(B // 4).uniform_(-100, -5, generator=gen),
                               torch.empty(B - B // 4).uniform_(-2, 60, generator=gen)])
        else:  # around the band
            delta = torch.empty(B).uniform_(cfg["margin_left"] - 1.0, cfg["margin_right"] + 1.0, generator=gen)
        place_delta(batch, cfg, delta)
        S_w, S_l = batch.sums()
    batch.leaf()
    S_w, S_l = [torch.stack([sum(batch.lp[r, t] for t in batch.response_positions(r)) for r in rows])
                for rows in (range(B), range(B, 2 * B))]
    ref_w, ref_l = batch.ref[:, 0], batch.ref[:, 1]
    u_w, u_l = u_of(cfg, S_w, n[:, 0], ref_w), u_of(cfg, S_l, n[:, 1], ref_l)
    d = u_w - u_l
    ml, mr, lam, beta = cfg["margin_left"], cfg["margin_right"], cfg["lambda_right"], cfg["beta"]
    if cfg["right_margin"] == "saturate":  # flat above m_r: no gradient flows there
        d = torch.where(d > mr, torch.full_like(d, mr), d)
    if cfg["loss"] == "stapo-sigmoid":
        losses = -F.logsigmoid(beta * (d - ml)) - lam * F.logsigmoid(beta * (mr - d))
    else:
        losses = torch.relu(beta * (ml - d)) + lam * torch.relu(beta * (d - mr))
    nll = -S_w.sum() / n[:, 0].sum()  # TRL's batch token mean of the chosen responses
    loss = losses.mean() + cfg.get("alpha", 0.0) * nll
    (grad,) = torch.autograd.grad(loss, batch.lp)
    # the rewards as TRL's DPOTrainer logs them with a reference (summed log-ratios), else β·u as its CPOTrainer
    r_w, r_l = (S_w - ref_w, S_l - ref_l) if cfg["reward"] in ("sum-ref", "avg-ref") else (u_w, u_l)
    expected = {"batch_loss": float(loss.detach()), "pair_losses": losses.tolist(),
                "rewards_chosen": (beta * r_w).tolist(), "rewards_rejected": (beta * r_l).tolist(),
                "delta": (u_w - u_l).tolist(), **batch.gradients(grad)}
    return case(name, cfg, batch, expected, "torch autograd of docs/stapo-loss.md", None)


def place_delta(batch, cfg, delta):
    B = batch.B
    S_w, S_l = batch.sums()
    n = torch.tensor(batch.resp_len, dtype=torch.float64)
    avg = cfg["reward"] in ("avg", "avg-ref")
    if cfg["reward"] in ("sum-ref", "avg-ref"):
        u_l = u_of(cfg, S_l, n[:, 1], batch.ref[:, 1])
        u_w = u_l + delta
        batch.ref[:, 0] = S_w - (u_w * n[:, 0] if avg else u_w)
        return
    for i in range(B):
        move = float(delta[i]) - float(u_of(cfg, S_w[i], n[i, 0], 0) - u_of(cfg, S_l[i], n[i, 1], 0))
        side = 1 if move > 0 else 0
        batch.lower_response(i + side * B, abs(move) * (float(n[i, side]) if avg else 1.0))


def stapo_cases(gen):
    configs = [
        ("stapo-sigmoid", dict(STAPO, loss="stapo-sigmoid")),
        ("stapo-hinge", dict(STAPO, loss="stapo-hinge")),
        ("stapo-nll-right0.5", dict(STAPO, loss="stapo-sigmoid", lambda_right=0.5, alpha=0.3)),
        ("stapo-sum-ref", dict(STAPO, loss="stapo-sigmoid", reward="sum-ref", beta=0.1, margin_left=5.0,
                               margin_right=15.0)),
        ("stapo-hinge-avg-ref", dict(STAPO, loss="stapo-hinge", reward="avg-ref", beta=1.0)),
        ("stapo-saturate", dict(STAPO, loss="stapo-sigmoid", right_margin="saturate")),
        ("stapo-hinge-saturate", dict(STAPO, loss="stapo-hinge", right_margin="saturate")),
        ("stapo-wide-saturate", dict(STAPO, loss="stapo-sigmoid", right_margin="saturate", margin_left=-1.0,
                                     margin_right=3.0, lambda_right=0.3, beta=0.7)),
    ]
    cases = []
    for name, cfg in configs:
        for kind in (None, "delta", "band"):
            cases.append(stapo_case(f"{name}/{kind or 'random'}", cfg, gen, kind))
    return cases


# ---------------------------------------------------------------------------------------------------------
def run_part(part):
    import_torch()
    import trl
    import transformers

    if trl.__version__ != PINNED[part]:
        sys.exit(f"part {part} needs trl=={PINNED[part]}, this interpreter has {trl.__version__}")
    if part == "current":
        gen = torch.Generator().manual_seed(20261130)
        cases = current_cases(gen) + stapo_cases(gen)
    else:
        gen = torch.Generator().manual_seed(20261131)
        cases = old_cases(gen)
    versions = {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    for c in cases:
        c["versions"] = versions
    json.dump(cases, sys.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/train/losses.json")
    ap.add_argument("--python-current", default=sys.executable, help=f"an interpreter with trl=={PINNED['current']}")
    ap.add_argument("--python-028", required=False, help=f"an interpreter with trl=={PINNED['028']}")
    ap.add_argument("--part", choices=sorted(PINNED), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        run_part(args.part)
        return
    if not args.python_028:
        ap.error("--python-028 is required (an interpreter with trl==0.28.0)")
    cases = []
    for part, python in (("current", args.python_current), ("028", args.python_028)):
        out = subprocess.run([python, __file__, "--part", part], check=True, stdout=subprocess.PIPE).stdout
        cases += json.loads(out)
    fixture = {"generator": "dev/reference/make_loss_fixtures.py", "version": VERSION,
               "trl": {"current": PINNED["current"], "0.28": PINNED["028"]}, "cases": cases}
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=None)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
