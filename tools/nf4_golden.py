#!/usr/bin/env python3
"""Write tests/data/nf4_golden.bin: NF4 (bitsandbytes) test vectors for tests/test_quant.c.

This is a second, independent implementation of bitsandbytes' NF4 blockwise quantizer and its
double quantization, in numpy, written from the description of the CUDA kernels (shared
reference formats.md section 1) rather than from src/quant/nf4.c:

  * NF4: absmax per block of `blocksize` consecutive elements of the flat input; each element is
    multiplied by the fp32 reciprocal 1/absmax; the code is the number of decision thresholds the
    scaled value strictly exceeds (a NaN -- an all-zero block gives 0 * inf -- exceeds none and
    codes 0); element 2j in the high nibble of byte j, 2j+1 in the low nibble; for odd n the
    padding nibble is the code of a 0.0 element of the last block (0 * (1/absmax): 7, or 0 when
    the block is all zero), as the CUDA kernel writes it.
  * The signed 8-bit dynamic map of create_dynamic_map(signed=True), built here with exact
    rational arithmetic (see dynamic_map()).
  * bitsandbytes' dQuantize<0> binary search, restated as a closed form: the result is the number
    of fp32 midpoints mid[k] = (map[k] + map[k+1]) * 0.5f the value passes, where it must exceed
    mid[k] for even k and only reach it for odd k (the search always ends on an even index and a
    tie goes to that even index).
  * Double quantization: offset = mean(absmax) rounded once to fp32; per block of 256 absmax
    values nested_absmax = max |absmax - offset|; (absmax - offset) * (1/nested_absmax) coded
    against the map. Reconstruction: fp32(map[q] * nested_absmax) + offset, in fp32.

Usage: tools/nf4_golden.py [--out tests/data/nf4_golden.bin] [--no-write] [--device cuda]
The data are drawn from numpy's PCG64 with a fixed seed, so the file regenerates identically.
When torch is importable the script also checks its dynamic map against the torch evaluation of
bitsandbytes' formula; when bitsandbytes is importable it compares every case with
bitsandbytes.functional.quantize_4bit (on the CPU, and on --device if given) and prints how
they differ. Those comparisons are reports, not conditions: the file depends on numpy alone.

What the comparisons showed (bitsandbytes 0.50.2; torch 2.11 on an H100, torch 2.15 on the CPU):
  * CUDA quantize_4bit: every code of a real element, every absmax, qabsmax and nested_absmax
    equal, ties included, except (a) [resolved: tern now pads like CUDA]; (b) CUDA flushes subnormals to zero (case
    n129_bs64_tiny); (c) torch's fp32 mean for the offset is an ulp off in a few cases.
  * The CPU ("default") backend differs more: all-zero blocks code to 7 (absmax clamped to 1e-38),
    the partial last block is divided instead of multiplied by the reciprocal, its thresholds are
    fp32 midpoints (one ulp off at 4 exact ties), and its 8-bit quantizer is not dQuantize.
  * The dynamic map matches create_dynamic_map() under torch's AVX2/AVX512 kernels; with
    ATEN_CPU_CAPABILITY=default torch rounds linspace differently and 42 entries move by one ulp.

File layout (all little-endian, no padding or alignment anywhere):

  offset  size        field
  0       8           magic "TERNNF4G"
  8       4           u32 version = 1
  12      4           u32 n_cases
  16      1024        f32 dmap[256]            the signed dynamic map, ascending
  1040    64          f32 nf4_code[16]
  1104    60          f32 nf4_threshold[15]
  1164    4           u32 n_probe_nf4 = P
  1168    4P + P      f32 x[P], then u8 code[P]: tern_nf4_code_of(x) must equal code
  ...     4           u32 n_probe_dyn = Q
  ...     4Q + Q      f32 x[Q], then u8 code[Q]: tern_dynamic_code_of(dmap, x) must equal code
  then n_cases records, each:
          32          name, ASCII, NUL-padded
          8           u64 n                     elements
          4           u32 blocksize
          4           u32 nb = ceil(n / blocksize)
          4           u32 nn = ceil(nb / 256)
          4           u32 reserved = 0
          4n          f32 x[n]
          (n+1)/2     u8 codes[(n+1)/2]
          4nb         f32 absmax[nb]
          4           f32 offset
          nb          u8 qabsmax[nb]
          4nn         f32 nested_absmax[nn]
          4nb         f32 absmax_rec[nb]        reconstructed from the nested form
  and last   4        magic "END!"

To regenerate: python3 tools/nf4_golden.py   (from the repository root).
"""

