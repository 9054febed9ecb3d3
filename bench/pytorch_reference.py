#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench`: the same workloads, under the same names, timed
the same way (warm-up, then the median, min and max of at least 5 timed runs, each a
batch of repeats sized to about `target` ms), written as the same JSON shape, so that
`cargo xtask bench --compare THIS.json` prints both side by side.

CPU: `torch.set_num_threads(--threads)` (default: all cores, as lavapipe uses).
CUDA: TF32 off for matmul and cuDNN, timed with CUDA events around each run.
Convolutions run in PyTorch's NCHW layout (same FLOPs as our NHWC).

Each workload is first run at a small size of the same configuration in float32 on
the device and in float64 on the CPU; `validated` says they agree (max relative error
below 1e-3), which also catches TF32 left on. See bench/README.md.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

TOLERANCE = 1e-3
FC_LAYERS = [(9216, 4096), (4096, 4096), (4096, 1000), (2048, 1000)]


# --------------------------------------------------------------------------- sizes


def resolve_sizes(args, cpu):
    """The same rules as xtask/src/bench/options.rs `Sizes::resolve`."""
    small = args.quick or cpu
    max_square = 1024 if args.quick else (2048 if cpu else 4096)
    return {
        "square": [s for s in (256, 512, 1024, 2048, 4096) if s <= max_square],
        "square_transposes": not args.quick,
        "batch": args.batch or (1 if small else 32),
        "fc_batch": args.fc_batch or (16 if small else 128),
        "elems": 1 << 24,  # 64 MiB per tensor, as the copy probe: past the last-level cache
        "reps": args.reps or (5 if args.quick else 7),
        "target_ms": 20.0 if args.quick else 100.0,
    }


# ---------------------------------------------------------------------- workloads
#
# A workload is a dict: name, kind, shape (words), flops (None for memory-bound),
# bytes (each input read once + each output written once), and build(dev, dtype,
# small) -> fn, where fn() runs the op once and returns its output tensor(s).


