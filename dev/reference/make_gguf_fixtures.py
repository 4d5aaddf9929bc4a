#!/usr/bin/env python3
"""Fixtures for GGUF import (tests/model/test_gguf.cpp) and the real-model suite (tests/model/test_real_model.cpp).

  pip install torch transformers gguf accelerate tokenizers numpy safetensors
  python3 dev/reference/make_gguf_fixtures.py [--part tiny|real|all]
  python3 dev/reference/make_gguf_fixtures.py --check-converted DIR
      # DIR = ./model_convert --in ../shared/.../SmolLM2-135M-Instruct.Q4_1.gguf --out DIR: transformers loads our
      # directory (model and tokenizer); its weights equal its own GGUF load bit for bit, its tokenizer gives the
      # shared hf-tokenizer's ids on the corpus, its chat template renders as the shared one. Prints the numbers.

tiny (tests/fixtures/gguf/, written with the `gguf` package, numbers from it and from transformers):
  types.gguf + types_expected.safetensors: one (3, 64) tensor per type F32/F16/BF16/Q8_0/Q4_0/Q4_1 quantised from
    fresh random values; expected = gguf.quants.dequantize of the stored bytes (what transformers loads).
  unsupported_type.gguf: a Q5_0 tensor; unsupported_arch.gguf: general.architecture "qwen2".
  tiny_llama.gguf: a random 2-layer Llama (hidden 64, 4 heads / 2 KV heads, head dim 16, FFN 96, untied),
    written the way llama.cpp's converter writes one (llama.cpp names, attn_q/attn_k rows permuted) with every
    supported type (token_embd Q8_0, attn_q Q4_0, attn_k Q4_1, attn_v F16, attn_output BF16, FFN Q4_1/Q8_0/Q4_0,
    norms F32, output Q8_0), and a small byte-level BPE vocabulary (trained here with `tokenizers`) with control
    and user-defined tokens, tokenizer.ggml.pre "llama-bpe", add_bos_token true and a chat template.
  tiny_llama_expected.safetensors: transformers' state dict of from_pretrained(gguf_file=tiny_llama.gguf).
  tiny_llama_tokenizer.json: version, texts, the ids transformers' GGUF tokenizer gives (its default encode, so
    with BOS), and id sequences with their decoding (skip_special_tokens=False).

real (tests/fixtures/real_model/smollm2.json; needs ../shared/models/smollm2-135m-instruct, or $STAPO_SHARED):
  tensors: per HF tensor of transformers' GGUF-loaded model (fp32): shape, an exact checksum
    Σ_i bits(x_i)·(2i+1) mod 2^64 over the row-major float32 bit patterns, and 8 sampled values;
  tokenizer: HF `tokenizers` ids of every string of tests/fixtures/tokenizer/corpus.jsonl with the shared
    hf-tokenizer/tokenizer.json (the file transformers writes for this GGUF);
  generate: plain-text prompts, their ids, and transformers' greedy continuation (16 tokens, no stop id);
  score: (prompt, chosen, rejected) id lists and, per response token, transformers' log p(token) and the entropy
    of the next-token distribution (fp32, eager attention).
"""
import argparse
import json
import os
import random
import sys
import tempfile

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE_VERSION = 1
SEED = 19


def llama_cpp_permute(w, n_head):
    """llama.cpp's converter: within each head, interleave the two rotary halves (HF row j·D/2+i → 2i+j)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_quantised(writer, name, values, qtype):
    """values (rows, cols) float32 → the tensor as stored (GGUF shape is reversed by the writer)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == Q.F32:
        writer.add_tensor(name, values)
    elif qtype == Q.F16:
        writer.add_tensor(name, values.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)


