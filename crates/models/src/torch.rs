//! PyTorch interop: a model's weights in and out as a torchvision `state_dict` in
//! safetensors.
//!
//! The names are torchvision's already (the layers are named as its modules are). What
//! differs is the layout, which the graph records per variable ([`Layout`]):
//! convolution weights are KRSC here and OIHW in PyTorch, and a linear layer that reads a
//! flattened feature map sees its columns in `(h, w, c)` order here (NHWC) and `(c, h, w)`
//! in PyTorch (NCHW). Batch-norm layers carry PyTorch's `num_batches_tracked` counter
//! (int64), which wgtrain does not keep: it is written as the optimizer steps taken and
//! ignored on load. Optimizer state (momentum, Adam moments) is not part of a
//! `state_dict`; wgtrain's own checkpoints ([`crate::checkpoint`]) keep it.
//!
//! `tools/torchvision_weights.py` exports a torchvision model's `state_dict` to this
//! format and loads one written here back into torchvision.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use wgtrain_graph::{Graph, Layout, Session, Variable};

use crate::checkpoint::{parse_safetensors, write_atomic};
use crate::error::{ModelError, Result, io};

/// The suffix PyTorch gives a batch-norm layer's update counter.
const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// The variables of `graph` that make up its `state_dict` (parameters and
/// batch-norm statistics, in creation order), without optimizer state.
pub fn state_dict_variables(graph: &Graph) -> impl Iterator<Item = &Variable> {
    graph.variables().iter().filter(|v| !v.optimizer_state)
}

/// The `state_dict` of `graph` as PyTorch lists it: every name with its PyTorch shape,
/// in module order, a `num_batches_tracked` (shape `[]`) after each `running_var`.
pub fn state_dict_entries(graph: &Graph) -> Vec<(String, Vec<usize>)> {
    let mut entries = Vec::new();
    for v in state_dict_variables(graph) {
        entries.push((v.name.clone(), torch_shape(v)));
        if let Some(scope) = v.name.strip_suffix(".running_var") {
            entries.push((format!("{scope}.{NUM_BATCHES_TRACKED}"), Vec::new()));
        }
    }
    entries
}

/// The shape PyTorch gives `var`.
pub fn torch_shape(var: &Variable) -> Vec<usize> {
    let s = &var.ty.shape;
    match var.layout {
        Layout::ConvKrsc if s.len() == 4 => vec![s[0], s[3], s[1], s[2]],
        _ => s.clone(),
    }
}

/// `data` of `var` (wgtrain's layout) in PyTorch's layout.
pub fn to_torch(var: &Variable, data: &[f32]) -> Vec<f32> {
    permute(var, data, true)
}

/// `data` in PyTorch's layout of `var` converted to wgtrain's layout.
pub fn from_torch(var: &Variable, data: &[f32]) -> Vec<f32> {
    permute(var, data, false)
}

/// Moves every element between the two layouts: `to_torch` reads wgtrain's index
/// and writes PyTorch's, the other way round otherwise.
fn permute(var: &Variable, data: &[f32], to_torch: bool) -> Vec<f32> {
    let s = &var.ty.shape;
    let mut out = vec![0.0; data.len()];
    let mut mv = |ours: usize, theirs: usize| {
        if to_torch {
            out[theirs] = data[ours];
        } else {
            out[ours] = data[theirs];
        }
    };
    match var.layout {
        Layout::ConvKrsc if s.len() == 4 => {
            let (k, r, t, c) = (s[0], s[1], s[2], s[3]);
            for ki in 0..k {
                for ri in 0..r {
                    for ti in 0..t {
                        for ci in 0..c {
                            let ours = ((ki * r + ri) * t + ti) * c + ci;
                            let theirs = ((ki * c + ci) * r + ri) * t + ti;
                            mv(ours, theirs);
                        }
                    }
                }
            }
        }
        Layout::LinearOverNhwc { h, w, c } if s.len() == 2 && s[1] == h * w * c => {
            for row in 0..s[0] {
                for pixel in 0..h * w {
                    for ci in 0..c {
                        let ours = row * s[1] + pixel * c + ci;
                        let theirs = row * s[1] + ci * h * w + pixel;
                        mv(ours, theirs);
                    }
                }
            }
        }
        _ => return data.to_vec(),
    }
    out
}

