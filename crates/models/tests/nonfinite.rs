//! Numerical faults stop training at the step that caused them: a NaN pixel, an Inf
//! weight and a diverging learning rate are each reported with the step, the epoch, the
//! batch, the parameter whose gradient went bad and the checkpoint left intact (its file
//! unchanged). The debug mode names the first op whose output went non-finite and puts
//! back the weights from before the step. An out-of-range label fails before its step.

mod common;
use common::gpu;

use std::path::PathBuf;
use std::sync::Arc;

use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::data::{Dataset, Loader};
use wgtrain_models::train::{TrainConfig, Trainer};
use wgtrain_models::zoo;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-nonfinite-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const BATCH: usize = 16;

/// The synthetic shapes with sample `index` changed: its first pixel set to `pixel`
/// and/or its label set to `label`.
struct Poisoned {
    inner: Synthetic,
    index: usize,
    pixel: Option<f32>,
    label: Option<u32>,
}

impl Dataset for Poisoned {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.inner.image_shape()
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        let label = self.inner.sample(index, out);
        if index != self.index {
            return label;
        }
        if let Some(p) = self.pixel {
            out[0] = p;
        }
        self.label.unwrap_or(label)
    }
}

/// 6 batches of 16 per epoch, in order; sample `index` poisoned.
fn loader(index: usize, pixel: Option<f32>, label: Option<u32>) -> Loader {
    let inner = Synthetic::new(6 * BATCH, 8, 4, 11);
    let data: Arc<dyn Dataset> = Arc::new(Poisoned {
        inner,
        index,
        pixel,
        label,
    });
    Loader::new(data, BATCH).unwrap()
}

fn trainer(config: TrainConfig) -> Trainer {
    let model = zoo::mlp([8, 8, 3], &[32], 4, BATCH).unwrap();
    Trainer::new(gpu(), model, config).unwrap()
}

fn config(checkpoint: Option<PathBuf>, max_steps: Option<u32>) -> TrainConfig {
    let mut c = TrainConfig::new(2, 0.05);
    c.seed = 3;
    c.checkpoint = checkpoint;
    c.checkpoint_every = 2;
    c.max_steps = max_steps;
    c
}

/// Sample 3·16 + 5 is in batch 3 of epoch 0: step 4.
const NAN_SAMPLE: usize = 3 * BATCH + 5;

#[test]
fn a_nan_pixel_stops_at_its_step_naming_the_parameter_and_keeps_the_checkpoint() {
    let path = temp_dir("nan").join("mlp.safetensors");
    let clean = loader(usize::MAX, None, None);
    trainer(config(Some(path.clone()), Some(2)))
        .fit(&clean, None)
        .unwrap();
    let before = std::fs::read(&path).unwrap();

    // Resume from step 2; step 4 (a checkpoint step) meets the NaN.
    let mut c = config(Some(path.clone()), None);
    c.resume = true;
    let mut t = trainer(c);
    let err = t
        .fit(&loader(NAN_SAMPLE, Some(f32::NAN), None), None)
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.starts_with("gradient of fc1.weight became NaN/Inf at step 4 (epoch 0, batch 3)"));
    let intact = format!("last checkpoint {} (step 2) is intact", path.display());
    assert!(err.contains(&intact), "{err}");
    assert!(!err.contains("first non-finite output"), "{err}");
    assert_eq!(t.losses.len(), 1, "only step 3 succeeded");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "checkpoint rewritten"
    );
}

#[test]
fn debug_mode_names_the_first_op_and_restores_the_weights() {
    let mut c = config(None, None);
    c.debug_nonfinite = true;
    let mut t = trainer(c);
    let err = t
        .fit(&loader(NAN_SAMPLE, Some(f32::NAN), None), None)
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("at step 4 (epoch 0, batch 3)"), "{err}");
    assert!(err.contains("no checkpoint is configured"), "{err}");
    // The NaN pixel reaches the forward fc1 first (its fused ReLU keeps a NaN, as
    // PyTorch's does): the row of the bad sample, all 32 hidden units of it.
    assert!(
        err.contains("first non-finite output: matmul in layer `fc1`"),
        "{err}"
    );
    assert!(err.contains("output [16, 32] with 32 of 512"), "{err}");

    // The weights are those after step 3, as in a clean run of 3 steps.
    let mut clean = trainer(config(None, Some(3)));
    clean.fit(&loader(usize::MAX, None, None), None).unwrap();
    for name in ["fc1.weight", "fc2.bias"] {
        let got = t.session().read_variable(name).unwrap();
        let want = clean.session().read_variable(name).unwrap();
        assert_eq!(got, want, "{name} after the fault");
    }
}

#[test]
fn an_inf_weight_is_found_in_the_layer_that_reads_it() {
    let mut c = config(None, None);
    c.debug_nonfinite = true;
    let mut t = trainer(c);
    let mut w = t.session().read_variable("fc2.weight").unwrap();
    w[7] = f32::INFINITY;
    t.session().write_variable("fc2.weight", &w).unwrap();
    let err = t
        .fit(&loader(usize::MAX, None, None), None)
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("at step 1 (epoch 0, batch 0)"), "{err}");
    assert!(
        err.contains("gradient of fc1.weight became NaN/Inf"),
        "{err}"
    );
    assert!(
        err.contains("first non-finite output: matmul in layer `fc2`"),
        "{err}"
    );
    assert!(err.contains(&format!("output [{BATCH}, 4]")), "{err}");
    assert!(t.losses.is_empty());
}

#[test]
fn a_diverging_learning_rate_stops_at_the_first_bad_step() {
    let mut c = config(None, None);
    c.schedule = wgtrain_graph::Schedule::constant(1e12);
    let mut t = trainer(c);
    let err = t
        .fit(&loader(usize::MAX, None, None), None)
        .unwrap_err()
        .to_string();
    println!("{err}");
    let step = t.losses.len() + 1;
    assert!(t.losses.iter().all(|l| l.is_finite()));
    assert!(err.contains(&format!("at step {step} ")), "{err}");
    assert!(
        err.contains("; stopping; no checkpoint is configured"),
        "{err}"
    );
}

#[test]
fn an_out_of_range_label_fails_before_its_step() {
    let mut t = trainer(config(None, None));
    let err = t
        .fit(&loader(BATCH + 5, None, Some(9)), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "label 9 at batch position 5 (epoch 0, batch 1) is out of range for a model with 4 \
         classes"
    );
    assert_eq!(t.losses.len(), 1);
}
