#!/usr/bin/env python3
"""Encode texts with Hugging Face's Python `tokenizers` (the Rust library behind transformers), for the
tokenizer.json compatibility tests (test/tokenizer.test.ts) and their fixture (test/fixtures/python-tokenizers.json).

stdin:  {"tokenizers": [<tokenizer.json object>, ...], "texts": ["...", ...]}
stdout: {"version": "<tokenizers version>", "ids": [[[int]] per text] per tokenizer, "decoded": [[str] ...] ...}
Encoding adds no special tokens (add_special_tokens=False); decoding keeps them (skip_special_tokens=False).
"""
import json
import sys

from tokenizers import Tokenizer, __version__

req = json.load(sys.stdin)
out = {"version": __version__, "ids": [], "decoded": []}
for spec in req["tokenizers"]:
    tok = Tokenizer.from_str(json.dumps(spec))
    ids = [tok.encode(t, add_special_tokens=False).ids for t in req["texts"]]
    out["ids"].append(ids)
    out["decoded"].append([tok.decode(i, skip_special_tokens=False) for i in ids])
json.dump(out, sys.stdout, ensure_ascii=False)
