//! Asynchronous training through a parameter server (threads with a `LocalComm`, one
//! device each):
//!
//! - the server's DC-ASGD-c and DC-ASGD-a steps over pushes from two workers, each with
//!   its own backup, match the hand-computed values to 1e-6; λ = 0 is plain ASGD to the
//!   bit;
//! - with one worker and no delay, ASGD is sequential SGD (momentum and weight decay
//!   included): the same weights, bit for bit;
//! - injected staleness is the staleness the server records: exactly τ with one worker,
//!   exactly W − 1 + τ with W workers in turn; round-robin runs are bit-identical;
//! - a worker that fails stops the server and the other workers with an error naming
//!   its rank;
//! - the interleaved loader gives each worker whole batches, together each once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wgtrain_graph::{Optimizer, Session};
use wgtrain_models::data::Loader;
use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::train::{TrainConfig, Trainer};
use wgtrain_models::zoo;
use wgtrain_parallel::ps::{ServerStats, Worker, parameter_names};
use wgtrain_parallel::{
    AsyncConfig, Communicator, Compensation, LocalComm, ParameterServer, PushOrder,
};

mod common;
use common::dp::{Named, device, trainable};

/// Weights `[1, −2]` (and a bias `[0, 3]` that gets zero gradients); worker 1 pushes
/// g1 = [0.5, 1] and later g3 = [0.2, 0.4], worker 2 pushes g2 = [1, −0.5] between them
/// (round-robin order), lr 0.1. Returns the server's final weights.
fn hand_run(compensation: Compensation) -> Vec<f32> {
    let comms = LocalComm::group_with_timeout(3, Duration::from_secs(60));
    let tiny = || zoo::mlp([1, 1, 1], &[], 2, 1).unwrap();
    let results: Vec<Option<Vec<f32>>> = std::thread::scope(|scope| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                scope.spawn(move || {
                    let mut model = tiny();
                    let training = model.graph.minimize(model.loss, Optimizer::sgd()).unwrap();
                    let session = Session::new(device(), model.graph.clone(), 0).unwrap();
                    let names = parameter_names(&session, &training);
                    let flat = |weight: [f32; 2], bias: [f32; 2]| -> Vec<f32> {
                        names
                            .iter()
                            .flat_map(|n| match n.ends_with("weight") {
                                true => weight,
                                false => bias,
                            })
                            .collect()
                    };
                    if comm.rank() == 0 {
                        for n in &names {
                            let v = if n.ends_with("weight") {
                                [1.0, -2.0]
                            } else {
                                [0.0, 3.0]
                            };
                            session.write_variable(n, &v).unwrap();
                        }
                        let config = AsyncConfig {
                            compensation,
                            staleness: 0,
                            order: PushOrder::RoundRobin,
                        };
                        let mut server =
                            ParameterServer::new(&session, &training, 2, Optimizer::sgd(), config)
                                .unwrap();
                        server.start(&comm).unwrap();
                        let served = server.serve_epoch(&comm, &|_| 0.1, None).unwrap();
                        assert_eq!(served.pushes, 3);
                        server.release(&comm, false).unwrap();
                        server.write_into(&session).unwrap();
                        let w: Vec<f32> = names
                            .iter()
                            .flat_map(|n| session.read_variable(n).unwrap())
                            .collect();
                        return Some(w);
                    }
                    let mut worker = Worker::new(&session, &training).unwrap();
                    let pushes: Vec<[f32; 2]> = match comm.rank() {
                        1 => vec![[0.5, 1.0], [0.2, 0.4]],
                        _ => vec![[1.0, -0.5]],
                    };
                    assert!(worker.receive(&comm, &session).unwrap());
                    for g in pushes {
                        let grads = vec![flat(g, [0.0, 0.0])];
                        let out = wgtrain_graph::StepOutput {
                            loss: 1.0,
                            correct: None,
                            nonfinite_grads: 0,
                            first_nonfinite_grad: None,
                        };
                        worker.push(&comm, &out, &grads, 1).unwrap();
                        assert!(worker.receive(&comm, &session).unwrap());
                    }
                    worker.end_epoch(&comm, &session).unwrap();
                    assert!(!worker.receive(&comm, &session).unwrap(), "told to stop");
                    None
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    results.into_iter().next().flatten().unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6,
            "{what}[{i}]: {g} vs {w} (all: {got:?})"
        );
    }
}

/// Hand-computed, lr 0.1, every backup w_bak(m) the weights worker m was last served:
///
/// - DC-ASGD-c, λ = 2: push 1 (backup = w) gives w1 = [0.95, −2.1]; push 2 (worker 2,
///   backup w0) d = g + 2·g²·(w1 − w0) = [1 − 0.1, −0.5 − 0.05] = [0.9, −0.55], so
///   w2 = [0.86, −2.045]; push 3 (worker 1, backup w1) d = [0.2 − 0.0072, 0.4 + 0.0176],
///   so w3 = [0.84072, −2.08676];
/// - DC-ASGD-a (λ0 2, m 0.95, eps 1e-7; ms over every push): w3 = [0.8721419, −2.0784254]
///   (the same arithmetic, step by step, in f64);
/// - ASGD: w0 − 0.1·(g1 + g2 + g3) = [0.83, −2.09].
///
/// The biases get zero gradients and stay [0, 3].
#[test]
fn server_steps_match_hand_computed_values() {
    let weight_first = |w: [f32; 2]| -> Vec<f32> {
        // names are weight then bias in the MLP's variable order
        vec![w[0], w[1], 0.0, 3.0]
    };
    let c = hand_run(Compensation::Constant { lambda: 2.0 });
    close("DC-ASGD-c", &c, &weight_first([0.84072, -2.08676]));
    let a = hand_run(Compensation::ADAPTIVE);
    close("DC-ASGD-a", &a, &weight_first([0.8721419, -2.0784254]));
    let plain = hand_run(Compensation::None);
    close("ASGD", &plain, &weight_first([0.83, -2.09]));
    let zero = hand_run(Compensation::Constant { lambda: 0.0 });
    assert_eq!(zero, plain, "lambda = 0 is plain ASGD, bit for bit");
}

fn loader(batch: usize) -> Loader {
    let data = Synthetic::new(48, 8, 4, 3);
    Loader::new(Arc::new(data), batch).unwrap().shuffled(5)
}

fn mlp(batch: usize) -> zoo::Model {
    zoo::mlp([8, 8, 3], &[16], 4, batch).unwrap()
}

fn config(epochs: usize, max_steps: Option<u32>) -> TrainConfig {
    TrainConfig {
        optimizer: Optimizer::sgd_momentum(0.9, 5e-4, false),
        max_steps,
        ..TrainConfig::new(epochs, 0.05)
    }
}

/// Rank 0's weights (the server's), its push record, and every rank's error.
type Outcome = (Named, Option<ServerStats>);

/// `workers` workers and a server as threads, each its own device, on the same loader.
/// `fail_rank`: that worker's loader yields a NaN image, so its first step fails.
fn fit_async(
    workers: usize,
    cfg: TrainConfig,
    async_config: AsyncConfig,
    fail_rank: Option<usize>,
) -> Vec<Result<Outcome, String>> {
    let comms = LocalComm::group_with_timeout(workers + 1, Duration::from_secs(60));
    std::thread::scope(|scope| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let cfg = cfg.clone();
                scope.spawn(move || -> Result<Outcome, String> {
                    let rank = comm.rank();
                    let mut trainer =
                        Trainer::asynchronous(device(), mlp(6), cfg, Box::new(comm), async_config)
                            .map_err(|e| e.to_string())?;
                    let train = match fail_rank == Some(rank) {
                        true => Loader::new(Arc::new(NanImages), 6).unwrap(),
                        false => loader(6),
                    };
                    trainer.fit(&train, None).map_err(|e| e.to_string())?;
                    Ok((
                        trainable(trainer.session()),
                        trainer.server_stats().cloned(),
                    ))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// 48 images of 8×8×3 whose pixels are all NaN.
struct NanImages;

impl wgtrain_models::data::Dataset for NanImages {
    fn len(&self) -> usize {
        48
    }
    fn image_shape(&self) -> [usize; 3] {
        [8, 8, 3]
    }
    fn classes(&self) -> usize {
        4
    }
    fn sample(&self, _: usize, out: &mut [f32]) -> u32 {
        out.fill(f32::NAN);
        0
    }
}

#[test]
fn one_worker_without_delay_is_sequential_sgd() {
    let cfg = config(2, None);
    let mut single = Trainer::new(device(), mlp(6), cfg.clone()).unwrap();
    single.fit(&loader(6), None).unwrap();
    let want = trainable(single.session());
    let got = fit_async(1, cfg, AsyncConfig::default(), None);
    let (weights, stats) = got.into_iter().next().unwrap().unwrap();
    let stats = stats.unwrap();
    assert_eq!(stats.pushes.len(), 16, "2 epochs of 8 batches");
    assert!(stats.pushes.iter().all(|p| p.staleness == 0));
    for ((name, a), (_, b)) in weights.iter().zip(&want) {
        assert_eq!(a, b, "{name}: ASGD with one worker is SGD, to the bit");
    }
}

#[test]
fn injected_staleness_is_recorded_staleness() {
    // One worker, τ = 3: pushes 0, 1, 2 are 0, 1, 2 stale (there are no older weights),
    // every later one exactly 3.
    let one = AsyncConfig {
        staleness: 3,
        ..AsyncConfig::default()
    };
    let out = fit_async(1, config(1, None), one, None).remove(0).unwrap();
    let s: Vec<u64> = out.1.unwrap().pushes.iter().map(|p| p.staleness).collect();
    assert_eq!(s, [0, 1, 2, 3, 3, 3, 3, 3]);
    // Three workers in turn, τ = 2: after the first round, every push is 3 − 1 + 2 = 4
    // stale, and two runs are bit-identical.
    let three = AsyncConfig {
        staleness: 2,
        order: PushOrder::RoundRobin,
        ..AsyncConfig::default()
    };
    let cfg = config(1, None);
    let a = fit_async(3, cfg.clone(), three, None).remove(0).unwrap();
    let b = fit_async(3, cfg, three, None).remove(0).unwrap();
    let pushes = a.1.unwrap().pushes;
    let workers: Vec<usize> = pushes.iter().map(|p| p.worker).collect();
    assert_eq!(workers, [1, 2, 3, 1, 2, 3, 1, 2]);
    let s: Vec<u64> = pushes.iter().map(|p| p.staleness).collect();
    assert_eq!(s, [0, 1, 2, 3, 4, 4, 4, 4]);
    assert_eq!(a.0, b.0, "round-robin runs are bit-identical");
}

#[test]
fn delay_compensation_changes_a_stale_run() {
    // The compensation acts only where a gradient is stale: the same run with and
    // without it ends elsewhere, and both still train (finite weights).
    let run = |compensation| {
        let ac = AsyncConfig {
            compensation,
            staleness: 2,
            order: PushOrder::RoundRobin,
        };
        fit_async(2, config(1, None), ac, None).remove(0).unwrap().0
    };
    let plain = run(Compensation::None);
    let dc = run(Compensation::Constant { lambda: 2.0 });
    assert_ne!(plain, dc);
    assert!(dc.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
}

#[test]
fn a_failing_worker_stops_the_server_and_the_others_naming_its_rank() {
    let start = Instant::now();
    let results = fit_async(3, config(2, None), AsyncConfig::default(), Some(2));
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "the others waited for the timeout"
    );
    let worker = results[2].as_ref().unwrap_err();
    assert!(worker.contains("NaN"), "the worker's own error: {worker}");
    for rank in [0, 1, 3] {
        let err = results[rank].as_ref().unwrap_err();
        assert!(
            err.contains("rank 2"),
            "rank {rank}'s error names rank 2: {err}"
        );
    }
}

#[test]
fn asynchronous_set_up_errors_are_clear() {
    let refuse = |cfg: TrainConfig, world: usize| -> String {
        let comms = LocalComm::group_with_timeout(world, Duration::from_secs(30));
        std::thread::scope(|scope| {
            let hs: Vec<_> = comms
                .into_iter()
                .map(|comm| {
                    let cfg = cfg.clone();
                    scope.spawn(move || {
                        Trainer::asynchronous(
                            device(),
                            mlp(6),
                            cfg,
                            Box::new(comm),
                            AsyncConfig::default(),
                        )
                        .err()
                        .map(|e| e.to_string())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).next().unwrap()
        })
        .unwrap_or_default()
    };
    let alone = refuse(config(1, None), 1);
    assert!(alone.contains("at least one worker"), "{alone}");
    let adam = TrainConfig {
        optimizer: Optimizer::adam(),
        ..config(1, None)
    };
    let err = refuse(adam, 2);
    assert!(err.contains("Adam"), "{err}");
    let every = TrainConfig {
        checkpoint_every: 3,
        ..config(1, None)
    };
    let err = refuse(every, 2);
    assert!(err.contains("--checkpoint-every"), "{err}");
}

#[test]
fn interleaved_loaders_read_each_batch_once() {
    let all: Vec<Vec<u32>> = loader(5).epoch(1, 0).map(|b| b.unwrap().labels).collect();
    assert_eq!(all.len(), 10); // 48 = 9 × 5 + 3
    for parts in [1, 3, 4, 11] {
        let mut seen = vec![None; all.len()];
        for part in 0..parts {
            let mine = loader(5).interleaved(part, parts).unwrap();
            let got: Vec<Vec<u32>> = mine.epoch(1, 0).map(|b| b.unwrap().labels).collect();
            assert_eq!(got.len(), mine.batches_per_epoch());
            for (k, labels) in got.into_iter().enumerate() {
                let b = part + k * parts;
                assert_eq!(labels, all[b], "part {part} of {parts}, its batch {k}");
                assert!(seen[b].replace(part).is_none());
            }
        }
        assert!(
            seen.iter().all(Option::is_some),
            "{parts} parts cover the epoch"
        );
    }
    assert!(loader(5).interleaved(3, 3).is_err());
    assert!(loader(6).sharded(0, 2).unwrap().interleaved(0, 2).is_err());
}

/// With one worker and τ = 2, update t uses the gradient at the weights of step t − 2
/// (clamped at 0): the server's run against that recurrence on the host, w_{t+1} =
/// w_t − lr·g(w_{t−2}; batch t), with plain SGD.
#[test]
fn a_delayed_push_is_the_gradient_at_the_weights_of_tau_steps_before() {
    let (tau, lr) = (2usize, 0.05f32);
    let cfg = TrainConfig {
        optimizer: Optimizer::sgd(),
        ..TrainConfig::new(1, lr)
    };
    let ac = AsyncConfig {
        staleness: tau,
        ..AsyncConfig::default()
    };
    let (got, _) = fit_async(1, cfg, ac, None).remove(0).unwrap();

    let mut model = mlp(6);
    let training = model.graph.minimize(model.loss, Optimizer::sgd()).unwrap();
    let mut session = Session::new(device(), model.graph.clone(), 0).unwrap();
    let names = parameter_names(&session, &training);
    let read = |s: &Session| -> Vec<Vec<f32>> {
        names.iter().map(|n| s.read_variable(n).unwrap()).collect()
    };
    let mut history = vec![read(&session)];
    for (t, batch) in loader(6).epoch(0, 0).enumerate() {
        let batch = batch.unwrap();
        for (n, w) in names.iter().zip(&history[t.saturating_sub(tau)]) {
            session.write_variable(n, w).unwrap();
        }
        let feeds = [
            wgtrain_graph::Feed::f32("images", &batch.shape, &batch.images),
            wgtrain_graph::Feed::u32("labels", &batch.shape[..1], &batch.labels),
        ];
        let (_, grads) = session.gradient_step(&training, &feeds).unwrap();
        let next: Vec<Vec<f32>> = history[t]
            .iter()
            .zip(&grads)
            .map(|(w, g)| w.iter().zip(g).map(|(w, g)| w - lr * g).collect())
            .collect();
        history.push(next);
    }
    assert_eq!(history.len(), 9);
    let want = history.last().unwrap();
    for (n, w) in names.iter().zip(want) {
        let (_, g) = got.iter().find(|(name, _)| name == n).unwrap();
        let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let worst = g
            .iter()
            .zip(w)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-6 * scale.max(1.0), "{n}: off by {worst:e}");
    }
    // And not the undelayed run's weights.
    let straight = fit_async(
        1,
        TrainConfig {
            optimizer: Optimizer::sgd(),
            ..TrainConfig::new(1, lr)
        },
        AsyncConfig::default(),
        None,
    )
    .remove(0)
    .unwrap()
    .0;
    assert_ne!(straight, got);
}

/// The server checkpoints after every epoch; a resumed run goes on at the next epoch
/// with the schedule's step count (the server's velocity and the workers' backups start
/// afresh).
#[test]
fn an_asynchronous_run_resumes_from_its_checkpoint() {
    let dir = std::env::temp_dir().join(format!("wgtrain-async-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");
    let _ = std::fs::remove_file(&path);
    let with = |epochs: usize, resume: bool| TrainConfig {
        checkpoint: Some(path.clone()),
        resume,
        ..config(epochs, None)
    };
    let first = fit_async(2, with(1, false), AsyncConfig::default(), None);
    assert_eq!(
        first[0].as_ref().unwrap().1.as_ref().unwrap().pushes.len(),
        8
    );
    assert!(path.is_file());
    let (weights, stats) = fit_async(2, with(2, true), AsyncConfig::default(), None)
        .remove(0)
        .unwrap();
    assert_eq!(stats.unwrap().pushes.len(), 8, "only the second epoch ran");
    assert!(weights.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker whose thread dies without a word (here: it panics after its first weights)
/// stops the server, which names it, and the other worker, at once.
#[test]
fn a_killed_worker_stops_the_server_naming_its_rank() {
    let start = Instant::now();
    let comms = LocalComm::group_with_timeout(3, Duration::from_secs(60));
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                scope.spawn(move || -> Result<(), String> {
                    let rank = comm.rank();
                    let mut trainer = Trainer::asynchronous(
                        device(),
                        mlp(6),
                        config(3, None),
                        Box::new(comm),
                        AsyncConfig::default(),
                    )
                    .map_err(|e| e.to_string())?;
                    if rank == 2 {
                        std::thread::sleep(Duration::from_millis(200));
                        panic!("worker 2 killed");
                    }
                    trainer.fit(&loader(6), None).map_err(|e| e.to_string())?;
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".to_owned())))
            .collect()
    });
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "someone waited for the timeout"
    );
    let server = results[0].as_ref().unwrap_err();
    assert!(
        server.contains("rank 2") && server.contains("panicked"),
        "the server names the killed worker: {server}"
    );
    let other = results[1].as_ref().unwrap_err();
    assert!(
        other.contains("rank 0") || other.contains("rank 2"),
        "{other}"
    );
}

/// With one worker and no delay, 2 epochs straight and 1 epoch + checkpoint + 1 resumed
/// end with the same bits: the server's velocity is checkpointed as the momentum buffer.
#[test]
fn a_resumed_run_keeps_the_server_momentum() {
    let dir = std::env::temp_dir().join(format!("wgtrain-async-momentum-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");
    let _ = std::fs::remove_file(&path);
    let with = |epochs: usize, checkpoint: bool| TrainConfig {
        checkpoint: checkpoint.then(|| path.clone()),
        resume: checkpoint,
        ..config(epochs, None)
    };
    let straight = fit_async(1, with(2, false), AsyncConfig::default(), None)
        .remove(0)
        .unwrap()
        .0;
    fit_async(1, with(1, true), AsyncConfig::default(), None)
        .remove(0)
        .unwrap();
    let resumed = fit_async(1, with(2, true), AsyncConfig::default(), None)
        .remove(0)
        .unwrap()
        .0;
    for ((name, a), (_, b)) in resumed.iter().zip(&straight) {
        assert_eq!(a, b, "{name}: the resumed run differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
