//! Helpers of the data-parallel tests (`distributed.rs`, `mpi.rs`): fresh devices with
//! fixed kernel choices, random global batches, the single-replica reference run, and
//! the per-tensor comparison.
#![allow(dead_code)]

use std::sync::Arc;

use wgtrain_graph::device::Gpu;
use wgtrain_graph::device::autotune::{Autotuner, Mode as Tune};
use wgtrain_graph::{Feed, Optimizer, Rng, Session};
use wgtrain_models::zoo::{self, Model};
use wgtrain_parallel::{Communicator, LocalComm, broadcast_variables, train_step};

pub type Named = Vec<(String, Vec<f32>)>;

/// A fresh device on the default adapter with autotuning off (fixed kernel choices).
pub fn device() -> Arc<Gpu> {
    let mut gpu = Gpu::new().unwrap_or_else(|e| panic!("{e}"));
    let tuner = Autotuner::with(gpu.info(), Tune::Off, None);
    gpu.set_autotuner(tuner);
    Arc::new(gpu)
}

/// `steps` global batches of `global` random images and labels.
pub fn batches(
    steps: usize,
    global: usize,
    input: [usize; 3],
    classes: usize,
) -> Vec<(Vec<f32>, Vec<u32>)> {
    let per = input.iter().product::<usize>();
    let mut rng = Rng::stream(42, 0);
    (0..steps)
        .map(|_| {
            let x = (0..global * per)
                .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let y = (0..global)
                .map(|_| (rng.next_u64() % classes as u64) as u32)
                .collect();
            (x, y)
        })
        .collect()
}

pub fn optimizer() -> Optimizer {
    Optimizer::sgd_momentum(0.9, 5e-4, false)
}

/// The parameters and the batch-norm running statistics (not the optimizer state).
pub fn trainable(session: &Session) -> Named {
    session
        .graph()
        .variables()
        .iter()
        .filter(|v| !v.optimizer_state)
        .map(|v| (v.name.clone(), session.read_variable(&v.name).unwrap()))
        .collect()
}

pub fn feeds<'a>(model: &Model, x: &'a [f32], y: &'a [u32]) -> [Feed<'a>; 2] {
    let [h, w, c] = model.input;
    [
        Feed::f32("images", &[y.len(), h, w, c], x),
        Feed::u32("labels", &[y.len()], y),
    ]
}

/// One replica on one device, the whole global batch, plain `minimize`.
pub fn single(build: &dyn Fn(usize) -> Model, data: &[(Vec<f32>, Vec<u32>)], lr: f32) -> Named {
    let mut model = build(data[0].1.len());
    let training = model.graph.minimize(model.loss, optimizer()).unwrap();
    let mut session = Session::new(device(), model.graph.clone(), 1).unwrap();
    for (x, y) in data {
        let out = session
            .train_step(&training, &feeds(&model, x, y), lr)
            .unwrap();
        assert!(out.loss.is_finite());
    }
    trainable(&session)
}

/// Largest |a − b| over the largest |b| of the tensor, per tensor; the worst one.
pub fn worst_relative(a: &Named, b: &Named) -> (f32, String) {
    let mut worst = (0.0f32, String::new());
    for ((name, x), (name_b, y)) in a.iter().zip(b) {
        assert_eq!(name, name_b);
        let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = x
            .iter()
            .zip(y)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, name.clone());
        }
    }
    worst
}

pub fn mlp(batch: usize) -> Model {
    zoo::mlp([6, 5, 1], &[37, 19], 7, batch).unwrap()
}

/// `world` replicas as threads, each on its own device with its own seed (rank 0's is
/// the single run's), gradients in buckets of `bucket_bytes`. Returns every rank's
/// final parameters.
pub fn replicas(
    build: &(dyn Fn(usize) -> Model + Sync),
    world: usize,
    data: &[(Vec<f32>, Vec<u32>)],
    lr: f32,
    bucket_bytes: u64,
) -> Vec<Named> {
    let global = data[0].1.len();
    let n = global / world;
    let comms = LocalComm::group(world);
    std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                scope.spawn(move || {
                    let rank = comm.rank();
                    let mut model = build(n);
                    let training = model
                        .graph
                        .minimize_synced(model.loss, optimizer(), None, bucket_bytes)
                        .unwrap();
                    let seed = 1 + 1000 * rank as u64;
                    let mut session = Session::new(device(), model.graph.clone(), seed).unwrap();
                    broadcast_variables(&session, &comm, 0).unwrap();
                    let per = model.input.iter().product::<usize>();
                    for (x, y) in data {
                        let xs = &x[rank * n * per..(rank + 1) * n * per];
                        let ys = &y[rank * n..(rank + 1) * n];
                        let share = n as f32 / global as f32;
                        let (out, stats) = train_step(
                            &mut session,
                            &training,
                            &comm,
                            &feeds(&model, xs, ys),
                            lr,
                            share,
                        )
                        .unwrap();
                        assert!(out.loss.is_finite());
                        assert!(stats.sync.buckets >= training.buckets.len());
                    }
                    trainable(&session)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