def write_types(out, rng):
    from safetensors.numpy import save_file
    path = os.path.join(out, "types.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    expected = {}
    for qtype in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1):
        values = rng.standard_normal((3, 64)).astype(np.float32)
        values[1] *= 40  # a row of large values, and a constant block (d = 0 for Q4_1)
        values[2, :32] = 0.25
        stored = values.astype(np.float16) if qtype == Q.F16 else (
            values if qtype == Q.F32 else gguf.quants.quantize(values, qtype))
        add_quantised(writer, "t_" + qtype.name, values, qtype)
        expected["t_" + qtype.name] = gguf.quants.dequantize(stored, qtype).astype(np.float32).reshape(3, 64)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, os.path.join(out, "types_expected.safetensors"))

    writer = gguf.GGUFWriter(os.path.join(out, "unsupported_type.gguf"), "llama")
    add_quantised(writer, "t_Q5_0", rng.standard_normal((2, 32)).astype(np.float32), Q.Q5_0)
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()

    writer = gguf.GGUFWriter(os.path.join(out, "unsupported_arch.gguf"), "qwen2")
    writer.add_block_count(1)
    add_quantised(writer, "token_embd.weight", rng.standard_normal((8, 32)).astype(np.float32), Q.F32)
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()


TINY_CORPUS = [
    "the quick brown fox jumps over the lazy dog", "The Quick Brown Fox!", "hello world, hello there",
    "numbers 12345 and 3.14159 and 2026", "don't won't I'll they're", "naïve café – déjà vu",
    "def f(x):\n    return x * 2\n", "tabs\tand\nnewlines\r\n", "日本語のテキスト", "emoji 🎉🙂",
]
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|odd control|>"]  # the last one is not byte-level
USER_DEFINED = ["<think>"]


