//! Shared helpers for graph tests: one GPU per test binary, synthetic data, and a
//! finite-difference gradient check through a whole graph.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use wgtrain_graph::device::Gpu;
use wgtrain_graph::{Feed, Mode, Rng, Session, StepInfo, Training};

/// The process-wide GPU; with no adapter the test fails with the install hint.
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new().unwrap_or_else(|e| panic!("{e}"))))
        .clone()
}

/// `n` values uniform in [-1, 1).
pub fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect()
}

/// Labels in `0..classes`.
pub fn labels(rng: &mut Rng, n: usize, classes: u32) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % classes as u64) as u32)
        .collect()
}

fn loss_at(session: &mut Session, training: &Training, feeds: &[Feed<'_>]) -> f64 {
    let step = StepInfo {
        step: 1,
        lr: 0.0,
        seed: 0,
    };
    let out = session
        .run(Mode::Train, feeds, &[training.loss], &[], step)
        .expect("run");
    out.scalar(training.loss) as f64
}

/// For every parameter, compares the directional derivative of the loss along a random
/// unit direction, by central differences (step `h`) of the GPU forward pass, with the
/// GPU gradient's dot product with that direction. Returns the worst relative error.
pub fn check_gradients(
    session: &mut Session,
    training: &Training,
    feeds: &[Feed<'_>],
    h: f32,
    tol: f64,
) -> f64 {
    let (_, grads) = session.gradients(training, feeds).expect("gradients");
    let mut rng = Rng::new(77);
    let mut worst = 0.0f64;
    for (name, grad) in &grads {
        let theta = session.read_variable(name).expect("read");
        let mut d: Vec<f32> = (0..theta.len()).map(|_| rng.normal() as f32).collect();
        let norm = d.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() as f32;
        d.iter_mut().for_each(|x| *x /= norm);
        let shifted =
            |s: f32| -> Vec<f32> { theta.iter().zip(&d).map(|(&t, &di)| t + s * di).collect() };
        session.write_variable(name, &shifted(h)).expect("write");
        let plus = loss_at(session, training, feeds);
        session.write_variable(name, &shifted(-h)).expect("write");
        let minus = loss_at(session, training, feeds);
        session.write_variable(name, &theta).expect("write");
        let fd = (plus - minus) / (2.0 * h as f64);
        let analytic: f64 = grad
            .iter()
            .zip(&d)
            .map(|(&g, &di)| g as f64 * di as f64)
            .sum();
        let err = (fd - analytic).abs() / analytic.abs().max(fd.abs()).max(1e-3);
        println!("grad check {name}: analytic {analytic:.6e} fd {fd:.6e} rel err {err:.2e}");
        assert!(
            err < tol,
            "{name}: analytic {analytic} vs finite difference {fd} (rel {err:.3e})"
        );
        worst = worst.max(err);
    }
    worst
}
