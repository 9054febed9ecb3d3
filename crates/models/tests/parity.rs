//! Golden parity with PyTorch: reduced-width AlexNets (torchvision's and the 2012 paper's,
//! with LRN and grouped convolutions) and ResNets (basic blocks and bottlenecks) load the
//! initial weights PyTorch wrote (through the torchvision `state_dict` loader), take one
//! training step on the same batch, and must reproduce PyTorch's logits and loss
//! (relative error ≤ 1e-4), every parameter gradient (≤ 1e-3), and the weights and
//! batch-norm statistics after one SGD-with-momentum step and one AdamW step (≤ 1e-3,
//! and the update itself, after minus before, too).
//!
//! The fixtures in `tests/fixtures/` come from `tools/parity_fixtures.py` (PyTorch in
//! float64, stored as float32); running these tests needs no PyTorch. The relative error
//! of a tensor is `max |ours − theirs| / max |theirs|`.
//!
//! A second test checks the full-size AlexNet and ResNet-18…152 against torchvision's
//! `state_dict` names and shapes (`torchvision_params.json`, from the same script).

mod common;
use common::gpu;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use wgtrain_graph::{Feed, Mode, Optimizer, Session, StepInfo};
use wgtrain_models::torch;
use wgtrain_models::zoo::{self, AlexNet, Model, Reduced};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fixture's tensors as f32 (int64 labels converted too) and its metadata.
struct Expected {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    meta: HashMap<String, String>,
}

impl Expected {
    fn load(name: &str) -> Self {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = match view.dtype() {
                    Dtype::F32 => view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    Dtype::I64 => view
                        .data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                    other => panic!("{name}: unexpected dtype {other:?}"),
                };
                (name, (view.shape().to_vec(), data))
            })
            .collect();
        let meta = header.metadata().clone().unwrap_or_default();
        Self { tensors, meta }
    }

    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
    }

    fn number(&self, key: &str) -> usize {
        self.meta[key].parse().unwrap()
    }
}

/// `max |got − want| / max |want|`, after checking that the lengths match.
fn relative_error(name: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0f64, |m, &w| m.max(w.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs()));
    assert!(
        got.iter().all(|g| g.is_finite()),
        "{name}: non-finite value"
    );
    diff / scale.max(1e-30)
}

/// Asserts `got` is within `tol` of `want` and returns the error for the summary.
fn check(name: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    let err = relative_error(name, got, want);
    assert!(err <= tol, "{name}: relative error {err:.3e} > {tol:.0e}");
    err
}

/// NCHW (PyTorch's input) to NHWC.
fn nchw_to_nhwc(shape: &[usize], data: &[f32]) -> Vec<f32> {
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let mut out = vec![0.0; data.len()];
    for ni in 0..n {
        for ci in 0..c {
            for p in 0..h * w {
                out[(ni * h * w + p) * c + ci] = data[(ni * c + ci) * h * w + p];
            }
        }
    }
    out
}