def tiny_vocab():
    """A byte-level BPE trained on TINY_CORPUS: (tokens, token types, merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TINY_CORPUS * 20, trainer)
    model = json.loads(tok.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    tokens = CONTROL + [t for t, _ in learned] + USER_DEFINED + ["raw space token"]
    types = [3] * len(CONTROL) + [1] * len(learned) + [4] * len(USER_DEFINED) + [1]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return tokens, types, merges


def write_tiny_llama(out, rng):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokens, types, merges = tiny_vocab()
    V, C, L, H, Hkv, D, F = len(tokens), 64, 2, 4, 2, 16, 96
    torch.manual_seed(SEED)
    config = LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
                         num_key_value_heads=Hkv, head_dim=D, rms_norm_eps=1e-5, rope_theta=10000.0,
                         max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).float()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for name in sd:  # norms away from 1, so a mix-up of the two norms would show
        if name.endswith("norm.weight"):
            sd[name] = (1 + 0.1 * rng.standard_normal(sd[name].shape)).astype(np.float32)

    path = os.path.join(out, "tiny_llama.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny test llama")
    w.add_block_count(L); w.add_context_length(256); w.add_embedding_length(C); w.add_feed_forward_length(F)
    w.add_head_count(H); w.add_head_count_kv(Hkv); w.add_rope_dimension_count(D); w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5); w.add_vocab_size(V); w.add_file_type(2)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens); w.add_token_types(types); w.add_token_merges(merges)
    w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_pad_token_id(0); w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    add_quantised(w, "token_embd.weight", sd["model.embed_tokens.weight"], Q.Q8_0)
    kinds = {"attn_q": ("self_attn.q_proj", Q.Q4_0), "attn_k": ("self_attn.k_proj", Q.Q4_1),
             "attn_v": ("self_attn.v_proj", Q.F16), "attn_output": ("self_attn.o_proj", Q.BF16),
             "ffn_gate": ("mlp.gate_proj", Q.Q4_1), "ffn_up": ("mlp.up_proj", Q.Q8_0),
             "ffn_down": ("mlp.down_proj", Q.Q4_0), "attn_norm": ("input_layernorm", Q.F32),
             "ffn_norm": ("post_attention_layernorm", Q.F32)}
    for layer in range(L):
        for gname, (hname, qtype) in kinds.items():
            values = sd[f"model.layers.{layer}.{hname}.weight"]
            if gname == "attn_q":
                values = llama_cpp_permute(values, H)
            if gname == "attn_k":
                values = llama_cpp_permute(values, Hkv)
            add_quantised(w, f"blk.{layer}.{gname}.weight", values, qtype)
    add_quantised(w, "output_norm.weight", sd["model.norm.weight"], Q.F32)
    add_quantised(w, "output.weight", sd["lm_head.weight"], Q.Q8_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="tiny_llama.gguf", dtype=torch.float32)
    expected = {k: v.contiguous() for k, v in loaded.state_dict().items()}
    save_file(expected, os.path.join(out, "tiny_llama_expected.safetensors"))
    # transformers' q_proj is the HF original up to Q4_0's rounding (at most 1/8 of a block's largest value, with Q4_0's clipping),
    # and far from the original still permuted: the permutation was undone.
    q, orig = expected["model.layers.0.self_attn.q_proj.weight"].numpy(), sd["model.layers.0.self_attn.q_proj.weight"]
    err, err_permuted = np.abs(q - orig).max(), np.abs(q - llama_cpp_permute(orig, H)).max()
    assert err <= np.abs(orig).max() / 8 + 1e-6 and err < err_permuted / 2, (err, err_permuted)

    tok = AutoTokenizer.from_pretrained(out, gguf_file="tiny_llama.gguf")
    r = random.Random(SEED)
    alphabet = "abcdefghij XYZ 0123456789 .,!?'\n\té日🎉" + "the fox "
    texts = TINY_CORPUS + ["<|im_start|>user\nhi<think>there<|im_end|>", "<|odd control|> x", "raw space token",
                           "   ", ""] + ["".join(r.choice(alphabet) for _ in range(r.randint(1, 40))) for _ in range(40)]
    encodings = [tok.encode(t) for t in texts]
    id_lists = [[r.randrange(V) for _ in range(r.randint(1, 12))] for _ in range(40)] + [[i] for i in range(V)]
    fixture = {"version": FIXTURE_VERSION, "texts": texts, "ids": encodings,
               "decode_ids": id_lists, "decoded": [tok.decode(ids, skip_special_tokens=False) for ids in id_lists]}
    with open(os.path.join(out, "tiny_llama_tokenizer.json"), "w") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")


def shared_dir():
    shared = os.environ.get("STAPO_SHARED", os.path.join(ROOT, "..", "shared"))
    return os.path.join(shared, "models", "smollm2-135m-instruct")


def checksum(values):
    """Σ_i bits(x_i)·(2i+1) mod 2^64 over the float32 bit patterns, row-major (tests/model/test_real_model.cpp)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    weights = 2 * np.arange(bits.size, dtype=np.uint64) + np.uint64(1)
    return int(np.sum(bits * weights, dtype=np.uint64))


