//! Data parallelism across processes under `mpirun` (OpenMPI through rsmpi; cargo
//! feature `mpi`). The test binary launches itself: `mpirun -np 2` runs this file's
//! ignored `mpi_worker` test in two processes, which train as ranks of
//! `MPI_COMM_WORLD`; the launching test checks what they wrote.
//!
//! - Equivalence: 2 processes at batch n end, after 20 SGD-with-momentum steps, where
//!   one replica at batch 2n ends (≤ 1e-5 of each tensor's scale), and bit-identical to
//!   two replicas as threads in one process (both reduce in rank order).
//! - Asynchronous training: a parameter server (rank 0) and two workers as processes
//!   end with the same bits as the same run as threads (round-robin order, injected
//!   staleness, DC-ASGD-c): the protocol is the same code over either communicator.
//! - Faults: a rank that dies mid-run (abort) ends the job within a bounded time, with
//!   mpirun naming the rank; the checkpoint written before is intact and resumes.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dp::{
    Named, batches, device, feeds, mlp, optimizer, replicas, single, trainable, worst_relative,
};
use wgtrain_graph::Session;
use wgtrain_models::data::Loader;
use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::train::{TrainConfig, Trainer};
use wgtrain_parallel::{
    AsyncConfig, Communicator, Compensation, LocalComm, MpiComm, PushOrder, broadcast_variables,
    train_step,
};

const STEPS: usize = 20;
const PER_RANK: usize = 3;

/// Runs this test binary's `worker` test under `mpirun -np 2`, with `env`.
fn mpirun(worker: &str, env: &[(&str, &Path)], limit: Duration) -> (bool, String, Duration) {
    mpirun_np(2, worker, env, limit)
}

/// [`mpirun`] with `np` processes.
fn mpirun_np(
    np: usize,
    worker: &str,
    env: &[(&str, &Path)],
    limit: Duration,
) -> (bool, String, Duration) {
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &np.to_string(), "--oversubscribe"])
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            worker,
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // No network interface probing beyond this machine.
        .env("OMPI_MCA_btl", "self,vader")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start mpirun ({e}): install OpenMPI (apt-get install openmpi-bin libopenmpi-dev)")
        });
    loop {
        if child.try_wait().unwrap().is_some() || start.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let timed_out = child.try_wait().unwrap().is_none();
    if timed_out {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!timed_out, "mpirun hung past {limit:?}:\n{text}");
    (out.status.success(), text, start.elapsed())
}

