//! Clipping by global norm against the reference: per-tensor sums of squares into slots
//! (reduce with `into_slot`), the factor, and the in-place scale — both when the norm
//! exceeds `max_norm` and when it does not (factor 1, gradients unchanged).

mod common;

use common::*;
use wgtrain_device::kernels::clip::{ClipFactor, ClipScale};
use wgtrain_device::kernels::reduce::Reduce;
use wgtrain_device::reference::clip::clip_by_global_norm;

fn check(lengths: &[usize], max_norm: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    let grads: Vec<Vec<f32>> = lengths.iter().map(|&n| rng.vec(n)).collect();
    let k = grads.len() as u32;
    let bufs: Vec<_> = grads.iter().map(|g| upload(g)).collect();
    let norms = output(grads.len() + 1);
    let mut dispatches = Vec::new();
    let mut scratch = Vec::new();
    for (i, (g, b)) in grads.iter().zip(&bufs).enumerate() {
        let r = Reduce::sum_of_squares(g.len() as u32).into_slot(i as u32);
        let s = output(r.scratch_elems().max(1) as usize);
        dispatches.extend(r.prepare(gpu(), b, Some(&s), &norms).expect("reduce"));
        scratch.push(s);
    }
    dispatches.push(
        ClipFactor {
            tensors: k,
            max_norm,
        }
        .prepare(gpu(), &norms)
        .expect("factor"),
    );
    for (g, b) in grads.iter().zip(&bufs) {
        let scale = ClipScale {
            count: g.len() as u32,
            tensors: k,
        };
        dispatches.push(scale.prepare(gpu(), &norms, b).expect("scale"));
    }
    run(&dispatches.iter().collect::<Vec<_>>());
    let mut want = grads.clone();
    let total = clip_by_global_norm(&mut want, max_norm as f64);
    let got_norms = download(&norms, grads.len() + 1);
    let sum: f64 = got_norms[..grads.len()].iter().map(|&x| x as f64).sum();
    assert!(
        (sum.sqrt() - total).abs() < 1e-5 * total,
        "norm {} vs {total}",
        sum.sqrt()
    );
    for (i, (b, w)) in bufs.iter().zip(&want).enumerate() {
        assert_close(
            &format!("clip tensor {i} of {lengths:?}, max_norm {max_norm}"),
            &download(b, w.len()),
            w,
            1e-6,
            1e-7,
        );
    }
}

#[test]
fn clipping_scales_every_tensor_by_one_factor() {
    check(&[1, 7, 300_001, 64], 0.5, 1);
    check(&[1000, 3], 2.0, 2);
}

#[test]
fn a_norm_below_the_limit_leaves_gradients_unchanged() {
    check(&[10, 20], 1e6, 3);
}

#[test]
fn bad_max_norm_is_an_error() {
    let norms = output(3);
    let err = ClipFactor {
        tensors: 2,
        max_norm: 0.0,
    }
    .prepare(gpu(), &norms)
    .unwrap_err();
    assert!(err.to_string().contains("max_norm"), "{err}");
}
