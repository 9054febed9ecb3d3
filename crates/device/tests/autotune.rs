//! The autotuner: a tuned choice is one of the applicable variants and computes the right
//! answer; it is cached on disk and reused by the next process without timing anything;
//! `off` takes the heuristic choice; small problems are not tuned; a corrupt cache file
//! is reported and survived; a variant that fails validation is never picked.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wgtrain_device::Gpu;
use wgtrain_device::autotune::{Autotuner, MIN_TUNED_MACS, Mode};
use wgtrain_device::kernels::conv2d::Conv2d;
use wgtrain_device::kernels::matmul::Matmul;
use wgtrain_device::reference::conv2d as conv_reference;

/// A fresh, empty cache directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-autotune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A private GPU (its own tuner and counters) whose tuner uses `mode` and `dir`.
fn gpu_with(mode: Mode, dir: &Path) -> Gpu {
    let mut gpu = Gpu::new().expect("adapter");
    let tuner = Autotuner::with(gpu.info(), mode, Some(dir.to_path_buf()));
    gpu.set_autotuner(tuner);
    gpu
}

/// A product big enough to be tuned, whose vec4 and subgroup kernels apply.
fn product() -> Matmul {
    Matmul::new(256, 192, 128).with_bias()
}

#[test]
fn tuned_choice_is_valid_cached_on_disk_and_reused() {
    let dir = temp_dir("reuse");
    let p = product();
    assert!(p.macs() >= MIN_TUNED_MACS);
    let first = gpu_with(Mode::On, &dir);
    let chosen = p.tuned_variant(&first);
    assert!(
        p.variants(&first).contains(&chosen),
        "{chosen} not applicable"
    );
    let path = first.autotuner().path().expect("cache path").to_owned();
    let text = std::fs::read_to_string(&path).expect("cache file written");
    assert!(
        text.lines()
            .any(|l| l.starts_with("matmul\t") && l.contains(&format!("\t{chosen}\t"))),
        "{text}"
    );
    if p.variants(&first).len() > 1 {
        assert!(first.autotuner().submissions() > 0, "nothing was timed");
    }

    // A new process (a new tuner on the same directory) takes the answer from the file.
    let second = gpu_with(Mode::On, &dir);
    assert_eq!(p.tuned_variant(&second), chosen);
    assert_eq!(
        second.autotuner().submissions(),
        0,
        "re-timed a cached shape"
    );

    // `refresh` times again.
    let third = gpu_with(Mode::Refresh, &dir);
    let again = p.tuned_variant(&third);
    assert!(p.variants(&third).contains(&again));
    if p.variants(&third).len() > 1 {
        assert!(third.autotuner().submissions() > 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tuned_kernels_compute_the_right_answer() {
    let dir = temp_dir("answer");
    let gpu = gpu_with(Mode::On, &dir);
    let p = Conv2d::new(2, 14, 13, 32, 36, 3, 3)
        .pad(1, 1)
        .with_bias()
        .with_relu();
    assert!(p.macs() >= MIN_TUNED_MACS);
    let mut rng = Rng::new(5);
    let x = rng.vec(p.x_elems() as usize);
    let w = rng.vec(p.w_elems() as usize);
    let bias = rng.vec(p.k as usize);
    let (dx, dw, db) = (
        gpu.upload(&x, "x").unwrap(),
        gpu.upload(&w, "w").unwrap(),
        gpu.upload(&bias, "b").unwrap(),
    );
    let dy = gpu.pool().acquire(4 * p.y_elems(), "y").unwrap();
    let d = p.prepare(&gpu, &dx, &dw, Some(&db), &dy).unwrap();
    let mut encoder = gpu.encoder("test");
    d.encode(&mut encoder);
    gpu.submit(encoder);
    let got: Vec<f32> = gpu.download(&dy, p.y_elems() as usize).unwrap();
    let want = conv_reference::forward(&p, &x, &w, Some(&bias));
    let t = 1e-5 * ((p.r * p.s * p.cg()) as f32).sqrt();
    assert_close("tuned conv2d forward", &got, &want, t, t);
    let decisions = gpu.autotuner().decisions();
    if p.forward_variants(&gpu).len() > 1 {
        assert!(
            decisions
                .iter()
                .any(|(kernel, _, _)| kernel == "conv2d_forward"),
            "{decisions:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file of the same adapter and driver for other shaders (another hash) is removed
/// when the current one is written; another adapter's file stays.
#[test]
fn stale_cache_files_of_this_adapter_are_pruned() {
    let dir = temp_dir("prune");
    let gpu = gpu_with(Mode::On, &dir);
    let path = gpu.autotuner().path().unwrap().to_owned();
    let header = format!(
        "# wgtrain autotune cache v1: {} ({:?}), driver {} {}",
        gpu.info().name,
        gpu.info().backend,
        gpu.info().driver,
        gpu.info().driver_info
    );
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join("autotune-0000000000000000.tsv");
    let other = dir.join("autotune-1111111111111111.tsv");
    std::fs::write(&stale, format!("{header}\nmatmul\tx\tvec4\t1.0\n")).unwrap();
    std::fs::write(&other, "# wgtrain autotune cache v1: another adapter\n").unwrap();
    product().tuned_variant(&gpu);
    if product().variants(&gpu).len() > 1 {
        assert!(path.exists());
        assert!(!stale.exists(), "stale file of this adapter kept");
    }
    assert!(other.exists(), "another adapter's file removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn off_and_small_problems_take_the_heuristic_untimed() {
    let dir = temp_dir("off");
    let off = gpu_with(Mode::Off, &dir);
    let p = product();
    assert_eq!(p.tuned_variant(&off), p.heuristic_variant(&off));
    assert_eq!(off.autotuner().submissions(), 0);
    assert!(off.autotuner().decisions().is_empty());

    let on = gpu_with(Mode::On, &dir);
    let small = Matmul::new(64, 64, 64);
    assert!(small.macs() < MIN_TUNED_MACS);
    assert_eq!(small.tuned_variant(&on), small.heuristic_variant(&on));
    assert_eq!(on.autotuner().submissions(), 0);
    assert!(!dir.exists(), "nothing tuned, yet a cache was written");
}

#[test]
fn a_corrupt_cache_file_is_survived() {
    let dir = temp_dir("corrupt");
    let probe = gpu_with(Mode::On, &dir);
    let path = probe.autotuner().path().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let p = product();
    // One good line for another shape, one that names no known variant for ours, and junk.
    let ours = format!("{p:?}");
    std::fs::write(
        &path,
        format!(
            "matmul\tother shape\tvec4\t10.0\nmatmul\t{ours}\tno-such-kernel\t1.0\n\u{0}garbage\n"
        ),
    )
    .unwrap();
    let gpu = gpu_with(Mode::On, &dir);
    assert!(
        gpu.autotuner()
            .decisions()
            .iter()
            .any(|(_, shape, v)| shape == "other shape" && v == "vec4")
    );
    // The unknown variant is ignored: the shape is tuned afresh and the file repaired.
    let chosen = p.tuned_variant(&gpu);
    assert!(p.variants(&gpu).contains(&chosen));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("garbage"), "{text}");
    assert!(text.contains("other shape"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_variant_failing_validation_is_never_picked() {
    let dir = temp_dir("invalid");
    let gpu = gpu_with(Mode::On, &dir);
    let tuner = gpu.autotuner();
    let candidates = ["slow", "fast-but-wrong", "medium"];
    let ms = |v: &str| match v {
        "slow" => 9,
        "fast-but-wrong" => 1,
        _ => 5,
    };
    let chosen = tuner.choose(
        "fake",
        "shape",
        MIN_TUNED_MACS,
        &candidates,
        "slow",
        |_| String::new(),
        |v| Ok(v != "fast-but-wrong"),
        |v, _| Ok(std::time::Duration::from_millis(ms(v))),
    );
    assert_eq!(chosen, "medium");
    // A choice made while a candidate failed is not written to the cache file.
    assert!(
        !tuner.path().unwrap().exists(),
        "stored despite a failed candidate"
    );
    // And with every candidate failing, the heuristic choice stands.
    let none = tuner.choose(
        "fake",
        "other",
        MIN_TUNED_MACS,
        &candidates,
        "slow",
        |_| "all".to_owned(),
        |_| Ok(false),
        |v, _| Ok(std::time::Duration::from_millis(ms(v))),
    );
    assert_eq!(none, "slow");
    // Kernels too slow to tune within the budget: the heuristic is timed first, and
    // once the budget is spent the rest are skipped.
    let mut timed = Vec::new();
    let slowest = tuner.choose(
        "fake",
        "slow shape",
        MIN_TUNED_MACS,
        &candidates,
        "medium",
        |_| "slow".to_owned(),
        |_| Ok(true),
        |v, _| {
            timed.push(v);
            std::thread::sleep(std::time::Duration::from_millis(900));
            Ok(std::time::Duration::from_millis(ms(v)))
        },
    );
    assert_eq!(timed[0], "medium", "the heuristic is timed first");
    assert!(timed.len() < 4, "kept timing past the budget: {timed:?}");
    assert!(candidates.contains(&slowest));
    let _ = std::fs::remove_dir_all(&dir);
}