/// The batch-norm layers of the state dict: scopes with a `running_mean`.
fn batch_norm_scopes(graph: &Graph) -> Vec<String> {
    state_dict_variables(graph)
        .filter_map(|v| v.name.strip_suffix(".running_mean").map(str::to_owned))
        .collect()
}

/// Writes the model's `state_dict` (PyTorch names, layouts and dtypes) to `path`
/// atomically; `torch.nn.Module.load_state_dict(safetensors.torch.load_file(path))`
/// reads it into the torchvision model.
pub fn save_state_dict(path: &Path, session: &Session) -> Result<()> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for v in state_dict_variables(session.graph()) {
        let data = to_torch(v, &session.read_variable(&v.name)?);
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((v.name.clone(), Dtype::F32, torch_shape(v), bytes));
    }
    let tracked = i64::from(session.optimizer_steps()).to_le_bytes().to_vec();
    for scope in batch_norm_scopes(session.graph()) {
        let name = format!("{scope}.{NUM_BATCHES_TRACKED}");
        tensors.push((name, Dtype::I64, Vec::new(), tracked.clone()));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// What [`load_state_dict`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Variables written into the session.
    pub tensors: usize,
    /// `num_batches_tracked` counters read and ignored.
    pub ignored_counters: usize,
}

/// Reads a torchvision `state_dict` from `path` into `session`'s parameters and
/// batch-norm statistics, converting layouts and dtypes (F32, F64, F16, BF16).
///
/// Nothing is written unless the whole file fits: a missing tensor, an unexpected one,
/// a wrong shape or dtype is an error listing every offending tensor.
/// `num_batches_tracked` may be present or not. Optimizer state is left as it is.
pub fn load_state_dict(path: &Path, session: &Session) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let (st, _) = parse_safetensors(path, &bytes)?;
    let expected: BTreeMap<&str, &Variable> = state_dict_variables(session.graph())
        .map(|v| (v.name.as_str(), v))
        .collect();
    let counters: Vec<String> = batch_norm_scopes(session.graph())
        .into_iter()
        .map(|s| format!("{s}.{NUM_BATCHES_TRACKED}"))
        .collect();
    let mut problems = Vec::new();
    let mut values = Vec::new();
    let mut ignored = 0;
    for (name, view) in st.tensors() {
        if counters.contains(&name) {
            match view.shape().iter().product::<usize>() {
                1 => ignored += 1,
                _ => problems.push(format!(
                    "{name}: shape {:?}, expected [] (a counter)",
                    view.shape()
                )),
            }
            continue;
        }
        let Some(var) = expected.get(name.as_str()) else {
            problems.push(format!(
                "{name}: not in the model (shape {:?})",
                view.shape()
            ));
            continue;
        };
        let want = torch_shape(var);
        if view.shape() != want.as_slice() {
            problems.push(format!(
                "{name}: shape {:?} in the file, the model has {:?}",
                view.shape(),
                want
            ));
            continue;
        }
        match to_f32(view.dtype(), view.data()) {
            Some(data) => values.push((var.name.clone(), from_torch(var, &data))),
            None => problems.push(format!(
                "{name}: dtype {:?}; F32, F64, F16 or BF16 expected",
                view.dtype()
            )),
        }
    }
    let present: Vec<&str> = st.names();
    for name in expected.keys() {
        if !present.contains(name) {
            problems.push(format!("{name}: missing from the file"));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(ModelError::Weights {
            file: path.to_path_buf(),
            problems,
        });
    }
    for (name, data) in &values {
        session.write_variable(name, data)?;
    }
    Ok(Loaded {
        tensors: values.len(),
        ignored_counters: ignored,
    })
}

/// Little-endian tensor bytes as f32, or `None` for a dtype that is not a float.
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    };
    Some(out)
}