import argparse
import math
import os
import struct
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import numpy as np

F32 = np.float32
MAGIC = b"TERNNF4G"
VERSION = 1
SEED = 20250611

# formats.md 1.1, as the double literals bitsandbytes writes.
NF4_CODE_D = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
# formats.md 1.2, the literals of the CUDA kernel's decision tree (kept as text: see f32_literal).
NF4_THRESHOLD_TEXT = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011",
]

NF4_CODE = np.array(NF4_CODE_D, dtype=F32)
# NF4_THRESHOLD is set below, after round_f32(): the literals must be rounded to fp32 directly from
# their decimal text, as a C or CUDA compiler does with `0.5016634166240692f`.


# ---------------------------------------------------------------------------------------------
# exact fp32 rounding of rationals (for the dynamic map)

def round_f32(v: Fraction) -> F32:
    """v rounded to the nearest fp32, ties to even (normal range only, which is all we need)."""
    if v == 0:
        return F32(0.0)
    sign = -1 if v < 0 else 1
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    # a in [2^e, 2^(e+1)): 24 significant bits means units of 2^(e-23)
    unit = Fraction(2) ** (e - 23)
    m = round(a / unit)  # Fraction.__round__ rounds half to even
    return F32(sign * float(m * unit))  # m * unit has <= 25 bits: exact in double and fp32


def linspace_f32(start: float, end: float, steps: int, fused: bool) -> np.ndarray:
    """torch.linspace(start, end, steps, dtype=float32) on the CPU.

    step = (end - start) / (steps - 1) in fp32; element idx is start + step*idx for
    idx < steps // 2, else end - step*(steps - 1 - idx). ATen's AVX2/AVX512 kernels are compiled
    with FMA contraction, so that expression is rounded once (fused=True); the DEFAULT kernel
    rounds the product and the sum separately (fused=False)."""
    s, e = F32(start), F32(end)
    step = F32(e - s) / F32(steps - 1)
    out = np.empty(steps, dtype=F32)
    for idx in range(steps):
        if idx < steps // 2:
            base, k, sgn = s, idx, 1
        else:
            base, k, sgn = e, steps - 1 - idx, -1
        if fused:
            out[idx] = round_f32(Fraction(float(base)) + sgn * Fraction(float(step)) * k)
        else:
            out[idx] = base + F32(sgn) * (step * F32(k))
    return out


def dynamic_map(fused: bool = True) -> np.ndarray:
    """bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)."""
    vals = []
    for i in range(7):
        b = linspace_f32(0.1, 1.0, 2 ** i + 1, fused)
        means = (b[:-1] + b[1:]) / F32(2.0)
        scale = F32(10 ** (i - 6))  # a Python number; torch casts it to fp32 for the multiply
        vals.append(scale * means)
        vals.append(-(scale * means))
    vals.append(np.array([0.0, 1.0], dtype=F32))
    m = np.sort(np.concatenate(vals)).astype(F32)
    assert m.size == 256
    return m


def f32_literal(text: str) -> F32:
    """The fp32 value of a C literal `<text>f`: the decimal rounded once, to nearest even.

    Not np.float32(float(text)): thresholds 0, 8, 12 and 14 are (as doubles) exactly halfway
    between two fp32 values, and the decimal text lies on the other side of that tie from where
    the double's ties-to-even rounding goes, so going through double is one ulp off for them.
    (nvcc agrees with the direct rounding; checked on an H100.)"""
    return round_f32(Fraction(Decimal(text)))


NF4_THRESHOLD = np.array([f32_literal(t) for t in NF4_THRESHOLD_TEXT], dtype=F32)


