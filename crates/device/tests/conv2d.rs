//! Conv2d against the CPU reference on awkward shapes (1x1, padding beyond the filter,
//! strides larger than the filter, dilation, grouped and depthwise, odd channel counts,
//! non-square images and filters): the forward pass with and without its bias + ReLU
//! epilogue, and both backward passes (overwriting and accumulating). The reference
//! backward passes are themselves checked against central differences of the reference
//! forward pass in f64.

mod common;

use common::*;
use wgtrain_device::kernels::conv2d::{Conv2d, ConvVariant};
use wgtrain_device::reference::conv2d as reference;

/// Shapes that each stress one part of the index arithmetic.
fn cases() -> Vec<(&'static str, Conv2d)> {
    vec![
        ("1x1", Conv2d::new(2, 5, 7, 5, 7, 1, 1)),
        ("3x3 pad 1", Conv2d::new(1, 8, 8, 3, 5, 3, 3).pad(1, 1)),
        (
            "3x3 stride 2",
            Conv2d::new(3, 9, 9, 4, 6, 3, 3).pad(1, 1).stride(2, 2),
        ),
        (
            "1x1 stride 2",
            Conv2d::new(2, 7, 6, 7, 3, 1, 1).stride(2, 2),
        ),
        (
            "2x2 stride 3",
            Conv2d::new(1, 10, 11, 3, 5, 2, 2).stride(3, 3),
        ),
        (
            "pad 2 dilation 2",
            Conv2d::new(2, 9, 8, 5, 4, 3, 3).pad(2, 2).dilation(2, 2),
        ),
        (
            "pad 3 beyond the filter",
            Conv2d::new(1, 4, 5, 3, 4, 3, 3).pad(3, 3),
        ),
        (
            "groups 2 narrow",
            Conv2d::new(3, 7, 7, 6, 8, 3, 3).pad(1, 1).grouped(2),
        ),
        (
            "groups 2 wide",
            Conv2d::new(1, 6, 5, 64, 64, 3, 3).pad(1, 1).grouped(2),
        ),
        (
            "depthwise",
            Conv2d::new(2, 6, 7, 7, 7, 3, 3).pad(1, 1).grouped(7),
        ),
        (
            "depthwise x2 stride 2",
            Conv2d::new(1, 9, 8, 5, 10, 3, 3)
                .pad(1, 1)
                .stride(2, 2)
                .grouped(5),
        ),
        (
            "non-square",
            Conv2d::new(3, 6, 11, 3, 5, 3, 2)
                .stride(2, 1)
                .pad(1, 0)
                .dilation(1, 2),
        ),
        (
            "alexnet conv1",
            Conv2d::new(1, 35, 35, 3, 8, 11, 11).stride(4, 4).pad(2, 2),
        ),
        (
            "many workgroups",
            Conv2d::new(2, 20, 20, 16, 40, 3, 3).pad(1, 1),
        ),
        // C/groups and K/groups multiples of 4: the vec4 kernels.
        (
            "vec4 pad 2 batch 1 partial tile",
            Conv2d::new(1, 7, 9, 40, 20, 5, 5).pad(2, 2),
        ),
        (
            "vec4 stride 2",
            Conv2d::new(2, 9, 11, 8, 12, 3, 3).pad(1, 1).stride(2, 2),
        ),
        (
            "vec4 stride 2x3 dilation",
            Conv2d::new(1, 10, 13, 4, 8, 3, 2)
                .pad(2, 1)
                .stride(2, 3)
                .dilation(2, 1),
        ),
        (
            "vec4 groups 2",
            Conv2d::new(2, 6, 7, 64, 72, 3, 3).pad(1, 1).grouped(2),
        ),
        ("vec4 lenet conv2", Conv2d::new(3, 12, 12, 16, 32, 5, 5)),
    ]
}

/// Tolerance for sums of `terms` products of values in [-1, 1].
fn tol(terms: u32) -> f32 {
    1e-5 * (terms.max(1) as f32).sqrt()
}

