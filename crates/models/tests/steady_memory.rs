//! Training does not leak GPU memory: over 1,000 steps of a small MLP (with a short last
//! batch, an evaluation and a checkpoint every epoch), the buffer pool's live and peak
//! bytes, its allocation count and its free lists stay exactly where they were after
//! warm-up, and no plan is compiled after the first epoch. The checkpoint's readbacks
//! go through the pool's staging buffers, so those are covered too.

use std::sync::{Arc, Mutex};

use wgtrain_graph::device::{Gpu, PoolStats};
use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::data::{Dataset, Loader, Subset};
use wgtrain_models::train::{TrainConfig, Trainer};
use wgtrain_models::zoo;

const STEPS: u32 = 1000;
/// 330 samples in batches of 32: 10 full batches and one of 10 (a second plan).
const BATCHES: u32 = 11;
/// The first step after the first epoch's evaluation and checkpoint: every plan has
/// been compiled and every staging size used once.
const WARM: u32 = BATCHES + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Memory {
    stats: PoolStats,
    free_bytes: u64,
}

/// The pool's figures, less the reuse count (which grows with every checkpoint's
/// readbacks: that is the point of a pool).
fn memory(gpu: &Gpu) -> Memory {
    Memory {
        stats: PoolStats {
            reuses: 0,
            ..gpu.pool().stats()
        },
        free_bytes: gpu.pool().free_bytes(),
    }
}

#[test]
fn a_thousand_steps_keep_the_pool_flat() {
    let gpu = Arc::new(Gpu::new().unwrap_or_else(|e| panic!("{e}")));
    let data = Arc::new(Synthetic::new(394, 8, 4, 2));
    let train: Arc<dyn Dataset> = Arc::new(Subset::new(data.clone(), 0, 330));
    let eval: Arc<dyn Dataset> = Arc::new(Subset::new(data, 330, 64));
    let train = Loader::new(train, 32).unwrap().shuffled(3);
    let eval = Loader::new(eval, 32).unwrap();
    assert_eq!(train.batches_per_epoch(), BATCHES as usize);

    let dir = std::env::temp_dir().join(format!("wgtrain-steady-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = TrainConfig::new(1000, 0.02);
    config.max_steps = Some(STEPS);
    config.checkpoint = Some(dir.join("mlp.safetensors"));
    let model = zoo::mlp([8, 8, 3], &[64], 4, 32).unwrap();
    let mut trainer = Trainer::new(gpu.clone(), model, config).unwrap();

    // (step, memory) at the warm-up step and every step from 100 on that differs.
    let seen: Arc<Mutex<Vec<(u32, Memory)>>> = Arc::default();
    let (log, hook_gpu) = (seen.clone(), gpu.clone());
    let mut baseline = None;
    trainer.on_step(move |step, _| {
        let now = memory(&hook_gpu);
        let mut log = log.lock().unwrap();
        if step == WARM {
            baseline = Some(now);
            log.push((step, now));
        } else if step >= 100 && Some(now) != baseline {
            log.push((step, now));
        }
    });
    trainer.fit(&train, Some(&eval)).unwrap();
    assert_eq!(trainer.position().steps, STEPS);

    let seen = seen.lock().unwrap();
    let (step, base) = seen[0];
    assert_eq!(step, WARM);
    println!("after step {WARM}: {base:?}");
    assert!(base.stats.live_bytes > 0 && base.stats.allocations > 0);
    assert!(
        seen.len() == 1,
        "memory moved after warm-up: {:?}",
        &seen[1..seen.len().min(4)]
    );
    // Two training plans (full and short batch) and one evaluation plan.
    assert_eq!(trainer.session().plans(), 3);
    std::fs::remove_dir_all(&dir).ok();
}
