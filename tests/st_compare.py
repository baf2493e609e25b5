"""Compares the F32 tensors of two safetensors files (the standard library only: CI's python3
may have no numpy). Prints the largest absolute difference, the largest magnitude and their
ratio; exits 1 when the tensor names or shapes differ or the ratio exceeds TOL.
Usage: python3 st_compare.py A.safetensors B.safetensors TOL"""
import json
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {t['dtype']}, not F32")
        a, b = t["data_offsets"]
        out[name] = (t["shape"], struct.unpack(f"<{(b - a) // 4}f", body[a:b]))
    return out


a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
if sorted(a) != sorted(b):
    raise SystemExit("different tensors: %s vs %s" % (sorted(a), sorted(b)))
diff = mag = 0.0
for name in a:
    if a[name][0] != b[name][0]:
        raise SystemExit(f"{name}: shape {a[name][0]} vs {b[name][0]}")
    for x, y in zip(a[name][1], b[name][1]):
        diff = max(diff, abs(x - y))
        mag = max(mag, abs(x), abs(y))
ratio = diff / mag if mag > 0 else 0.0
print(f"max |a-b| {diff:.3e}, max |a| {mag:.3e}, ratio {ratio:.3e} (tolerance {tol:g})")
sys.exit(0 if ratio <= tol and mag > 0 else 1)