fn check_forward(name: &str, p: Conv2d, seed: u64) {
    check_forward_with(name, p, None, seed);
}

/// `variant`: a chosen forward kernel; `None`: the one `prepare` picks.
fn check_forward_with(name: &str, p: Conv2d, variant: Option<ConvVariant>, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(p.x_elems() as usize);
    let w = rng.vec(p.w_elems() as usize);
    let bias = rng.vec(p.k as usize);
    let (dx, dw, db) = (upload(&x), upload(&w), upload(&bias));
    let dy = output(p.y_elems() as usize);
    let bias_buf = p.bias.then_some(&*db);
    let d = match variant {
        Some(v) => p.prepare_forward_variant(gpu(), v, &dx, &dw, bias_buf, &dy),
        None => p.prepare(gpu(), &dx, &dw, bias_buf, &dy),
    }
    .expect("prepare forward");
    run(&[&d]);
    let got = download(&dy, p.y_elems() as usize);
    let want = reference::forward(&p, &x, &w, p.bias.then_some(&bias[..]));
    let t = tol(p.r * p.s * p.cg());
    let what = format!(
        "conv2d forward {name} bias={} relu={} ({variant:?})",
        p.bias, p.relu
    );
    assert_close(&what, &got, &want, t, t);
}

/// Every forward kernel the adapter offers (on lavapipe: the register-blocked one and the
/// subgroup kernels with 8, 16 and 32 rows) on the shapes whose channels allow it, with
/// partial row and column tiles, padding, strides, dilation and groups.
#[test]
fn every_forward_variant_matches_reference() {
    let extra = [
        (
            "sg partial tiles",
            Conv2d::new(3, 5, 7, 8, 36, 3, 3).pad(1, 1),
        ),
        (
            "sg 1x1 stride 2",
            Conv2d::new(2, 9, 9, 12, 8, 1, 1).stride(2, 2),
        ),
        (
            "sg dilated",
            Conv2d::new(1, 11, 10, 4, 40, 3, 3).pad(2, 2).dilation(2, 2),
        ),
        (
            "sg groups 2",
            Conv2d::new(2, 6, 6, 16, 80, 3, 3).pad(1, 1).grouped(2),
        ),
        // Fewer out-channels than a lane's 4 columns (ResNet-50 at width 2).
        ("sg 2 out-channels", Conv2d::new(4, 16, 16, 8, 2, 1, 1)),
        (
            "sg 6 out-channels",
            Conv2d::new(2, 5, 6, 4, 6, 3, 3).pad(1, 1),
        ),
        // Few channels: the flattened-taps kernels.
        ("taps lenet conv1", Conv2d::new(2, 28, 28, 1, 16, 5, 5)),
        (
            "taps resnet stem",
            Conv2d::new(1, 20, 18, 3, 40, 7, 7).pad(3, 3).stride(2, 2),
        ),
        (
            "taps 2 channels groups 2",
            Conv2d::new(2, 9, 8, 4, 64, 3, 3).pad(1, 1).grouped(2),
        ),
    ];
    let mut tried = std::collections::BTreeSet::new();
    for (i, (name, p)) in cases().into_iter().chain(extra).enumerate() {
        for v in p.forward_variants(gpu()) {
            tried.insert(format!("{v:?}"));
            let seed = 900 + 10 * i as u64;
            check_forward_with(name, p, Some(v), seed);
            check_forward_with(name, p.with_bias().with_relu(), Some(v), seed + 1);
        }
    }
    eprintln!("forward variants checked: {tried:?}");
}

