//! The training loop on the GPU: a model learns the synthetic data; a run interrupted
//! at a checkpoint and resumed continues with exactly the losses of an uninterrupted
//! run; a bad checkpoint path or a mismatched checkpoint fails before training.

mod common;
use common::gpu;

use std::path::PathBuf;
use std::sync::Arc;

use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::data::{Dataset, Loader, Subset};
use wgtrain_models::train::{TrainConfig, Trainer};
use wgtrain_models::zoo::{self, AlexNet};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-train-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_mlp_learns_the_synthetic_shapes() {
    let data = Arc::new(Synthetic::new(600, 12, 4, 3));
    let train: Arc<dyn Dataset> = Arc::new(Subset::new(data.clone(), 0, 480));
    let held_out: Arc<dyn Dataset> = Arc::new(Subset::new(data, 480, 120));
    let model = zoo::mlp([12, 12, 3], &[64], 4, 32).unwrap();
    let mut config = TrainConfig::new(8, 0.02);
    config.plot = Some(temp_dir("plot").join("mlp.svg"));
    let mut trainer = Trainer::new(gpu(), model, config.clone()).unwrap();
    let train_loader = Loader::new(train, 32).unwrap().shuffled(1);
    let eval_loader = Loader::new(held_out, 40).unwrap();
    let records = trainer
        .fit(&train_loader, Some(&eval_loader))
        .unwrap()
        .to_vec();
    for r in &records {
        println!("{r:?}");
    }
    let (first, last) = (records[0], records[records.len() - 1]);
    assert!(
        last.train_loss < 0.5 * first.train_loss,
        "{first:?} -> {last:?}"
    );
    // Chance is 25%.
    assert!(
        last.eval_top1.unwrap() > 0.6,
        "held-out accuracy {:?}",
        last.eval_top1
    );
    let svg = std::fs::read_to_string(config.plot.unwrap()).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline"),
        "not a chart"
    );
}

fn alexnet_config(checkpoint: Option<PathBuf>, max_steps: u32) -> TrainConfig {
    let mut c = TrainConfig::new(3, 0.01);
    c.seed = 9;
    c.checkpoint = checkpoint;
    c.checkpoint_every = 2;
    c.max_steps = Some(max_steps);
    c
}

#[test]
fn a_resumed_run_repeats_the_uninterrupted_losses() {
    // The 32x32 AlexNet has dropout, so this also checks that masks follow the step.
    let data: Arc<dyn Dataset> = Arc::new(Synthetic::new(12, 32, 4, 5));
    let loader = Loader::new(data, 4).unwrap().shuffled(7); // 3 batches per epoch
    let model = || zoo::alexnet(AlexNet::Cifar, 4, 32, 4).unwrap();

    let mut whole = Trainer::new(gpu(), model(), alexnet_config(None, 6)).unwrap();
    whole.fit(&loader, None).unwrap();
    assert_eq!(whole.losses.len(), 6);

    let path = temp_dir("resume").join("alexnet.safetensors");
    let mut first = Trainer::new(gpu(), model(), alexnet_config(Some(path.clone()), 4)).unwrap();
    first.fit(&loader, None).unwrap();
    assert_eq!(first.losses[..], whole.losses[..4]);
    drop(first);

    let mut config = alexnet_config(Some(path), 6);
    config.resume = true;
    let mut resumed = Trainer::new(gpu(), model(), config).unwrap();
    // Checkpointed after step 4: epoch 1 (of 3 batches each), one batch in.
    assert_eq!(
        (
            resumed.position().epoch,
            resumed.position().batch,
            resumed.position().steps
        ),
        (1, 1, 4)
    );
    resumed.fit(&loader, None).unwrap();
    println!(
        "uninterrupted {:?}\nresumed tail  {:?}",
        whole.losses, resumed.losses
    );
    assert_eq!(resumed.losses[..], whole.losses[4..6]);
}

#[test]
fn an_unwritable_checkpoint_fails_before_training() {
    let model = zoo::mlp([4, 4, 1], &[8], 2, 4).unwrap();
    let mut config = TrainConfig::new(1, 0.1);
    config.checkpoint = Some(PathBuf::from("/nonexistent-dir/run.safetensors"));
    let err = Trainer::new(gpu(), model, config)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("/nonexistent-dir"), "{err}");
}

#[test]
fn a_checkpoint_of_another_model_is_refused_with_every_mismatch() {
    let dir = temp_dir("mismatch");
    let path = dir.join("mlp.safetensors");
    let data: Arc<dyn Dataset> = Arc::new(Synthetic::new(8, 4, 2, 1));
    let loader = Loader::new(data, 4).unwrap();
    let mut config = TrainConfig::new(1, 0.1);
    config.checkpoint = Some(path.clone());
    let mut t = Trainer::new(
        gpu(),
        zoo::mlp([4, 4, 3], &[8], 2, 4).unwrap(),
        config.clone(),
    )
    .unwrap();
    t.fit(&loader, None).unwrap();
    config.resume = true;
    let other = zoo::mlp([4, 4, 3], &[6], 2, 4).unwrap();
    let err = Trainer::new(gpu(), other, config)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("mlp"), "{err}");
}
