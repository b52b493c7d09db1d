#!/usr/bin/env python3
"""Reference dequantisation values for rmtrain's GGUF reader (tests/fixtures/gguf/quants.json).

Random blocks of each ggml type the reader supports, dequantised by llama.cpp's own Python package
(PyPI `gguf==0.19.0`, `gguf.quants.dequantize`, numpy). Scale fields are set to finite f16 values.
Run: python3 scripts/make_gguf_quant_fixture.py  (needs numpy and gguf==0.19.0)."""
import json, os
import numpy as np
import gguf
from gguf.constants import GGMLQuantizationType as T

rng = np.random.default_rng(20261124)
# type: (block bytes, [(byte offset, f16 scale)] fields to overwrite)
LAYOUT = {
    T.Q4_0: (18, [0]),
    T.Q4_1: (20, [0, 2]),
    T.Q8_0: (34, [0]),
    T.Q4_K: (144, [0, 2]),
    T.Q6_K: (210, [208]),
}
out = {"generator": "gguf %s, numpy %s" % (getattr(gguf, "__version__", "0.19.0"), np.__version__)}
for t, (size, scales) in LAYOUT.items():
    blocks = rng.integers(0, 256, size=(3, size), dtype=np.uint8)
    for b in blocks:
        for off in scales:
            b[off:off + 2] = np.frombuffer(np.float16(rng.uniform(-0.1, 0.1)).tobytes(), dtype=np.uint8)
    raw = blocks.reshape(-1)
    values = gguf.quants.dequantize(raw, t).reshape(-1)
    out[t.name] = {"code": int(t.value), "hex": raw.tobytes().hex(), "values": [float(v) for v in values]}
for t, dt in [(T.F16, np.float16), (T.BF16, None)]:
    x = rng.normal(size=7).astype(np.float32)
    if dt is not None:
        raw = x.astype(dt).view(np.uint8)
        values = raw.view(dt).astype(np.float32)
    else:
        bits = (x.view(np.uint32) >> 16).astype(np.uint16)
        raw = bits.view(np.uint8)
        values = (bits.astype(np.uint32) << 16).view(np.float32)
    out[t.name] = {"code": int(t.value), "hex": raw.tobytes().hex(), "values": [float(v) for v in values]}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gguf", "quants.json")
with open(path, "w") as f:
    json.dump(out, f, indent=0)
print("wrote", path, [k for k in out])