/// Every backward-data kernel the adapter offers on the shapes that allow them (strided
/// ones by stride phases, including phases no tap reaches), overwriting and
/// accumulating.
#[test]
fn every_backward_data_variant_matches_reference() {
    let extra = [
        (
            "sg partial tiles",
            Conv2d::new(3, 5, 7, 8, 36, 3, 3).pad(1, 1),
        ),
        ("sg 1x1", Conv2d::new(2, 9, 9, 12, 8, 1, 1)),
        (
            "sg dilated",
            Conv2d::new(1, 11, 10, 4, 40, 3, 3).pad(2, 2).dilation(2, 2),
        ),
        ("sg no padding", Conv2d::new(2, 8, 9, 16, 12, 5, 3)),
        (
            "sg groups 2",
            Conv2d::new(2, 6, 6, 16, 80, 3, 3).pad(1, 1).grouped(2),
        ),
        // Strided: by stride phases.
        (
            "phases 3x3 s2 odd sizes",
            Conv2d::new(2, 9, 7, 8, 16, 3, 3).pad(1, 1).stride(2, 2),
        ),
        (
            "phases 1x1 s2 (phases without taps)",
            Conv2d::new(2, 8, 9, 16, 36, 1, 1).stride(2, 2),
        ),
        (
            "phases 7x7 s2 pad 3",
            Conv2d::new(1, 13, 12, 4, 8, 7, 7).pad(3, 3).stride(2, 2),
        ),
        (
            "phases s3x2 no padding",
            Conv2d::new(2, 10, 9, 4, 12, 4, 3).stride(3, 2),
        ),
        (
            "phases groups 2",
            Conv2d::new(2, 7, 8, 16, 80, 3, 3)
                .pad(1, 1)
                .stride(2, 2)
                .grouped(2),
        ),
        (
            "phases stride beyond the filter",
            Conv2d::new(1, 11, 11, 8, 8, 2, 2).stride(3, 3),
        ),
    ];
    let mut tried = std::collections::BTreeSet::new();
    for (i, (name, p)) in cases().into_iter().chain(extra).enumerate() {
        for v in p.backward_data_variants(gpu()) {
            tried.insert(format!("{v:?}"));
            let seed = 1900 + 10 * i as u64;
            check_backward_data_with(name, p, Some(v), seed, false);
            check_backward_data_with(name, p, Some(v), seed + 1, true);
        }
    }
    eprintln!("backward-data variants checked: {tried:?}");
}

/// Every backward-filter kernel the adapter offers on the shapes that allow them
/// (strides, padding, dilation, groups, partial row and column tiles, pixel counts not a
/// multiple of 4), overwriting and accumulating.
#[test]
fn every_backward_filter_variant_matches_reference() {
    let extra = [
        (
            "sg partial tiles",
            Conv2d::new(3, 5, 7, 8, 36, 3, 3).pad(1, 1),
        ),
        ("sg 1x1", Conv2d::new(2, 9, 9, 12, 8, 1, 1)),
        (
            "sg 1x1 stride 2 odd pixels",
            Conv2d::new(1, 7, 9, 12, 8, 1, 1).stride(2, 2),
        ),
        (
            "sg dilated",
            Conv2d::new(1, 11, 10, 4, 40, 3, 3).pad(2, 2).dilation(2, 2),
        ),
        ("sg no padding", Conv2d::new(2, 8, 9, 16, 12, 5, 3)),
        (
            "sg groups 2",
            Conv2d::new(2, 6, 6, 16, 80, 3, 3).pad(1, 1).grouped(2),
        ),
        (
            "sg 4 out-channels",
            Conv2d::new(2, 5, 6, 8, 4, 3, 3).pad(1, 1),
        ),
        // Few channels: the flattened-taps kernels.
        ("taps lenet conv1", Conv2d::new(2, 28, 28, 1, 16, 5, 5)),
        (
            "taps resnet stem",
            Conv2d::new(1, 20, 18, 3, 40, 7, 7).pad(3, 3).stride(2, 2),
        ),
        (
            "taps dilated groups 2",
            Conv2d::new(2, 9, 8, 6, 64, 3, 3)
                .pad(2, 2)
                .dilation(2, 1)
                .grouped(2),
        ),
    ];
    let mut tried = std::collections::BTreeSet::new();
    for (i, (name, p)) in cases().into_iter().chain(extra).enumerate() {
        for v in p.backward_filter_variants(gpu()) {
            tried.insert(format!("{v:?}"));
            let seed = 2900 + 10 * i as u64;
            check_backward_filter_with(name, p, Some(v), seed, false);
            check_backward_filter_with(name, p, Some(v), seed + 1, true);
        }
    }
    eprintln!("backward-filter variants checked: {tried:?}");
}

