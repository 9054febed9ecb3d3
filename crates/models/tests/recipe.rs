//! The large-batch recipe's model options (Goyal et al. 2017, §5.1): residual blocks that
//! start as the identity (`zero_init_residual`), and no weight decay on batch-norm and
//! bias parameters. (Linear scaling and gradual warmup are the schedule's, tested in
//! `wgtrain_graph::schedule`.)

mod common;

use common::gpu;
use wgtrain_graph::{Feed, Optimizer, Rng, Session};
use wgtrain_models::zoo::{self, Model};

fn feeds_for(model: &Model, batch: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::stream(9, 0);
    let per = model.input.iter().product::<usize>();
    let x = (0..batch * per)
        .map(|_| (rng.next_u64() % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y = (0..batch).map(|i| (i % model.classes) as u32).collect();
    (x, y)
}

/// The loss of `model` at initialisation, after `perturb` rewrites some weights.
fn loss_with(model: &Model, batch: usize, perturb: &dyn Fn(&Session)) -> f32 {
    let mut m = model.clone();
    let training = m.graph.minimize(m.loss, Optimizer::sgd()).unwrap();
    let mut session = Session::new(gpu(), m.graph, 5).unwrap();
    perturb(&session);
    let (x, y) = feeds_for(model, batch);
    let [h, w, c] = model.input;
    let feeds = [
        Feed::f32("images", &[batch, h, w, c], &x),
        Feed::u32("labels", &[batch], &y),
    ];
    session.gradients(&training, &feeds).unwrap().0
}

/// Overwrites every convolution weight inside the residual blocks with other values.
fn scramble_blocks(session: &Session) {
    let mut rng = Rng::stream(77, 0);
    for v in session.graph().variables() {
        if v.name.starts_with("layer") && v.name.contains(".conv") && v.name.ends_with("weight") {
            let data: Vec<f32> = (0..v.ty.len())
                .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            session.write_variable(&v.name, &data).unwrap();
        }
    }
}

#[test]
fn zero_init_residual_blocks_start_as_identity_maps() {
    for (mut model, batch, last_bn) in [
        (zoo::cifar_resnet(20, 10, 2).unwrap(), 2, "bn2"),
        (zoo::resnet_width(50, 10, 32, 2, 4).unwrap(), 2, "bn3"),
    ] {
        let plain = model.clone();
        let names = model.zero_init_residual().unwrap();
        let blocks = if last_bn == "bn2" { 9 } else { 16 };
        assert_eq!(names.len(), blocks, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.ends_with(&format!("{last_bn}.weight")))
        );
        // Each block's main path starts at 0, so its output is its shortcut: whatever
        // its convolutions hold, the loss is the same, bit for bit.
        let before = loss_with(&model, batch, &|_| {});
        let after = loss_with(&model, batch, &scramble_blocks);
        assert_eq!(
            before, after,
            "{}: the blocks' convolutions mattered",
            model.name
        );
        // Without it they do matter (the check can fail).
        let plain_before = loss_with(&plain, batch, &|_| {});
        let plain_after = loss_with(&plain, batch, &scramble_blocks);
        assert_ne!(plain_before, plain_after);
    }
    let mut mlp = zoo::mlp([4, 4, 1], &[8], 3, 2).unwrap();
    assert!(mlp.zero_init_residual().unwrap().is_empty());
}

#[test]
fn no_decay_groups_are_exactly_the_batch_norm_and_bias_parameters() {
    let mut model = zoo::cifar_resnet(20, 10, 2).unwrap();
    let mut names = model.graph.no_decay_on_norms_and_biases();
    names.sort();
    let mut want: Vec<String> = model
        .graph
        .variables()
        .iter()
        .filter(|v| v.trainable)
        .map(|v| v.name.clone())
        .filter(|n| n.contains("bn") || n.ends_with(".bias"))
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        names.len(),
        2 * 19 + 1,
        "19 batch norms (γ, β) and the fc bias"
    );
}

#[test]
fn exempt_parameters_update_without_weight_decay() {
    // One SGD step with weight decay 0.1 and the BN/bias exemption: exempt parameters
    // move as with no decay at all, the others as with decay everywhere.
    let run = |decay: f32, exempt: bool| {
        let mut m = zoo::cifar_resnet(8, 10, 2).unwrap();
        if exempt {
            m.graph.no_decay_on_norms_and_biases();
        }
        let training = m
            .graph
            .minimize(m.loss, Optimizer::sgd_momentum(0.0, decay, false))
            .unwrap();
        let input = m.input;
        let mut session = Session::new(gpu(), m.graph.clone(), 3).unwrap();
        // Move γ and β off their initial 1 and 0, so that decay has something to act on.
        for v in m.graph.variables().iter().filter(|v| v.name.contains("bn")) {
            session
                .write_variable(&v.name, &vec![0.7; v.ty.len()])
                .unwrap();
        }
        let (x, y) = feeds_for(&m, 2);
        let [h, w, c] = input;
        let feeds = [
            Feed::f32("images", &[2, h, w, c], &x),
            Feed::u32("labels", &[2], &y),
        ];
        session.train_step(&training, &feeds, 0.1).unwrap();
        session
            .graph()
            .variables()
            .iter()
            .filter(|v| v.trainable)
            .map(|v| {
                (
                    v.name.clone(),
                    v.no_decay,
                    session.read_variable(&v.name).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let exempt = run(0.1, true);
    let decayed = run(0.1, false);
    let none = run(0.0, false);
    for ((name, no_decay, got), ((_, _, d), (_, _, n))) in
        exempt.iter().zip(decayed.iter().zip(&none))
    {
        let want = if *no_decay { n } else { d };
        assert_eq!(got, want, "{name} (exempt: {no_decay})");
        if *no_decay {
            assert_ne!(
                d, n,
                "{name}: decay changes the update, so the check can fail"
            );
        }
    }
}