def rand(shape, seed, dev, dtype, lo=-1.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    return t.to(device=dev, dtype=dtype)


def small_extent(d):
    return d if d <= 160 else 132 + d % 4


def matmul_workload(name, m, n, k, ta, tb, what=""):
    """C[m, n] = op(A) op(B); A stored [k, m] when ta, B stored [n, k] when tb."""

    def build(dev, dtype, small):
        mm, nn, kk = (small_extent(m), small_extent(n), small_extent(k)) if small else (m, n, k)
        a = rand((kk, mm) if ta else (mm, kk), 1, dev, dtype)
        b = rand((nn, kk) if tb else (kk, nn), 2, dev, dtype)
        a_op = a.t() if ta else a
        b_op = b.t() if tb else b
        return lambda: torch.mm(a_op, b_op)

    return dict(
        name=name,
        kind="matmul",
        shape=f"{what}C[{m},{n}] = A{'T' if ta else ''}·B{'T' if tb else ''} (K {k})",
        flops=2.0 * m * n * k,
        bytes=4.0 * (m * k + k * n + m * n),
        build=build,
    )


def matmul_workloads(sz):
    out = []
    combos = [(False, False, "")]
    if sz["square_transposes"]:
        combos += [(False, True, "_nt"), (True, False, "_tn")]
    for ta, tb, suffix in combos:
        for s in sz["square"]:
            out.append(matmul_workload(f"matmul_{s}x{s}x{s}{suffix}", s, s, s, ta, tb))
    b = sz["fc_batch"]
    for inputs, outputs in FC_LAYERS:
        base = f"matmul_fc_{inputs}x{outputs}_b{b}"
        # y = x W^T (F.linear); dx = dy W; dW = dy^T x: the products autograd runs.
        for suffix, m, n, k, ta, tb, what in [
            ("fwd", b, outputs, inputs, False, True, "y = x·Wᵀ: "),
            ("grad_a", b, inputs, outputs, False, False, "dx = dy·W: "),
            ("grad_b", outputs, inputs, b, True, False, "dW = dyᵀ·x: "),
        ]:
            out.append(matmul_workload(f"{base}_{suffix}", m, n, k, ta, tb, what))
    return out


def conv_layers():
    """The lists of xtask/src/bench/workloads.rs: (model, id, h, c, k, r, stride, pad, groups)."""
    layers = []
    for i, (h, c, k, r, s, p) in enumerate(
        [(224, 3, 64, 11, 4, 2), (27, 64, 192, 5, 1, 2), (13, 192, 384, 3, 1, 1),
         (13, 384, 256, 3, 1, 1), (13, 256, 256, 3, 1, 1)], 1):
        layers.append(("alexnet", f"conv{i}", h, c, k, r, s, p, 1))
    for i, (h, c, k, r, s, p, g) in enumerate(
        [(224, 3, 96, 11, 4, 2, 1), (27, 96, 256, 5, 1, 2, 2), (13, 256, 384, 3, 1, 1, 1),
         (13, 384, 384, 3, 1, 1, 2), (13, 384, 256, 3, 1, 1, 2)], 1):
        layers.append(("alexnet2012", f"conv{i}", h, c, k, r, s, p, g))
    seen = set()

    def add(h, c, k, r, s):
        lid = f"{h}x{h}x{c}_k{k}_{r}x{r}_s{s}"
        if lid not in seen:
            seen.add(lid)
            layers.append(("resnet50", lid, h, c, k, r, s, r // 2, 1))

    add(224, 3, 64, 7, 2)
    h, c = 56, 64
    for width, blocks, first_stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for block in range(blocks):
            s = first_stride if block == 0 else 1
            add(h, c, width, 1, 1)
            add(h, width, width, 3, s)
            out_h = h // s
            add(out_h, width, 4 * width, 1, 1)
            if block == 0:
                add(h, c, 4 * width, 1, s)
            h, c = out_h, 4 * width
    return layers


def conv_workloads(sz):
    out = []
    n = sz["batch"]
    for model, lid, h, c, k, r, s, p, g in conv_layers():
        q = (h + 2 * p - r) // s + 1
        macs = n * q * q * k * r * r * (c // g)
        elems = n * h * h * c + k * r * r * (c // g) + n * q * q * k
        shape = (f"x[{n},{h},{h},{c}] * w[{k},{r},{r},{c // g}] stride {s} pad {p} "
                 f"groups {g} -> y[{n},{q},{q},{k}]")
        for kind in ("conv_fwd", "conv_bwd_data", "conv_bwd_filter"):

            def build(dev, dtype, small, kind=kind, h=h, c=c, k=k, r=r, s=s, p=p, g=g):
                nn, hh = (min(n, 2), min(h, r + 2 * s)) if small else (n, h)
                qq = (hh + 2 * p - r) // s + 1
                x = rand((nn, c, hh, hh), 11, dev, dtype)
                w = rand((k, c // g, r, r), 12, dev, dtype)
                dy = rand((nn, k, qq, qq), 13, dev, dtype)
                if kind == "conv_fwd":
                    return lambda: F.conv2d(x, w, None, s, p, 1, g)
                mask = [kind == "conv_bwd_data", kind == "conv_bwd_filter", False]
                idx = 0 if mask[0] else 1
                return lambda: torch.ops.aten.convolution_backward(
                    dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], g, mask)[idx]

            out.append(dict(name=f"{kind}_{model}_{lid}_n{n}", kind=kind, shape=shape,
                            flops=2.0 * macs, bytes=4.0 * elems, build=build))
    return out


def memory(name, shape, nbytes, build):
    return dict(name=name, kind="memory", shape=shape, flops=None, bytes=nbytes, build=build)


def pooling_workloads(sz):
    n = sz["batch"]
    out = []
    for model, h, c, pad in [("alexnet_pool1", 55, 64, 0), ("resnet50_stem", 112, 64, 1)]:
        q = (h + 2 * pad - 3) // 2 + 1
        lx, ly = n * h * h * c, n * q * q * c
        shape = f"max 3x3 stride 2 pad {pad}: x[{n},{h},{h},{c}] -> y[{n},{q},{q},{c}] + argmax"
        for pass_ in ("fwd", "bwd"):

            def build(dev, dtype, small, pass_=pass_, h=h, c=c, pad=pad):
                nn, hh = (min(n, 2), min(h, 13)) if small else (n, h)
                x = rand((nn, c, hh, hh), 21, dev, dtype)
                y, idx = torch.ops.aten.max_pool2d_with_indices(x, [3, 3], [2, 2], [pad, pad])
                if pass_ == "fwd":
                    return lambda: torch.ops.aten.max_pool2d_with_indices(
                        x, [3, 3], [2, 2], [pad, pad])
                dy = rand(tuple(y.shape), 22, dev, dtype)
                return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                    dy, x, [3, 3], [2, 2], [pad, pad], [1, 1], False, idx)

            out.append(memory(f"maxpool_{pass_}_{model}_n{n}", shape, 4.0 * (lx + 2 * ly), build))
    lx, ly = n * 7 * 7 * 2048, n * 2048
    for pass_ in ("fwd", "bwd"):

        def build(dev, dtype, small, pass_=pass_):
            nn = min(n, 2) if small else n
            x = rand((nn, 2048, 7, 7), 25, dev, dtype)
            if pass_ == "fwd":
                return lambda: F.adaptive_avg_pool2d(x, 1)
            dy = rand((nn, 2048, 1, 1), 26, dev, dtype)
            return lambda: torch.ops.aten._adaptive_avg_pool2d_backward(dy, x)

        out.append(memory(f"avgpool_{pass_}_resnet50_global_n{n}",
                          f"global average: x[{n},7,7,2048] -> y[{n},2048]",
                          4.0 * (lx + ly), build))
    return out


def normalization_workloads(sz):
    n = sz["batch"]
    out = []
    for h, c in [(112, 64), (56, 256)]:
        m = n * h * h
        for pass_, nbytes in [("train_fwd", 4.0 * (2 * m * c + 8 * c)),
                              ("bwd", 4.0 * (3 * m * c + 5 * c))]:

            def build(dev, dtype, small, pass_=pass_, h=h, c=c):
                nn, hh = (1, 13) if small else (n, h)
                x = rand((nn, c, hh, hh), 35, dev, dtype)
                w = rand((c,), 31, dev, dtype, 0.5, 1.5)
                b = rand((c,), 32, dev, dtype)
                rm = rand((c,), 33, dev, dtype)
                rv = rand((c,), 34, dev, dtype, 0.5, 2.0)
                bn = torch.ops.aten.native_batch_norm
                if pass_ == "train_fwd":
                    return lambda: bn(x, w, b, rm, rv, True, 0.1, 1e-5)
                _, mean, invstd = bn(x, w, b, rm, rv, True, 0.1, 1e-5)
                dy = rand((nn, c, hh, hh), 36, dev, dtype)
                return lambda: torch.ops.aten.native_batch_norm_backward(
                    dy, x, w, rm, rv, mean, invstd, True, 1e-5, [True, True, True])

            out.append(memory(f"batchnorm_{pass_}_resnet50_{h}x{h}x{c}_n{n}",
                              f"batch statistics over x[{n},{h},{h},{c}] (M = {m}, C = {c})",
                              nbytes, build))
    length = n * 55 * 55 * 96
    for pass_, nbytes in [("fwd", 8.0 * length), ("bwd", 12.0 * length)]:

        def build(dev, dtype, small, pass_=pass_):
            nn, hh = (1, 14) if small else (n, 55)
            x = rand((nn, 96, hh, hh), 41, dev, dtype)
            if pass_ == "fwd":
                return lambda: F.local_response_norm(x, 5, 1e-4, 0.75, 2.0)
            xg = x.clone().requires_grad_(True)
            y = F.local_response_norm(xg, 5, 1e-4, 0.75, 2.0)
            dy = rand(tuple(y.shape), 42, dev, dtype)
            return lambda: torch.autograd.grad(y, xg, dy, retain_graph=True)[0]

        out.append(memory(f"lrn_{pass_}_alexnet2012_conv1_n{n}",
                          f"across channels, size 5 alpha 0.0001 beta 0.75 k 2: x[{n},55,55,96]",
                          nbytes, build))
    return out


def pointwise_workloads(sz):
    e, n, b = sz["elems"], sz["batch"], sz["fc_batch"]
    small_e = 1037
    out = []

    def ew(name, words, make):
        def build(dev, dtype, small):
            count = small_e if small else e
            x = rand((count,), 55, dev, dtype)
            y = rand((count,), 56, dev, dtype)
            return make(x, y)

        out.append(memory(f"{name}_{e}", f"{name} over {e} elements", 4.0 * words * e, build))

    ew("relu_fwd", 2, lambda x, y: (lambda: torch.relu(x)))
    ew("relu_bwd", 3, lambda x, y: (lambda: torch.ops.aten.threshold_backward(y, x, 0.0)))
    ew("add", 3, lambda x, y: (lambda: torch.add(x, y)))
    rows, c = n * 56 * 56, 256
    for name, grad, nbytes in [("bias_add", False, 4.0 * (2 * rows * c + c)),
                               ("bias_grad", True, 4.0 * (rows * c + c))]:

        def build(dev, dtype, small, grad=grad):
            nn, hh = (1, 17) if small else (n, 56)
            x = rand((nn, c, hh, hh), 61, dev, dtype)
            bias = rand((1, c, 1, 1), 62, dev, dtype)
            if grad:
                return lambda: x.sum((0, 2, 3))
            return lambda: x + bias

        out.append(memory(f"{name}_resnet50_56x56x256_n{n}",
                          f"x[{n},56,56,{c}] (+) bias[{c}]", nbytes, build))

    def xent(dev, dtype, small):
        rows_ = min(b, 8) if small else b
        logits = (rand((rows_, 1000), 71, dev, dtype) * 4.0).requires_grad_(True)
        g = torch.Generator().manual_seed(72)
        labels = torch.randint(0, 1000, (rows_,), generator=g).to(dev)

        def fn():
            loss = F.cross_entropy(logits, labels)
            (grad,) = torch.autograd.grad(loss, logits)
            return loss.detach(), grad

        return fn

    out.append(memory(f"softmax_xent_{b}x1000", f"mean loss + gradient of logits[{b}, 1000]",
                      4.0 * (2 * b * 1000 + 4 * b + 3), xent))

    def optimizer(name, words, make_opt):
        def build(dev, dtype, small):
            count = small_e if small else e
            p = torch.nn.Parameter(rand((count,), 81, dev, dtype))
            p.grad = rand((count,), 82, dev, dtype)
            opt = make_opt([p])
            opt.step()  # step 1 creates the state; the timed steps are step 2 onwards

            def fn():
                opt.step()
                return p.detach()

            return fn

        out.append(memory(f"{name}_{e}", f"{name} update of {e} parameters, in place",
                          4.0 * words * e, build))

    optimizer("sgd_momentum", 5, lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9))
    optimizer("adam", 7, lambda ps: torch.optim.Adam(ps, lr=1e-3))
    return out


def all_workloads(sz):
    return (matmul_workloads(sz) + conv_workloads(sz) + pooling_workloads(sz)
            + normalization_workloads(sz) + pointwise_workloads(sz))


# ------------------------------------------------------------------------- timing


class Clock:
    def __init__(self, dev):
        self.cuda = dev.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def run(self, fn, batch):
        """ms for `batch` calls of fn, measured on the device (CUDA events) or the host."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(batch):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        return (time.perf_counter() - t0) * 1e3


def stats(samples):
    s = sorted(samples)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])
    return median, s[0], s[-1]


def measure(clock, fn, reps, target_ms):
    clock.sync()
    t0 = time.perf_counter()
    fn()
    clock.sync()
    first_run_ms = (time.perf_counter() - t0) * 1e3
    one = clock.run(fn, 1)
    batch = max(1, min(1000, math.ceil(target_ms / max(one, 1e-3))))
    samples = [clock.run(fn, batch) / batch for _ in range(reps)]
    return stats(samples), batch, first_run_ms


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flatten(o)]


def max_relative_error(got, want):
    got, want = got.detach().double().cpu().flatten(), want.detach().double().cpu().flatten()
    if got.numel() == 0:
        return 0.0
    floor = max(want.abs().max().item() * 1e-3, sys.float_info.min)
    if torch.isnan(got).ne(torch.isnan(want)).any():
        return math.inf
    return ((got - want).abs() / want.abs().clamp_min(floor)).nan_to_num(0.0).max().item()


def validate(w, dev):
    """The op at a small size: float32 on the device against float64 on the CPU."""
    got = flatten(w["build"](dev, torch.float32, True)())
    want = flatten(w["build"](torch.device("cpu"), torch.float64, True)())
    err = 0.0
    for g, x in zip(got, want):
        if g.dtype.is_floating_point:
            err = max(err, max_relative_error(g, x))
        elif not torch.equal(g.cpu(), x.cpu()):
            err = math.inf
    return err


def dispatch_workloads(clock, dev, reps):
    """Per-op overhead of a tiny op (ReLU over 64 elements), like ours: 1000 ops then one
    synchronisation, and 100 times one op and a synchronisation. (Our
    `dispatch_submit_each` has no PyTorch counterpart.)"""
    x = torch.rand(64, device=dev)
    y = torch.empty_like(x)
    results = []

    def one_submit():
        t0 = time.perf_counter()
        for _ in range(1000):
            torch.clamp_min(x, 0.0, out=y)
        clock.sync()
        return (time.perf_counter() - t0) * 1e3 / 1000

    def wait_each():
        t0 = time.perf_counter()
        for _ in range(100):
            torch.clamp_min(x, 0.0, out=y)
            clock.sync()
        return (time.perf_counter() - t0) * 1e3 / 100

    for name, f in [("dispatch_one_submit", one_submit), ("dispatch_submit_wait_each", wait_each)]:
        f()
        med, lo, hi = stats([f() for _ in range(reps)])
        results.append(dict(name=name, kind="dispatch", median_ms=med, min_ms=lo, max_ms=hi,
                            gflops=None, gbs=None, fraction_of_peak=None, validated=True,
                            shape="ReLU over 64 elements", timer="wall", reps=reps))
    return results


# --------------------------------------------------------------------------- main


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes (as cargo xtask bench --quick)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads (default: all cores, as lavapipe)")
    p.add_argument("--batch", type=int, help="conv / pooling / normalisation batch")
    p.add_argument("--fc-batch", type=int, help="fully connected and loss batch")
    p.add_argument("--reps", type=int, help="timed runs per figure (>= 5)")
    p.add_argument("--filter", action="append", default=[], help="name substring (repeatable)")
    p.add_argument("--list", action="store_true", help="print the names and exit")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.reps is not None and args.reps < 5:
        p.error("--reps must be at least 5")
    return args


def main():
    args = parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sz = resolve_sizes(args, dev.type == "cpu")
    wanted = lambda name: not args.filter or any(f in name for f in args.filter)
    workloads = [w for w in all_workloads(sz) if wanted(w["name"])]
    dispatch_names = ["dispatch_one_submit", "dispatch_submit_wait_each"]
    if args.list:
        for w in workloads:
            print(f"{w['name']:<52} {w['shape']}")
        for name in filter(wanted, dispatch_names):
            print(name)
        return
    clock = Clock(dev)
    if dev.type == "cuda":
        adapter = torch.cuda.get_device_name(dev)
    else:
        adapter = f"{platform.processor() or platform.machine()} ({args.threads} threads)"
    print(f"PyTorch {torch.__version__} on {adapter}; batch {sz['batch']}, FC batch "
          f"{sz['fc_batch']}; {sz['reps']} timed runs of ~{sz['target_ms']} ms per figure\n")
    print(f"{'benchmark':<52} {'median ms':>10} {'min ms':>10} {'max ms':>10} {'rate':>18}")
    results = []
    for w in workloads:
        rec = dict(name=w["name"], kind=w["kind"], median_ms=None, min_ms=None, max_ms=None,
                   gflops=None, gbs=None, fraction_of_peak=None, validated=False,
                   shape=w["shape"], flops=w["flops"], bytes=w["bytes"],
                   intensity=w["flops"] / w["bytes"] if w["flops"] else None)
        try:
            err = validate(w, dev)
            rec["validation_error"] = err
            rec["validated"] = err < TOLERANCE
            if not rec["validated"]:
                raise RuntimeError(f"max relative error {err:.2e} against float64")
            t0 = time.perf_counter()
            fn = w["build"](dev, torch.float32, False)
            prepare_ms = (time.perf_counter() - t0) * 1e3
            (med, lo, hi), batch, first_run_ms = measure(clock, fn, sz["reps"], sz["target_ms"])
        except Exception as e:  # a figure that cannot run is recorded, not fatal
            rec["error"] = f"{type(e).__name__}: {e}"
            print(f"{w['name']:<52} FAILED: {rec['error']}")
            results.append(rec)
            continue
        rec.update(median_ms=med, min_ms=lo, max_ms=hi, batch=batch, reps=sz["reps"],
                   prepare_ms=prepare_ms, first_run_ms=first_run_ms,
                   timer="cuda_event" if clock.cuda else "perf_counter")
        if w["flops"]:
            rec["gflops"] = w["flops"] / (med * 1e6)
            rate = f"{rec['gflops']:10.1f} GFLOP/s"
        else:
            rec["gbs"] = w["bytes"] / (med * 1e6)
            rate = f"{rec['gbs']:10.1f} GB/s   "
        print(f"{w['name']:<52} {med:10.3f} {lo:10.3f} {hi:10.3f} {rate}")
        results.append(rec)
    if any(wanted(n) for n in dispatch_names):
        for rec in dispatch_workloads(clock, dev, sz["reps"]):
            if wanted(rec["name"]):
                print(f"{rec['name']:<52} {rec['median_ms']:10.3f} {rec['min_ms']:10.3f} "
                      f"{rec['max_ms']:10.3f} {rec['median_ms'] * 1e3:10.1f} µs/op")
                results.append(rec)
    import pytorch_steps  # beside this script
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    steps = pytorch_steps.run(dev, sync, sz["reps"], args.quick, wanted)
    report = dict(
        adapter=f"PyTorch {torch.__version__} {adapter}",
        backend=f"torch-{dev.type}",
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=git_commit(),
        peak_gflops=None,
        bandwidth_gbs=None,
        results=results,
        steps=steps,
        driver=torch.version.cuda or "",
        device_type=dev.type,
        command=" ".join(["python3", "bench/pytorch_reference.py"] + sys.argv[1:]),
        timer="cuda_event" if clock.cuda else "perf_counter",
        batch=sz["batch"],
        fc_batch=sz["fc_batch"],
        notes=[f"threads {torch.get_num_threads()}", "TF32 off (matmul and cuDNN)",
               "validated: float32 on the device agrees with float64 on the CPU at a small size",
               "training steps: bench/pytorch_steps.py (same models, batches and optimizer)"],
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    failed = [r["name"] for r in results if r["median_ms"] is None]
    if failed:
        sys.exit(f"{len(failed)} figure(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