#[test]
fn forward_matches_reference_with_and_without_epilogue() {
    for (i, (name, p)) in cases().into_iter().enumerate() {
        let seed = 10 * i as u64;
        check_forward(name, p, seed);
        check_forward(name, p.with_bias(), seed + 1);
        check_forward(name, p.with_bias().with_relu(), seed + 2);
        check_forward(name, p.with_relu(), seed + 3);
    }
}

fn check_backward_data(name: &str, p: Conv2d, seed: u64, accumulate: bool) {
    check_backward_data_with(name, p, None, seed, accumulate);
}

fn check_backward_data_with(
    name: &str,
    p: Conv2d,
    variant: Option<ConvVariant>,
    seed: u64,
    accumulate: bool,
) {
    let mut rng = Rng::new(seed);
    let g = rng.vec(p.y_elems() as usize);
    let w = rng.vec(p.w_elems() as usize);
    let dx0 = rng.vec(p.x_elems() as usize);
    let (dg, dw) = (upload(&g), upload(&w));
    let dx = if accumulate {
        upload(&dx0)
    } else {
        output(p.x_elems() as usize)
    };
    let d = match variant {
        Some(v) => p.prepare_backward_data_variant(gpu(), v, &dg, &dw, &dx, accumulate),
        None => p.prepare_backward_data(gpu(), &dg, &dw, &dx, accumulate),
    }
    .expect("prepare data");
    run(&[&d]);
    let got = download(&dx, p.x_elems() as usize);
    let mut want = reference::backward_data(&p, &g, &w);
    if accumulate {
        want.iter_mut().zip(&dx0).for_each(|(w, d)| *w += d);
    }
    let t = tol(p.r * p.s * p.kg());
    assert_close(
        &format!("conv2d backward_data {name} accumulate={accumulate} ({variant:?})"),
        &got,
        &want,
        t,
        t,
    );
}

fn check_backward_filter(name: &str, p: Conv2d, seed: u64, accumulate: bool) {
    check_backward_filter_with(name, p, None, seed, accumulate);
}

fn check_backward_filter_with(
    name: &str,
    p: Conv2d,
    variant: Option<ConvVariant>,
    seed: u64,
    accumulate: bool,
) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(p.x_elems() as usize);
    let g = rng.vec(p.y_elems() as usize);
    let dw0 = rng.vec(p.w_elems() as usize);
    let (dx, dg) = (upload(&x), upload(&g));
    let dw = if accumulate {
        upload(&dw0)
    } else {
        output(p.w_elems() as usize)
    };
    let d = match variant {
        Some(v) => p.prepare_backward_filter_variant(gpu(), v, &dx, &dg, &dw, accumulate),
        None => p.prepare_backward_filter(gpu(), &dx, &dg, &dw, accumulate),
    }
    .expect("prepare filter");
    run(&[&d]);
    let got = download(&dw, p.w_elems() as usize);
    let mut want = reference::backward_filter(&p, &x, &g);
    if accumulate {
        want.iter_mut().zip(&dw0).for_each(|(w, d)| *w += d);
    }
    let t = tol(p.n * p.p() * p.q());
    let what = format!("conv2d backward_filter {name} accumulate={accumulate} ({variant:?})");
    assert_close(&what, &got, &want, t, t);
}

#[test]
fn backward_data_matches_reference() {
    for (i, (name, p)) in cases().into_iter().enumerate() {
        check_backward_data(name, p, 1000 + i as u64, false);
    }
    check_backward_data("3x3 stride 2", cases()[2].1, 1100, true);
    check_backward_data("depthwise", cases()[9].1, 1101, true);
    check_backward_data("vec4 groups 2", cases()[17].1, 1102, true);
}