fn write_named(path: &Path, params: &Named) {
    let bytes: Vec<u8> = params
        .iter()
        .flat_map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_like(path: &Path, like: &Named) -> Named {
    let bytes = std::fs::read(path).unwrap();
    let mut floats = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    like.iter()
        .map(|(n, v)| (n.clone(), floats.by_ref().take(v.len()).collect()))
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-mpi-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One rank of the equivalence run (started by `mpirun`; see the file's comment).
#[test]
#[ignore = "run by mpi_ranks_match_one_replica under mpirun"]
fn mpi_worker() {
    let comm = MpiComm::init().unwrap();
    let (rank, world) = (comm.rank(), comm.world_size());
    let global = PER_RANK * world;
    let data = batches(STEPS, global, mlp(1).input, mlp(1).classes);
    let mut model = mlp(PER_RANK);
    let training = model
        .graph
        .minimize_synced(model.loss, optimizer(), None, 4096)
        .unwrap();
    let mut session = Session::new(device(), model.graph.clone(), 1 + 1000 * rank as u64).unwrap();
    broadcast_variables(&session, &comm, 0).unwrap();
    let per = model.input.iter().product::<usize>();
    for (x, y) in &data {
        let xs = &x[rank * PER_RANK * per..(rank + 1) * PER_RANK * per];
        let ys = &y[rank * PER_RANK..(rank + 1) * PER_RANK];
        let share = PER_RANK as f32 / global as f32;
        let (out, _) = train_step(
            &mut session,
            &training,
            &comm,
            &feeds(&model, xs, ys),
            0.05,
            share,
        )
        .unwrap();
        assert!(out.loss.is_finite());
    }
    if let Ok(dir) = std::env::var("WGTRAIN_MPI_OUT") {
        let path = Path::new(&dir).join(format!("rank{rank}.bin"));
        write_named(&path, &trainable(&session));
    }
}

#[test]
fn mpi_ranks_match_one_replica() {
    let dir = scratch("equiv");
    let (ok, text, _) = mpirun(
        "mpi_worker",
        &[("WGTRAIN_MPI_OUT", &dir)],
        Duration::from_secs(300),
    );
    assert!(ok, "mpirun failed:\n{text}");
    let data = batches(STEPS, 2 * PER_RANK, mlp(1).input, mlp(1).classes);
    let one = single(&mlp, &data, 0.05);
    let rank0 = read_like(&dir.join("rank0.bin"), &one);
    let rank1 = read_like(&dir.join("rank1.bin"), &one);
    assert!(
        rank0.iter().zip(&rank1).all(|(a, b)| a.1 == b.1),
        "the two ranks differ"
    );
    let (err, name) = worst_relative(&rank0, &one);
    assert!(
        err <= 1e-5,
        "2 MPI ranks vs 1 replica: {name} off by {err:e} of its scale"
    );
    // The same two replicas as threads: the same bits (both reduce in rank order).
    let threads = replicas(&mlp, 2, &data, 0.05, 4096).remove(0);
    assert!(
        rank0.iter().zip(&threads).all(|(a, b)| a.1 == b.1),
        "MPI and in-process replicas ended with different bits"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn async_loader() -> Loader {
    Loader::new(Arc::new(Synthetic::new(48, 8, 4, 3)), 6)
        .unwrap()
        .shuffled(5)
}

fn async_model() -> wgtrain_models::zoo::Model {
    wgtrain_models::zoo::mlp([8, 8, 3], &[16], 4, 6).unwrap()
}

fn async_setup() -> (TrainConfig, AsyncConfig) {
    let config = TrainConfig {
        optimizer: optimizer(),
        ..TrainConfig::new(2, 0.05)
    };
    let asynchronous = AsyncConfig {
        compensation: Compensation::Constant { lambda: 2.0 },
        staleness: 1,
        order: PushOrder::RoundRobin,
    };
    (config, asynchronous)
}

/// One rank of the asynchronous run, trained.
fn async_rank(comm: Box<dyn Communicator>) -> Trainer {
    let (config, asynchronous) = async_setup();
    let mut trainer =
        Trainer::asynchronous(device(), async_model(), config, comm, asynchronous).unwrap();
    trainer.fit(&async_loader(), None).unwrap();
    trainer
}

/// One rank of the asynchronous run (started by `mpirun -np 3`).
#[test]
#[ignore = "run by mpi_parameter_server_matches_threads under mpirun"]
fn mpi_async_worker() {
    let comm = MpiComm::init().unwrap();
    let rank = comm.rank();
    let trainer = async_rank(Box::new(comm));
    if let (Ok(dir), 0) = (std::env::var("WGTRAIN_MPI_OUT"), rank) {
        let stats = trainer.server_stats().unwrap();
        assert_eq!(stats.pushes.len(), 16);
        write_named(
            &Path::new(&dir).join("server.bin"),
            &trainable(trainer.session()),
        );
    }
}

#[test]
fn mpi_parameter_server_matches_threads() {
    let dir = scratch("async");
    let (ok, text, _) = mpirun_np(
        3,
        "mpi_async_worker",
        &[("WGTRAIN_MPI_OUT", &dir)],
        Duration::from_secs(300),
    );
    assert!(ok, "mpirun failed:\n{text}");
    let comms = LocalComm::group_with_timeout(3, Duration::from_secs(60));
    let threads: Named = std::thread::scope(|scope| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| scope.spawn(move || trainable(async_rank(Box::new(comm)).session())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).next().unwrap()
    });
    let server = read_like(&dir.join("server.bin"), &threads);
    for ((name, a), (_, b)) in server.iter().zip(&threads) {
        assert_eq!(a, b, "{name}: MPI and threads ended with different bits");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn fault_config(checkpoint: PathBuf, resume: bool) -> TrainConfig {
    TrainConfig {
        checkpoint: Some(checkpoint),
        checkpoint_every: 2,
        resume,
        max_steps: Some(8),
        ..TrainConfig::new(2, 0.05)
    }
}

fn fault_loader() -> Loader {
    Loader::new(Arc::new(Synthetic::new(48, 8, 4, 3)), 8)
        .unwrap()
        .shuffled(5)
}

/// One rank of the fault run: rank 1 aborts (as a killed process would vanish) after
/// step 3; rank 0 checkpoints every 2 steps.
#[test]
#[ignore = "run by a_dead_rank_ends_the_mpi_job under mpirun"]
fn mpi_fault_worker() {
    let dir = PathBuf::from(std::env::var("WGTRAIN_MPI_OUT").unwrap_or_else(|_| ".".into()));
    let comm = MpiComm::init().unwrap();
    let rank = comm.rank();
    let model = wgtrain_models::zoo::mlp([8, 8, 3], &[16], 4, 4).unwrap();
    let mut trainer = Trainer::distributed(
        device(),
        model,
        fault_config(dir.join("ckpt.safetensors"), false),
        Box::new(comm),
    )
    .unwrap();
    if rank == 1 {
        trainer.on_step(|step, _| {
            if step == 3 {
                std::process::abort();
            }
        });
    }
    trainer.fit(&fault_loader(), None).unwrap();
}

#[test]
fn a_dead_rank_ends_the_mpi_job() {
    let dir = scratch("fault");
    let (ok, text, took) = mpirun(
        "mpi_fault_worker",
        &[("WGTRAIN_MPI_OUT", &dir)],
        Duration::from_secs(120),
    );
    assert!(!ok, "the job should fail when a rank dies:\n{text}");
    assert!(
        took < Duration::from_secs(100),
        "the job took {took:?} to stop"
    );
    assert!(
        text.contains("rank 1"),
        "mpirun's report names rank 1:\n{text}"
    );
    // The checkpoint of step 2 is intact: it loads and training resumes on one replica.
    let path = dir.join("ckpt.safetensors");
    assert!(
        path.is_file(),
        "no checkpoint was written before the fault:\n{text}"
    );
    let model = wgtrain_models::zoo::mlp([8, 8, 3], &[16], 4, 8).unwrap();
    let mut trainer = Trainer::new(device(), model, fault_config(path, true)).unwrap();
    let resumed_at = trainer.position().steps;
    assert!(
        (2..=3).contains(&resumed_at),
        "resumed at step {resumed_at}"
    );
    trainer.fit(&fault_loader(), None).unwrap();
    assert_eq!(trainer.position().steps, 8);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One rank of the error run: rank 1 reads data that does not fit the model (its first
/// step fails on that rank alone); rank 0 trains normally and would wait for it forever.
#[test]
#[ignore = "run by an_error_on_one_rank_ends_the_mpi_job under mpirun"]
fn mpi_error_worker() {
    let comm = MpiComm::init().unwrap();
    let rank = comm.rank();
    let model = wgtrain_models::zoo::mlp([8, 8, 3], &[16], 4, 4).unwrap();
    let mut trainer =
        Trainer::distributed(device(), model, TrainConfig::new(1, 0.05), Box::new(comm)).unwrap();
    let side = if rank == 1 { 9 } else { 8 };
    let data = Loader::new(Arc::new(Synthetic::new(48, side, 4, 3)), 8).unwrap();
    // Rank 1's error ends the job: rank 0 never returns from its second collective.
    let _ = trainer.fit(&data, None);
}

#[test]
fn an_error_on_one_rank_ends_the_mpi_job() {
    let dir = scratch("error");
    let (ok, text, took) = mpirun("mpi_error_worker", &[], Duration::from_secs(120));
    assert!(!ok, "the job should fail:\n{text}");
    assert!(
        took < Duration::from_secs(100),
        "the job took {took:?} to stop"
    );
    assert!(
        text.contains("rank 1: aborting the MPI job") && text.contains("feed `images`"),
        "rank 1 names itself and its error:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dataset of constant images with one NaN pixel in sample 5 (rank 0's shard of the
/// first batch).
struct OneNan;

impl wgtrain_models::data::Dataset for OneNan {
    fn len(&self) -> usize {
        16
    }
    fn image_shape(&self) -> [usize; 3] {
        [8, 8, 3]
    }
    fn classes(&self) -> usize {
        4
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        out.fill(0.5);
        if index == 5 {
            out[7] = f32::NAN;
        }
        (index % 4) as u32
    }
}

/// One rank of the NaN run: a NaN on rank 0's shard reaches every rank's reduced
/// gradients, so all stop at the same step with the same error, and nothing is aborted.
#[test]
#[ignore = "run by a_nan_stops_every_rank_cleanly under mpirun"]
fn mpi_nan_worker() {
    let comm = MpiComm::init().unwrap();
    let model = wgtrain_models::zoo::mlp([8, 8, 3], &[16], 4, 4).unwrap();
    let mut trainer =
        Trainer::distributed(device(), model, TrainConfig::new(1, 0.05), Box::new(comm)).unwrap();
    let data = Loader::new(Arc::new(OneNan), 8).unwrap();
    let err = trainer.fit(&data, None).unwrap_err().to_string();
    assert!(err.contains("NaN/Inf at step 1"), "{err}");
    assert!(trainer.stopped_together());
}

#[test]
fn a_nan_stops_every_rank_cleanly() {
    let (ok, text, _) = mpirun("mpi_nan_worker", &[], Duration::from_secs(120));
    assert!(
        ok,
        "every rank should stop with the same error, no abort:\n{text}"
    );
    assert!(!text.contains("aborting"), "{text}");
}