/// The worst relative error of each kind, printed at the end of a model's test.
#[derive(Default)]
struct Worst(HashMap<&'static str, (f64, String)>);

impl Worst {
    fn note(&mut self, kind: &'static str, name: &str, err: f64) {
        let entry = self.0.entry(kind).or_insert((0.0, String::new()));
        if err >= entry.0 {
            *entry = (err, name.to_owned());
        }
    }
}

/// One training step of `model` with `optimizer` from the fixture's initial weights,
/// compared with PyTorch's tensors under `prefix` (`sgd` or `adamw`).
fn step_and_compare(
    model: &Model,
    fixture_name: &str,
    want: &Expected,
    optimizer: Optimizer,
    (prefix, lr): (&str, f32),
    worst: &mut Worst,
) {
    // The weights after a step are computed from the gradients, so they get the
    // gradients' 1e-3; so does the update alone (after minus before). AdamW's first step
    // is m / (sqrt(v) + eps) ≈ ±lr per element whatever the gradient's size, so an
    // element whose gradient is within a few orders of eps (1e-8) is at the mercy of f32
    // rounding there (the sensitivity is eps / |g|): its update is compared only where
    // |gradient| ≥ 1e-5.
    let well_conditioned = |name: &str, i: usize| {
        prefix != "adamw"
            || want
                .tensors
                .get(&format!("grad.{name}"))
                .is_none_or(|(_, g)| g[i].abs() >= 1e-5)
    };
    let mut graph = model.graph.clone();
    let training = graph.minimize(model.loss, optimizer).unwrap();
    let mut session = Session::new(gpu(), graph, 0).unwrap();
    let weights = fixture(&format!("{fixture_name}.weights.safetensors"));
    let loaded = torch::load_state_dict(&weights, &session).unwrap();
    assert!(loaded.tensors > 0);

    let (in_shape, input) = want.get("input");
    let images = nchw_to_nhwc(in_shape, input);
    let labels: Vec<u32> = want.get("labels").1.iter().map(|&l| l as u32).collect();
    let nhwc = [in_shape[0], in_shape[2], in_shape[3], in_shape[1]];
    let feeds = [
        Feed::f32("images", &nhwc, &images),
        Feed::u32("labels", &nhwc[..1], &labels),
    ];
    let grads: Vec<(String, wgtrain_graph::Value)> = training
        .gradients
        .iter(session.graph())
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    let fetch: Vec<_> = [model.logits, training.loss]
        .into_iter()
        .chain(grads.iter().map(|g| g.1))
        .collect();
    let before: HashMap<String, Vec<f32>> = torch::state_dict_variables(session.graph())
        .map(|v| (v.name.clone(), session.read_variable(&v.name).unwrap()))
        .collect();
    let info = StepInfo {
        step: 1,
        lr,
        seed: 0,
    };
    let out = session
        .run(Mode::Train, &feeds, &fetch, &training.updates, info)
        .unwrap();

    let logits = out.f32(model.logits);
    worst.note(
        "logits",
        "logits",
        check("logits", &logits, &want.get("logits").1, 1e-4),
    );
    let loss = [out.scalar(training.loss)];
    worst.note(
        "loss",
        "loss",
        check("loss", &loss, &want.get("loss").1, 1e-4),
    );
    let variables: HashMap<&str, &wgtrain_graph::Variable> = session
        .graph()
        .variables()
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for (name, value) in &grads {
        let var = variables[name.as_str()];
        let got = torch::to_torch(var, &out.f32(*value));
        let key = format!("grad.{name}");
        worst.note("grad", name, check(&key, &got, &want.get(&key).1, 1e-3));
    }
    for var in torch::state_dict_variables(session.graph()) {
        let after = session.read_variable(&var.name).unwrap();
        let key = format!("{prefix}.{}", var.name);
        let theirs = &want.get(&key).1;
        let got = torch::to_torch(var, &after);
        worst.note("after", &key, check(&key, &got, theirs, 1e-3));
        // The update itself, which the weights' size would hide.
        let initial = torch::to_torch(var, &before[&var.name]);
        let (mut ours_delta, mut their_delta) = (Vec::new(), Vec::new());
        for i in 0..got.len() {
            if well_conditioned(&var.name, i) {
                ours_delta.push(got[i] - initial[i]);
                their_delta.push(theirs[i] - initial[i]);
            }
        }
        if their_delta.iter().any(|d| *d != 0.0) {
            let err = check(&format!("{key} (update)"), &ours_delta, &their_delta, 2e-3);
            worst.note("update", &key, err);
        }
    }
}

fn parity(model: Model, name: &str) {
    let want = Expected::load(&format!("{name}.expected.safetensors"));
    assert_eq!(model.input[0], want.number("image"), "fixture image size");
    let mut worst = Worst::default();
    let sgd = Optimizer::sgd_momentum(0.9, 5e-4, false);
    step_and_compare(&model, name, &want, sgd, ("sgd", 0.1), &mut worst);
    let adamw = Optimizer::adamw(1e-2);
    step_and_compare(&model, name, &want, adamw, ("adamw", 1e-3), &mut worst);
    let mut kinds: Vec<_> = worst.0.into_iter().collect();
    kinds.sort_by_key(|k| k.0);
    for (kind, (err, tensor)) in kinds {
        println!("parity {name} {kind}: max relative error {err:.2e} ({tensor})");
    }
}

fn alexnet(variant: AlexNet, want: &Expected) -> Model {
    let size = Reduced {
        divisor: want.number("divisor"),
        hidden: want.number("hidden"),
        dropout: 0.0,
    };
    let (classes, image, batch) = (
        want.number("classes"),
        want.number("image"),
        want.number("batch"),
    );
    zoo::alexnet_reduced(variant, classes, image, batch, size).unwrap()
}

#[test]
fn reduced_torchvision_alexnet_matches_pytorch() {
    let name = "alexnet-torchvision";
    let want = Expected::load(&format!("{name}.expected.safetensors"));
    parity(alexnet(AlexNet::Torchvision, &want), name);
}

#[test]
fn reduced_paper_alexnet_with_lrn_and_groups_matches_pytorch() {
    let name = "alexnet-paper";
    let want = Expected::load(&format!("{name}.expected.safetensors"));
    parity(alexnet(AlexNet::Paper, &want), name);
}

fn resnet(name: &str) {
    let want = Expected::load(&format!("{name}.expected.safetensors"));
    let model = zoo::resnet_width(
        want.number("depth"),
        want.number("classes"),
        want.number("image"),
        want.number("batch"),
        want.number("base"),
    )
    .unwrap();
    parity(model, name);
}

#[test]
fn reduced_resnet18_matches_pytorch() {
    resnet("resnet18");
}

#[test]
fn reduced_resnet50_with_bottlenecks_matches_pytorch() {
    resnet("resnet50");
}

/// Every `state_dict` entry of the full-size torchvision models, by name and shape.
#[test]
fn full_size_names_and_shapes_equal_torchvision() {
    let text = std::fs::read_to_string(fixture("torchvision_params.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let models = json["models"].as_object().unwrap();
    assert_eq!(models.len(), 6);
    for (arch, entries) in models {
        let model = match arch.as_str() {
            "alexnet" => zoo::alexnet(AlexNet::Torchvision, 1000, 224, 1),
            other => zoo::resnet(other[6..].parse().unwrap(), 1000, 224, 1),
        }
        .unwrap();
        let theirs: Vec<(String, Vec<usize>)> = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let shape = e[1].as_array().unwrap();
                let shape = shape.iter().map(|d| d.as_u64().unwrap() as usize);
                (e[0].as_str().unwrap().to_owned(), shape.collect())
            })
            .collect();
        let ours = torch::state_dict_entries(&model.graph);
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{arch}: number of state_dict entries"
        );
        let mismatches: Vec<String> = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("ours {a:?}, torchvision {b:?}"))
            .collect();
        assert!(mismatches.is_empty(), "{arch}:\n{}", mismatches.join("\n"));
    }
}