def write_real(out):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    d = shared_dir()
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.exists(os.path.join(d, gguf_name)):
        sys.exit(f"{d}/{gguf_name} not found: set STAPO_SHARED to the shared/ folder")
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=gguf_name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    r = np.random.default_rng(SEED)
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # the tied copy of model.embed_tokens.weight
        values = t.detach().numpy()
        flat = values.reshape(-1)
        picks = sorted(int(i) for i in r.choice(flat.size, size=min(8, flat.size), replace=False))
        tensors[name] = {"shape": list(values.shape), "checksum": str(checksum(values)),
                         "samples": [[i, float(flat[i])] for i in picks]}

    hf_tok = Tokenizer.from_file(os.path.join(d, "hf-tokenizer", "tokenizer.json"))
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.jsonl"), encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f if line.strip()]
    corpus_ids = [hf_tok.encode(text).ids for text in corpus]

    def ids(text):
        return hf_tok.encode(text).ids

    prompts = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, there was a",
               "<|im_start|>user\nWhat is the largest planet in the solar system?<|im_end|>\n<|im_start|>assistant\n",
               "1, 2, 3, 4, 5,", "Translate to French: good morning ->"]
    generations = []
    with torch.no_grad():
        for p in prompts:
            prompt_ids = ids(p)
            outp = model.generate(torch.tensor([prompt_ids]), max_new_tokens=16, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
            generations.append({"prompt": p, "prompt_ids": prompt_ids,
                                "new_ids": outp[0, len(prompt_ids):].tolist()})

    pairs_text = [
        ("<|im_start|>user\nName a primary colour.<|im_end|>\n<|im_start|>assistant\n", "Red is a primary colour.<|im_end|>",
         "Bananas are yellow, I think.<|im_end|>"),
        ("Question: what is 7 times 6?\nAnswer:", " 42", " 48, probably, or maybe 36"),
        ("Write a haiku about the sea.\n", "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time",
         "The sea is big and blue and wet."),
    ]
    score = []
    with torch.no_grad():
        for prompt, chosen, rejected in pairs_text:
            item = {"prompt_ids": ids(prompt)}
            for key, response in (("chosen", chosen), ("rejected", rejected)):
                resp_ids = ids(response)
                full = torch.tensor([item["prompt_ids"] + resp_ids])
                logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)  # (T, V)
                n = len(item["prompt_ids"])
                rows = logp[n - 1:-1]  # predictions of the response tokens
                item[key + "_ids"] = resp_ids
                item[key + "_logp"] = rows.gather(1, torch.tensor(resp_ids)[:, None])[:, 0].tolist()
                item[key + "_entropy"] = (-(rows.exp() * rows).sum(-1)).tolist()
            score.append(item)

    fixture = {"version": FIXTURE_VERSION, "model": gguf_name, "tensors": tensors, "corpus_ids": corpus_ids,
               "generate": generations, "score": score}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "smollm2.json"), "w") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("generate:", [g["new_ids"] for g in generations])
    print("score S:", [(sum(s["chosen_logp"]), sum(s["rejected_logp"])) for s in score])


def check_converted(converted):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = shared_dir()
    ours = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    differing = [k for k in ref_sd if not torch.equal(ours_sd[k], ref_sd[k])]
    print(f"weights: {len(ref_sd)} tensors, {len(differing)} differ {differing[:5]}")
    tok = AutoTokenizer.from_pretrained(converted)
    hf_tok = Tokenizer.from_file(os.path.join(d, "hf-tokenizer", "tokenizer.json"))
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.jsonl"), encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f if line.strip()]
    bad = [t for t in corpus if tok.encode(t) != hf_tok.encode(t).ids]
    print(f"tokenizer: {len(corpus) - len(bad)}/{len(corpus)} corpus strings give the shared tokenizer's ids")
    with open(os.path.join(d, "hf-tokenizer", "chat_template.jinja")) as f:
        shared_template = f.read()
    chat = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    same = tok.apply_chat_template(chat, tokenize=False) == AutoTokenizer.from_pretrained(
        os.path.join(d, "hf-tokenizer")).apply_chat_template(chat, tokenize=False, chat_template=shared_template)
    print(f"chat template renders as the shared one: {same}")
    ids = torch.tensor([hf_tok.encode("The capital of France is").ids])
    with torch.no_grad():
        diff = (ours(ids).logits - ref(ids).logits).abs().max().item()
    print(f"logits max |diff| vs transformers' GGUF load: {diff:.3e}")
    if differing or bad or not same or diff != 0:
        sys.exit("check failed")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["tiny", "real", "all"], default="all")
    ap.add_argument("--check-converted", metavar="DIR", help="check a directory model_convert wrote from the GGUF")
    args = ap.parse_args()
    if args.check_converted:
        check_converted(args.check_converted)
        return
    if args.part in ("tiny", "all"):
        out = os.path.join(ROOT, "tests", "fixtures", "gguf")
        os.makedirs(out, exist_ok=True)
        rng = np.random.default_rng(SEED)
        write_types(out, rng)
        write_tiny_llama(out, rng)
        print("wrote", out)
    if args.part in ("real", "all"):
        write_real(os.path.join(ROOT, "tests", "fixtures", "real_model"))
        print("wrote tests/fixtures/real_model/smollm2.json")


if __name__ == "__main__":
    main()
