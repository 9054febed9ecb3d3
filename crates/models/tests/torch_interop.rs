//! torchvision `state_dict`s in and out: layouts converted element by element (KRSC ↔
//! OIHW, NHWC-flattened ↔ NCHW-flattened linear columns), a save/load round trip,
//! `num_batches_tracked` written as int64 and accepted on load, F16/F64/BF16 weights
//! read, and a file that does not fit the model refused with every offending tensor
//! named and nothing written.

mod common;
use common::gpu;

use std::path::PathBuf;

use safetensors::tensor::{Dtype, TensorView};
use wgtrain_graph::{Graph, Init, Layout, Session, TensorType};
use wgtrain_models::ModelError;
use wgtrain_models::torch;
use wgtrain_models::zoo::{self, AlexNet, Reduced};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn layouts_convert_element_by_element() {
    let mut g = Graph::new();
    let x = g.input("images", TensorType::f32(&[1, 4, 4, 3])).unwrap();
    let w = g
        .param("conv.weight", &[2, 1, 2, 3], Init::Constant(0.0))
        .unwrap();
    let y = g.conv2d(x, w, None, Default::default()).unwrap();
    let flat = g.flatten(y).unwrap();
    let fc = g
        .param("fc.weight", &[1, 4 * 3 * 2], Init::Constant(0.0))
        .unwrap();
    g.linear(flat, fc, None).unwrap();
    let conv = &g.variables()[0];
    assert_eq!(conv.layout, Layout::ConvKrsc);
    assert_eq!(torch::torch_shape(conv), vec![2, 3, 1, 2]);
    // KRSC [k][r][s][c] = 1000k + 100r + 10s + c; OIHW lists c before r, s.
    let krsc: Vec<f32> = (0..12)
        .map(|i| ((i / 6) * 1000 + (i / 3 % 2) * 10 + i % 3) as f32)
        .collect();
    let oihw = torch::to_torch(conv, &krsc);
    let want = [
        0., 10., 1., 11., 2., 12., 1000., 1010., 1001., 1011., 1002., 1012.,
    ];
    assert_eq!(oihw, want);
    assert_eq!(torch::from_torch(conv, &oihw), krsc);

    let fc = &g.variables()[1];
    assert_eq!(fc.layout, Layout::LinearOverNhwc { h: 4, w: 3, c: 2 });
    // Our column (pixel p, channel c) = 10p + c; PyTorch's columns run c-major.
    let ours: Vec<f32> = (0..24).map(|i| ((i / 2) * 10 + i % 2) as f32).collect();
    let theirs = torch::to_torch(fc, &ours);
    let want: Vec<f32> = (0..24).map(|i| ((i % 12) * 10 + i / 12) as f32).collect();
    assert_eq!(theirs, want);
    assert_eq!(torch::from_torch(fc, &theirs), ours);
}

fn reduced_alexnet() -> zoo::Model {
    let size = Reduced {
        divisor: 16,
        hidden: 32,
        dropout: 0.5,
    };
    zoo::alexnet_reduced(AlexNet::Torchvision, 10, 95, 2, size).unwrap()
}

#[test]
fn a_state_dict_round_trips_and_counts_batches_as_int64() {
    let model = zoo::resnet_width(18, 10, 32, 2, 4).unwrap();
    let session = Session::new(gpu(), model.graph.clone(), 7).unwrap();
    let path = temp("resnet18.safetensors");
    torch::save_state_dict(&path, &session).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let counter = st.tensor("layer1.0.bn2.num_batches_tracked").unwrap();
    assert_eq!((counter.dtype(), counter.shape()), (Dtype::I64, &[][..]));
    let conv = st.tensor("layer2.0.conv1.weight").unwrap();
    assert_eq!(conv.shape(), [8, 4, 3, 3]);
    let names: Vec<String> = torch::state_dict_entries(&model.graph)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(st.len(), names.len());

    let other = Session::new(gpu(), model.graph.clone(), 8).unwrap();
    let name = "layer2.0.conv1.weight";
    assert_ne!(
        other.read_variable(name).unwrap(),
        session.read_variable(name).unwrap()
    );
    let loaded = torch::load_state_dict(&path, &other).unwrap();
    assert_eq!(loaded.ignored_counters, 20);
    for v in torch::state_dict_variables(session.graph()) {
        let (a, b) = (session.read_variable(&v.name), other.read_variable(&v.name));
        assert_eq!(a.unwrap(), b.unwrap(), "{}", v.name);
    }
}

