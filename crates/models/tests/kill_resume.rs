//! A training process killed with SIGKILL at a random (seeded) moment and resumed from
//! its checkpoint produces, bit for bit, the losses of an uninterrupted run. The
//! processes are this test binary itself running the ignored `child_trains` test, told
//! what to do through `WGTRAIN_KILL_RESUME`; each logs `step <n> <loss bits>` per step,
//! flushed. Losses logged after the last checkpoint are discarded: the resumed run
//! repeats those steps from the checkpoint's position.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wgtrain_graph::device::Gpu;
use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::data::{Dataset, Loader};
use wgtrain_models::train::{TrainConfig, Trainer};
use wgtrain_models::zoo;

const ENV: &str = "WGTRAIN_KILL_RESUME";
const STEPS: u32 = 40;
const EVERY: usize = 3;
/// Batches per epoch (every epoch's end writes a checkpoint too).
const BATCHES: usize = 5;

/// The child: trains the small MLP to `STEPS` with a checkpoint every `EVERY` steps,
/// resuming from the checkpoint when there is one, appending each step to the log.
#[test]
#[ignore = "run as a child process by kill_and_resume_repeats_the_losses"]
fn child_trains() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let (checkpoint, log) = spec.split_once('|').expect("checkpoint|log");
    let data: Arc<dyn Dataset> = Arc::new(Synthetic::new(80, 8, 4, 21));
    let loader = Loader::new(data, 16).unwrap().shuffled(5);
    assert_eq!(loader.batches_per_epoch(), BATCHES);
    let model = zoo::mlp([8, 8, 3], &[32], 4, 16).unwrap();
    let mut config = TrainConfig::new(10, 0.05);
    config.seed = 17;
    config.checkpoint = Some(PathBuf::from(checkpoint));
    config.checkpoint_every = EVERY;
    config.resume = true;
    config.max_steps = Some(STEPS);
    let gpu = Arc::new(Gpu::new().unwrap_or_else(|e| panic!("{e}")));
    let mut trainer = Trainer::new(gpu, model, config).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    trainer.on_step(move |step, loss| {
        // Unbuffered: each line is on disk before the step's checkpoint is written.
        writeln!(file, "step {step} {:08x}", loss.to_bits()).unwrap();
    });
    trainer.fit(&loader, None).unwrap();
}

fn spawn(checkpoint: &Path, log: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_trains", "--ignored", "--nocapture"])
        .env(ENV, format!("{}|{}", checkpoint.display(), log.display()))
        .env("WGTRAIN_AUTOTUNE", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the child test")
}

/// `(step, loss bits)` per logged line.
fn read_log(log: &Path) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().skip(1);
            let step = it.next()?.parse().ok()?;
            let bits = u32::from_str_radix(it.next()?, 16).ok()?;
            Some((step, bits))
        })
        .collect()
}

fn run_to_end(checkpoint: &Path, log: &Path) -> Vec<(u32, u32)> {
    let status = spawn(checkpoint, log).wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    read_log(log)
}

/// Starts a child and kills it once its log has at least `after` steps (or it ends).
fn run_and_kill(checkpoint: &Path, log: &Path, after: usize) -> Vec<(u32, u32)> {
    let mut child = spawn(checkpoint, log);
    let start = Instant::now();
    while read_log(log).len() < after && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "child too slow");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().ok(); // SIGKILL on Unix
    child.wait().unwrap();
    read_log(log)
}

#[test]
fn kill_and_resume_repeats_the_losses() {
    let dir = std::env::temp_dir().join(format!("wgtrain-kill-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let whole = run_to_end(&dir.join("whole.safetensors"), &dir.join("whole.log"));
    assert_eq!(whole.len(), STEPS as usize);
    assert!(whole.iter().zip(1..).all(|(&(s, _), want)| s == want));

    // Seeded kill points: two kills, then a run to the end.
    let mut rng = wgtrain_graph::Rng::new(0xC0FFEE);
    let checkpoint = dir.join("killed.safetensors");
    let mut joined: Vec<(u32, u32)> = Vec::new();
    for round in 0..3 {
        let log = dir.join(format!("round{round}.log"));
        let after = 2 + (rng.next_u64() % 12) as usize;
        let logged = if round < 2 {
            run_and_kill(&checkpoint, &log, after)
        } else {
            run_to_end(&checkpoint, &log)
        };
        let Some(&(first, _)) = logged.first() else {
            continue; // killed before its first step: nothing to join
        };
        // The run resumed from the checkpoint of step first - 1: drop what the killed
        // run logged after it.
        let resumed_from = first - 1;
        let k = resumed_from as usize;
        assert!(k % EVERY == 0 || k % BATCHES == 0, "resumed from step {k}");
        assert!(
            joined.len() >= resumed_from as usize,
            "checkpoint ahead of the log"
        );
        joined.truncate(resumed_from as usize);
        joined.extend(logged);
        println!("round {round}: killed after {after}+ steps, resumed from {resumed_from}");
    }
    assert_eq!(joined.len(), whole.len());
    for (i, (got, want)) in joined.iter().zip(&whole).enumerate() {
        assert_eq!(got, want, "step {} differs", i + 1);
    }
    std::fs::remove_dir_all(&dir).ok();
}
