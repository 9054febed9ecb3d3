//! Reductions (sum, mean, sum of squares) against the f64 reference on lengths from 1 to
//! past a million, powers of two and not, one pass and two; bitwise determinism; errors.

mod common;

use common::*;
use wgtrain_device::kernels::reduce::{Reduce, ReduceOp};
use wgtrain_device::reference::reduce as reference;

const OPS: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::SumOfSquares];

/// Runs `p` on `x` and returns the GPU scalar.
fn reduce_on_gpu(p: Reduce, x: &[f32]) -> f32 {
    let bx = upload(x);
    let scratch = output(p.scratch_elems() as usize);
    let out = output(1);
    let ks = p
        .prepare(gpu(), &bx, Some(&scratch), &out)
        .expect("prepare");
    assert_eq!(ks.len(), if p.groups() > 1 { 2 } else { 1 }, "{p:?}");
    run(&ks.iter().collect::<Vec<_>>());
    download(&out, 1)[0]
}

/// GPU against the f64 reference. The f32 error of a sum is bounded by a multiple of
/// eps · Σ|xᵢ| (the terms, not the result, set the scale): each invocation sums its
/// share serially, then two trees of depth ≤ 10 add the partials. For a mean the bound
/// is divided by the count like the result.
fn check(p: Reduce, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(p.count as usize);
    let wide: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let want = reference::reduce(&p, &wide) as f32;
    let magnitude: f64 = match p.op {
        ReduceOp::Sum => wide.iter().map(|v| v.abs()).sum(),
        ReduceOp::Mean => wide.iter().map(|v| v.abs()).sum::<f64>() / p.count as f64,
        ReduceOp::SumOfSquares => wide.iter().map(|v| v * v).sum(),
    };
    let per_thread = p.count.div_ceil(p.groups() * 256) as f64;
    let atol = (f32::EPSILON as f64 * magnitude * (per_thread + 20.0).sqrt()) as f32;
    let got = reduce_on_gpu(p, &x);
    assert_close(&format!("{p:?}"), &[got], &[want], 2.0 * f32::EPSILON, atol);
}

#[test]
fn awkward_lengths_one_and_two_passes() {
    let lengths = [
        1, 2, 3, 7, 255, 256, 257, 1023, 1024, 1025, 4097, 65_537, 100_000,
    ];
    for (i, &count) in lengths.iter().enumerate() {
        for (j, op) in OPS.into_iter().enumerate() {
            check(Reduce::new(op, count), (i * 3 + j) as u64);
        }
    }
}

#[test]
fn lengths_past_a_million() {
    for (i, &count) in [1 << 20, (1 << 20) + 1, 3_000_001].iter().enumerate() {
        for (j, op) in OPS.into_iter().enumerate() {
            let p = Reduce::new(op, count);
            assert!(p.groups() > 1 && p.scratch_elems() > 0);
            check(p, 100 + (i * 3 + j) as u64);
        }
    }
}

#[test]
fn constant_input_sums_exactly() {
    // 2^k copies of 0.5 sum to an exactly representable power of two at every level.
    let x = vec![0.5f32; 1 << 18];
    assert_eq!(reduce_on_gpu(Reduce::sum(1 << 18), &x), (1 << 17) as f32);
    assert_eq!(reduce_on_gpu(Reduce::mean(1 << 18), &x), 0.5);
    assert_eq!(
        reduce_on_gpu(Reduce::sum_of_squares(1 << 18), &x),
        (1 << 16) as f32
    );
}

#[test]
fn results_are_bitwise_deterministic() {
    let mut rng = Rng::new(7);
    let x = rng.vec(777_777);
    for op in OPS {
        let p = Reduce::new(op, 777_777);
        let first = reduce_on_gpu(p, &x).to_bits();
        for _ in 0..3 {
            assert_eq!(reduce_on_gpu(p, &x).to_bits(), first, "{p:?}");
        }
    }
}

#[test]
fn bad_params_are_errors_not_panics() {
    let small = upload(&[0.0; 4]);
    let out = output(1);
    let err = Reduce::sum(0)
        .prepare(gpu(), &small, None, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("count must be positive"), "{err}");
    let p = Reduce::mean(1 << 20);
    let err = p
        .prepare(gpu(), &small, None, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scratch buffer of 1024"), "{err}");
    let scratch = output(1024);
    let err = p
        .prepare(gpu(), &small, Some(&scratch), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("binding `x`"), "{err}");
}
