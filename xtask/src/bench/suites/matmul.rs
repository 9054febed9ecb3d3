//! Matmul figures: square products (256 … 4096), and the fully connected layers of
//! AlexNet and ResNet-50 forward and both backward products (`Matmul::grad_a`,
//! `Matmul::grad_b`), at the FC batch.
//!
//! Napkin math: flops = 2·M·N·K; bytes = 4·(M·K + K·N + M·N) (A and B read once, C
//! written once).

use anyhow::Result;
use wgtrain_device::Gpu;
use wgtrain_device::kernels::matmul::Matmul;
use wgtrain_device::reference;

use crate::bench::data::{check, download, nan_buffer, run_once, upload_random};
use crate::bench::harness::{Bench, Figure, Workload};
use crate::bench::record::Kind;
use crate::bench::workloads::FC_LAYERS;

/// A smaller extent that keeps `d`'s residue mod 4 (which picks the vec4 kernel) and
/// leaves partial 32-wide tiles at the edges.
fn small_extent(d: u32) -> u32 {
    if d <= 160 { d } else { 132 + d % 4 }
}

/// The same product (transposes, epilogue) at a size the CPU reference does quickly.
fn small(p: &Matmul) -> Matmul {
    let mut s = Matmul::new(small_extent(p.m), small_extent(p.n), small_extent(p.k));
    (s.trans_a, s.trans_b) = (p.trans_a, p.trans_b);
    s
}

/// Runs `p` on random inputs and compares C with the CPU reference.
fn validate(gpu: &Gpu, p: &Matmul) -> Result<f64> {
    let (ea, eb, ec) = p.footprint();
    let (a, b) = (
        crate::bench::data::random(ea as usize, 1),
        crate::bench::data::random(eb as usize, 2),
    );
    let (da, db) = (gpu.upload(&a, "bench.a")?, gpu.upload(&b, "bench.b")?);
    let dc = nan_buffer(gpu, ec)?;
    let d = p.prepare(gpu, &da, &db, None, &dc)?;
    run_once(gpu, &[&d])?;
    let want = reference::matmul::matmul(p, &a, &b, None, &vec![0.0; ec as usize]);
    check(&format!("matmul {p:?}"), &download(gpu, &dc, ec)?, &want)
}

/// Random A and B, C from the pool, one dispatch.
fn prepare(gpu: &Gpu, p: &Matmul) -> Result<Workload> {
    let (ea, eb, ec) = p.footprint();
    let a = upload_random(gpu, ea, 3)?;
    let b = upload_random(gpu, eb, 4)?;
    let c = gpu.pool().acquire(ec * 4, "bench.c")?;
    let d = p.prepare(gpu, &a, &b, None, &c)?;
    Ok(Workload::one(d, vec![a, b, c]))
}

fn figure(bench: &mut Bench, name: String, p: Matmul, what: &str) {
    let (ea, eb, ec) = p.footprint();
    let op = |t: bool| if t { "ᵀ" } else { "" };
    let fig = Figure {
        name,
        kind: Kind::Matmul,
        shape: format!(
            "{what}C[{m},{n}] = A{}·B{} (K {k})",
            op(p.trans_a),
            op(p.trans_b),
            m = p.m,
            n = p.n,
            k = p.k
        ),
        flops: Some(2.0 * p.macs() as f64),
        bytes: 4.0 * (ea + eb + ec) as f64,
    };
    let s = small(&p);
    bench.figure(
        fig,
        format!("{s:?}"),
        |gpu| validate(gpu, &s),
        |gpu| prepare(gpu, &p),
    );
}

pub fn run(bench: &mut Bench) {
    let combos: &[(bool, bool, &str)] = if bench.sizes.square_transposes {
        &[
            (false, false, ""),
            (false, true, "_nt"),
            (true, false, "_tn"),
        ]
    } else {
        &[(false, false, "")]
    };
    for &(ta, tb, suffix) in combos {
        for s in bench.sizes.square.clone() {
            let mut p = Matmul::new(s, s, s);
            (p.trans_a, p.trans_b) = (ta, tb);
            figure(bench, format!("matmul_{s}x{s}x{s}{suffix}"), p, "");
        }
    }
    let batch = bench.sizes.fc_batch;
    for (inputs, outputs) in FC_LAYERS {
        // y[B, out] = x[B, in] · W[out, in]ᵀ, as PyTorch's Linear stores W.
        let fwd = Matmul::new(batch, outputs, inputs).transpose_b();
        let base = format!("matmul_fc_{inputs}x{outputs}_b{batch}");
        figure(bench, format!("{base}_fwd"), fwd, "forward y = x·Wᵀ: ");
        figure(
            bench,
            format!("{base}_grad_a"),
            fwd.grad_a(false),
            "dx = dy·W: ",
        );
        figure(
            bench,
            format!("{base}_grad_b"),
            fwd.grad_b(false),
            "dW = dyᵀ·x: ",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_keeps_residues_and_transposes() {
        let p = Matmul::new(4096, 1000, 9216).transpose_b();
        let s = small(&p);
        assert_eq!((s.m, s.n, s.k), (132, 132, 132));
        assert!(s.trans_b && !s.trans_a);
        assert_eq!(p.vec4_eligible(), s.vec4_eligible());
        assert_eq!(small_extent(16), 16);
        assert_eq!(small_extent(1001) % 4, 1);
    }

    #[test]
    fn fc_backward_shapes() {
        let fwd = Matmul::new(16, 4096, 9216).transpose_b();
        let (ga, gb) = (fwd.grad_a(false), fwd.grad_b(false));
        assert_eq!((ga.m, ga.n, ga.k), (16, 9216, 4096));
        assert_eq!((gb.m, gb.n, gb.k, gb.trans_a), (4096, 9216, 16, true));
        assert_eq!(fwd.macs(), ga.macs());
    }
}