#[test]
fn half_and_double_weights_are_converted() {
    let model = reduced_alexnet();
    let session = Session::new(gpu(), model.graph.clone(), 1).unwrap();
    let entries = torch::state_dict_entries(&model.graph);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, (name, shape)) in entries.iter().enumerate() {
        let n: usize = shape.iter().product();
        let value = |j: usize| ((i + j) % 7) as f32 * 0.25 - 0.5;
        let (dtype, bytes) = match i % 3 {
            0 => (
                Dtype::F16,
                (0..n)
                    .flat_map(|j| half::f16::from_f32(value(j)).to_le_bytes())
                    .collect(),
            ),
            1 => (
                Dtype::F64,
                (0..n)
                    .flat_map(|j| (value(j) as f64).to_le_bytes())
                    .collect(),
            ),
            _ => (
                Dtype::BF16,
                (0..n)
                    .flat_map(|j| half::bf16::from_f32(value(j)).to_le_bytes())
                    .collect(),
            ),
        };
        tensors.push((name.clone(), dtype, shape.clone(), bytes));
    }
    let path = temp("mixed.safetensors");
    write(&path, &tensors);
    torch::load_state_dict(&path, &session).unwrap();
    // classifier.6.bias is the last entry: plain layout, values exact in every dtype.
    let (i, (name, shape)) = entries.iter().enumerate().next_back().unwrap();
    let want: Vec<f32> = (0..shape[0])
        .map(|j| ((i + j) % 7) as f32 * 0.25 - 0.5)
        .collect();
    assert_eq!(session.read_variable(name).unwrap(), want);
}

fn write(path: &std::path::Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn a_file_that_does_not_fit_lists_every_offending_tensor_and_writes_nothing() {
    let model = reduced_alexnet();
    let session = Session::new(gpu(), model.graph.clone(), 1).unwrap();
    let before = session.read_variable("features.0.weight").unwrap();
    let mut tensors = Vec::new();
    for (name, shape) in torch::state_dict_entries(&model.graph) {
        let shape = match name.as_str() {
            "features.3.weight" => vec![12, 4, 3, 3],
            "classifier.4.bias" => continue,
            _ => shape,
        };
        let n: usize = shape.iter().product();
        tensors.push((name, Dtype::F32, shape, vec![0u8; n * 4]));
    }
    tensors.push(("fc.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
    tensors.push(("features.0.bias".into(), Dtype::I32, vec![4], vec![0; 16]));
    tensors.retain(|t| !(t.0 == "features.0.bias" && t.1 == Dtype::F32));
    let path = temp("wrong.safetensors");
    write(&path, &tensors);
    let err = torch::load_state_dict(&path, &session).unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    let ModelError::Weights { file, problems } = err else {
        panic!("expected a Weights error, got {message}");
    };
    assert_eq!(file, path);
    assert_eq!(problems.len(), 4, "{problems:?}");
    for needle in [
        "classifier.4.bias: missing",
        "fc.weight: not in the model",
        "features.3.weight: shape [12, 4, 3, 3] in the file, the model has [12, 4, 5, 5]",
        "features.0.bias: dtype I32",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    assert_eq!(session.read_variable("features.0.weight").unwrap(), before);

    std::fs::write(&path, [0xff; 16]).unwrap();
    let err = torch::load_state_dict(&path, &session)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong.safetensors") && err.contains("header length"),
        "{err}"
    );
}