#[test]
fn backward_filter_matches_reference() {
    for (i, (name, p)) in cases().into_iter().enumerate() {
        check_backward_filter(name, p, 2000 + i as u64, false);
    }
    check_backward_filter("3x3 stride 2", cases()[2].1, 2100, true);
    check_backward_filter("groups 2 narrow", cases()[7].1, 2101, true);
    check_backward_filter("vec4 groups 2", cases()[17].1, 2102, true);
}

/// Up to `count` indices spread evenly over `0..len`, first and last included.
fn sample(len: usize, count: usize) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    (0..count).map(|i| i * (len - 1) / (count - 1)).collect()
}

/// Checks `grad` (the reference backward) at sampled indices against central differences
/// of `loss` in `v`. The loss is linear in `v`, so the difference is exact up to rounding.
fn check_fd(what: &str, v: &[f64], grad: &[f64], loss: impl Fn(&[f64]) -> f64) {
    let h = 0.25;
    for idx in sample(v.len(), 24) {
        let (mut plus, mut minus) = (v.to_vec(), v.to_vec());
        plus[idx] += h;
        minus[idx] -= h;
        let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
        let err = (fd - grad[idx]).abs();
        assert!(
            err < 1e-9 * (1.0 + fd.abs()),
            "{what}[{idx}]: finite difference {fd} vs {}",
            grad[idx]
        );
    }
}

/// Loss L = Σ y ⊙ g for a fixed g, so dL/dy = g, and the backward passes give dL/dx and
/// dL/dw. Bias and ReLU are left out: the bias does not change dx or dw, and the ReLU's
/// backward (masking g) belongs to the elementwise family.
#[test]
fn reference_backward_matches_finite_differences() {
    for (i, (name, p)) in cases().into_iter().enumerate() {
        let mut rng = Rng::new(3000 + i as u64);
        let f64s = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
        let x = f64s(rng.vec(p.x_elems() as usize));
        let w = f64s(rng.vec(p.w_elems() as usize));
        let g = f64s(rng.vec(p.y_elems() as usize));
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            let y = reference::forward_f64(&p, x, w, None);
            y.iter().zip(&g).map(|(y, g)| y * g).sum()
        };
        let dx = reference::backward_data_f64(&p, &g, &w);
        let dw = reference::backward_filter_f64(&p, &x, &g);
        check_fd(&format!("{name}: dx"), &x, &dx, |x| loss(x, &w));
        check_fd(&format!("{name}: dw"), &w, &dw, |w| loss(&x, w));
    }
}

#[test]
fn bad_params_are_errors_not_panics() {
    let buf = upload(&[0.0; 4096]);
    let (x, w, y) = (&*buf, &*upload(&[0.0; 4096]), &*output(4096));
    let err = |p: Conv2d| p.prepare(gpu(), x, w, None, y).unwrap_err().to_string();

    let e = err(Conv2d::new(1, 8, 8, 6, 8, 3, 3).grouped(4));
    assert!(e.contains("C = 6") && e.contains("groups = 4"), "{e}");
    let e = err(Conv2d::new(1, 8, 8, 8, 6, 3, 3).grouped(4));
    assert!(e.contains("K = 6") && e.contains("groups = 4"), "{e}");
    let e = err(Conv2d::new(1, 2, 8, 3, 4, 3, 3));
    assert!(e.contains("output is empty") && e.contains("P = 0"), "{e}");
    let e = err(Conv2d::new(1, 8, 8, 3, 4, 3, 3).stride(0, 1));
    assert!(e.contains("positive") && e.contains("stride 0x1"), "{e}");
    let e = err(Conv2d::new(1, 8, 8, 3, 4, 3, 3).with_bias());
    assert!(e.contains("bias"), "{e}");
    let e = err(Conv2d::new(4, 32, 32, 3, 4, 3, 3));
    assert!(e.contains("binding `x`") && e.contains("49152"), "{e}");
    let e = Conv2d::new(1, 8, 8, 3, 4, 3, 3)
        .prepare_backward_filter(gpu(), x, w, x, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("same buffer"), "{e}");
}