# ---------------------------------------------------------------------------------------------
# the quantizers, vectorised

def nf4_codes_of(scaled: np.ndarray) -> np.ndarray:
    """Count of thresholds strictly exceeded; NaN exceeds none."""
    return (scaled[:, None] > NF4_THRESHOLD[None, :]).sum(axis=1).astype(np.uint8)


def dynamic_codes_of(dmap: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dQuantize<0> in closed form (see the module docstring)."""
    mid = (dmap[:-1] + dmap[1:]) * F32(0.5)  # [255], fp32
    k = np.arange(255)
    even, odd = mid[k % 2 == 0], mid[k % 2 == 1]
    passed = (x[:, None] > even[None, :]).sum(axis=1) + (x[:, None] >= odd[None, :]).sum(axis=1)
    return passed.astype(np.uint8)


def blockwise_absmax_scaled(x: np.ndarray, bs: int):
    """absmax[nb] and x * (1/absmax) per element, both fp32."""
    n = x.size
    nb = -(-n // bs)
    xp = np.zeros(nb * bs, dtype=F32)
    xp[:n] = x
    xp = xp.reshape(nb, bs)
    absmax = np.abs(xp).max(axis=1).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        recip = F32(1.0) / absmax
        scaled = (xp * recip[:, None]).reshape(-1)[:n]
    return absmax, scaled


def nf4_quantize(x: np.ndarray, bs: int):
    absmax, scaled = blockwise_absmax_scaled(x, bs)
    q = nf4_codes_of(scaled)
    if q.size % 2:
        # the padding element is a 0.0 of the last block, scaled like the others
        with np.errstate(divide="ignore", invalid="ignore"):
            pad = F32(0.0) * (F32(1.0) / absmax[-1:])
        q = np.concatenate([q, nf4_codes_of(pad.astype(F32))])
    packed = ((q[0::2] << 4) | q[1::2]).astype(np.uint8)
    return packed, absmax


def double_quant(absmax: np.ndarray, dmap: np.ndarray):
    nb = absmax.size
    total = math.fsum(float(a) for a in absmax)  # exact sum, one rounding to double
    offset = F32(total / nb)
    # tern's C code sums sequentially in double; make sure that cannot change the fp32 result
    seq = 0.0
    for a in absmax:
        seq += float(a)
    assert F32(seq / nb) == offset, "sequential and exact mean differ; pick other data"
    d = (absmax - offset).astype(F32)
    nested, scaled = blockwise_absmax_scaled(d, 256)
    qabsmax = dynamic_codes_of(dmap, scaled)
    rec = (dmap[qabsmax] * np.repeat(nested, 256)[:nb]).astype(F32) + offset
    return qabsmax, nested, offset, rec.astype(F32)


# ---------------------------------------------------------------------------------------------
# test data

def make_cases(rng: np.random.Generator):
    cases = []

    def add(name, x, bs):
        x = np.ascontiguousarray(x, dtype=F32).reshape(-1)
        cases.append((name, x, bs))

    add("n1_bs64", rng.standard_normal(1) * 0.02, 64)
    add("n63_bs64_scale1e-2", rng.standard_normal(63) * 1e-2, 64)
    add("n64_bs64", rng.standard_normal(64), 64)
    add("n65_bs64", rng.standard_normal(65) * 0.3, 64)
    add("n1000_bs64_scale1e-3", rng.standard_normal(1000) * 1e-3, 64)
    add("n4097_bs64_scale5", rng.standard_normal(4097) * 5.0, 64)
    # a 33 x 77 matrix: blocks run across row ends; per-row scales
    add("n33x77_bs64_rowscales", rng.standard_normal((33, 77)) * 10.0 ** rng.uniform(-2, 0, (33, 1)), 64)
    # 175 x 400: nb = 1094, so 5 nested blocks, the last one holding 70 absmax values
    add("n70000_bs64_rowscales", rng.standard_normal((175, 400)) * 10.0 ** rng.uniform(-3, 1, (175, 1)), 64)
    add("n10001_bs32_t3", rng.standard_t(3, 10001) * 0.02, 32)
    y = rng.standard_normal(5000) * 0.05
    y[rng.integers(0, 5000, 7)] *= 40.0  # a few outliers
    add("n5000_bs128_outliers", y, 128)
    add("n3000_bs256_uniform", rng.uniform(-1, 1, 3000), 256)
    add("n10000_bs4096", rng.standard_normal(10000) * 0.1, 4096)

    # zero blocks: block 1 all (signed) zeros, block 3 a single nonzero, the partial block 4 zero
    z = rng.standard_normal(300).astype(F32)
    z[64:128] = 0.0
    z[64:128:3] = -0.0
    z[192:256] = 0.0
    z[255] = -0.25
    z[256:] = 0.0
    add("n300_bs64_zero_blocks", z, 64)

    # exact ties: with a power-of-two absmax A the scaled value of threshold*A is the threshold
    # itself, which must code to the LOWER side; the neighbours one ulp away go either way.
    blocks = []
    for j in range(8):
        a = F32(2.0 ** (j - 3))
        t = NF4_THRESHOLD * a
        blk = np.concatenate([
            np.array([-a if j % 2 else a], dtype=F32),
            t,
            np.nextafter(t, F32(np.inf)),
            np.nextafter(t, F32(-np.inf)),
            NF4_CODE * a,
            np.array([0.0, -0.0], dtype=F32),
        ]).astype(F32)
        assert blk.size == 64
        blocks.append(rng.permutation(blk))
    # one block whose absmax (3) is not a power of two: ties are then whatever fp32 makes them
    blk = np.concatenate([np.array([3.0], dtype=F32), NF4_THRESHOLD * F32(3.0),
                          np.nextafter(NF4_THRESHOLD * F32(3.0), F32(np.inf)),
                          np.nextafter(NF4_THRESHOLD * F32(3.0), F32(-np.inf)),
                          NF4_CODE * F32(3.0), np.array([0.0, 1.5], dtype=F32)]).astype(F32)
    blocks.append(blk)
    add("n576_bs64_ties", np.concatenate(blocks), 64)

    # tiny magnitudes: block 0 subnormal with absmax < 1/FLT_MAX (the reciprocal overflows to
    # inf: values go to +-inf, zeros to NaN), block 1 around 1e-36, a 1-element last block
    s = np.concatenate([
        (rng.standard_normal(64) * 1e-41).astype(F32),
        (rng.standard_normal(64) * 1e-36).astype(F32),
        np.array([5e-39], dtype=F32),
    ])
    s[5] = 0.0
    add("n129_bs64_tiny", s, 64)
    return cases


def nf4_probes(rng: np.random.Generator) -> np.ndarray:
    t = NF4_THRESHOLD
    parts = [
        t, np.nextafter(t, F32(np.inf)), np.nextafter(t, F32(-np.inf)), NF4_CODE,
        np.array([0.0, -0.0, 1.0, -1.0, 1.5, -1.5, np.inf, -np.inf, np.nan], dtype=F32),
        rng.uniform(-1.05, 1.05, 200).astype(F32),
    ]
    return np.concatenate(parts).astype(F32)


def dyn_probes(dmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mid = (dmap[:-1] + dmap[1:]) * F32(0.5)
    up, dn = F32(np.inf), F32(-np.inf)
    parts = [
        dmap, np.nextafter(dmap, up), np.nextafter(dmap, dn),
        mid, np.nextafter(mid, up), np.nextafter(mid, dn),
        np.array([0.0, -0.0, 1.0, -1.0, 1.1, -1.1, 2.0, -2.0, np.inf, -np.inf, np.nan], dtype=F32),
        rng.uniform(-1, 1, 1000).astype(F32),
        (np.sign(rng.uniform(-1, 1, 1000)) * 10.0 ** rng.uniform(-8, 0, 1000)).astype(F32),
    ]
    return np.concatenate(parts).astype(F32)


# ---------------------------------------------------------------------------------------------
# cross-checks against torch / bitsandbytes (reports only)

def torch_checks(dmap: np.ndarray):
    try:
        import torch
    except Exception as ex:  # noqa: BLE001
        print(f"torch: not available ({type(ex).__name__}); dynamic map not cross-checked")
        return
    cap = torch.backends.cpu.get_cpu_capability()
    # bitsandbytes' create_dynamic_map, evaluated with torch (same statements)
    data = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(7 - 1) + i)) * means).tolist()
        data += (-(10 ** (-(7 - 1) + i)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    tmap = torch.tensor(data, dtype=torch.float32).numpy()
    nd = int((tmap.view(np.uint32) != dmap.view(np.uint32)).sum())
    print(f"torch {torch.__version__} (CPU capability {cap}): dynamic map vs ours: {nd} of 256 differ")
    nd0 = int((tmap.view(np.uint32) != dynamic_map(fused=False).view(np.uint32)).sum())
    print(f"  (vs the unfused linspace variant: {nd0} of 256 differ)")
    if cap != "DEFAULT" and os.environ.get("NF4_GOLDEN_CHILD") is None:
        env = dict(os.environ, ATEN_CPU_CAPABILITY="default", NF4_GOLDEN_CHILD="1")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--map-only"], env=env,
                           capture_output=True, text=True)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("torch", "  (", "bitsandbytes"))]
        print("  with ATEN_CPU_CAPABILITY=default:")
        for ln in lines:
            print("    " + ln)
    try:
        import bitsandbytes.functional as bF
        bmap = bF.create_dynamic_map().numpy()
        nb = int((bmap.view(np.uint32) != dmap.view(np.uint32)).sum())
        print(f"bitsandbytes create_dynamic_map() vs ours: {nb} of 256 differ")
    except Exception as ex:  # noqa: BLE001
        print(f"bitsandbytes: create_dynamic_map not available ({type(ex).__name__}: {ex})")


def bnb_compare(cases, results, dmap, device: str):
    try:
        import torch
        import bitsandbytes.functional as bF
    except Exception as ex:  # noqa: BLE001
        print(f"bitsandbytes on {device}: not available ({type(ex).__name__}); no comparison")
        return
    print(f"bitsandbytes quantize_4bit on {device} vs ours "
          "(codes: differing bytes / nibbles of real elements; absmax, qabsmax, nested: differing entries):")
    for (name, x, bs), (codes, absmax, qabs, nested, offset, _rec) in zip(cases, results):
        try:
            t = torch.from_numpy(x.copy()).to(device)
            p1, s1 = bF.quantize_4bit(t, blocksize=bs, quant_type="nf4", compress_statistics=False)
            p2, s2 = bF.quantize_4bit(t, blocksize=bs, quant_type="nf4", compress_statistics=True)
            if device != "cpu":
                torch.cuda.synchronize()
        except Exception as ex:  # noqa: BLE001
            print(f"  {name:28s} bs={bs:4d}: bitsandbytes refused: {type(ex).__name__}: {str(ex)[:80]}")
            continue
        bp = p1.cpu().numpy().reshape(-1)
        n = x.size
        bq = np.stack([bp >> 4, bp & 15], axis=1).reshape(-1)[:n]
        oq = np.stack([codes >> 4, codes & 15], axis=1).reshape(-1)[:n]
        dbytes = int((bp != codes).sum())
        dnib = int((bq != oq).sum())
        babs = s1.absmax.float().cpu().numpy()
        dabs = int((babs.view(np.uint32) != absmax.view(np.uint32)).sum())
        bqa = s2.absmax.cpu().numpy()
        bnest = s2.state2.absmax.float().cpu().numpy()
        boff = F32(s2.offset.float().cpu().item())
        bcode = s2.state2.code.float().cpu().numpy()
        dqa = int((bqa != qabs).sum())
        dnest = int((bnest.view(np.uint32) != nested.view(np.uint32)).sum())
        dmapn = int((bcode.view(np.uint32) != dmap.view(np.uint32)).sum())
        offs = "same" if boff.view(np.uint32) == offset.view(np.uint32) else f"{boff!r} vs {offset!r}"
        extra = ""
        if dnib:
            i = int(np.nonzero(bq != oq)[0][0])
            extra = f"; first nibble diff at {i}: x={x[i]!r} absmax={absmax[i // bs]!r} bnb={bq[i]} ours={oq[i]}"
        print(f"  {name:28s} bs={bs:4d}: codes {dbytes}/{codes.size} bytes, {dnib}/{n} nibbles; "
              f"absmax {dabs}/{absmax.size}; qabsmax {dqa}/{qabs.size}; nested {dnest}/{nested.size}; "
              f"offset {offs}; map {dmapn}/256{extra}")


# ---------------------------------------------------------------------------------------------

def le(a: np.ndarray, dt: str) -> bytes:
    return np.ascontiguousarray(a).astype(dt).tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                                  "nf4_golden.bin"))
    ap.add_argument("--no-write", action="store_true", help="compute and cross-check only")
    ap.add_argument("--device", default=None, help="also compare with bitsandbytes on this torch device (e.g. cuda)")
    ap.add_argument("--map-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    dmap = dynamic_map(fused=True)
    if args.map_only:
        torch_checks(dmap)
        return 0

    # sanity of our own tables: the map's landmarks, and each threshold is a nearest fp32 of the
    # exact midpoint of its two code values (4 of the midpoints are fp32 ties; the literals' last
    # digits decide those)
    assert dmap[127] == 0.0 and dmap[255] == 1.0 and np.all(np.diff(dmap) > 0)
    for k in range(15):
        mid = (Fraction(float(NF4_CODE[k])) + Fraction(float(NF4_CODE[k + 1]))) / 2
        t = Fraction(float(NF4_THRESHOLD[k]))
        half_ulp = abs(Fraction(float(np.spacing(NF4_THRESHOLD[k])))) / 2
        assert abs(t - mid) <= half_ulp, f"threshold {k} is not a nearest fp32 of the code midpoint"
    assert NF4_CODE[7] == 0.0 and NF4_CODE[15] == 1.0

    rng = np.random.default_rng(SEED)
    cases = make_cases(rng)
    p_nf4 = nf4_probes(rng)
    p_dyn = dyn_probes(dmap, rng)
    q_nf4 = nf4_codes_of(p_nf4)
    q_dyn = dynamic_codes_of(dmap, p_dyn)

    results = []
    for name, x, bs in cases:
        codes, absmax = nf4_quantize(x, bs)
        qabs, nested, offset, rec = double_quant(absmax, dmap)
        results.append((codes, absmax, qabs, nested, offset, rec))

    out = bytearray()
    out += MAGIC + struct.pack("<II", VERSION, len(cases))
    out += le(dmap, "<f4") + le(NF4_CODE, "<f4") + le(NF4_THRESHOLD, "<f4")
    out += struct.pack("<I", p_nf4.size) + le(p_nf4, "<f4") + le(q_nf4, "u1")
    out += struct.pack("<I", p_dyn.size) + le(p_dyn, "<f4") + le(q_dyn, "u1")
    for (name, x, bs), (codes, absmax, qabs, nested, offset, rec) in zip(cases, results):
        nb, nn = absmax.size, nested.size
        assert len(name) < 32
        out += name.encode("ascii").ljust(32, b"\0")
        out += struct.pack("<QIIII", x.size, bs, nb, nn, 0)
        out += le(x, "<f4") + le(codes, "u1") + le(absmax, "<f4") + struct.pack("<f", float(offset))
        out += le(qabs, "u1") + le(nested, "<f4") + le(rec, "<f4")
    out += b"END!"

    print(f"{len(cases)} cases, {p_nf4.size} NF4 probes, {p_dyn.size} dynamic-map probes:")
    for (name, x, bs), (codes, absmax, qabs, nested, offset, rec) in zip(cases, results):
        print(f"  {name:28s} n={x.size:6d} bs={bs:4d} nb={absmax.size:5d} nested={nested.size} offset={offset!r}")
    if not args.no_write:
        path = os.path.normpath(args.out)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(out)
        print(f"wrote {path}: {len(out)} bytes")

    torch_checks(dmap)
    bnb_compare(cases, results, dmap, "cpu")
    if args.device:
        bnb_compare(cases, results, dmap, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
