//! Checkpoints in safetensors: every variable of the session (parameters, batch-norm
//! statistics, optimizer state) under its torchvision-style name, plus where training
//! stood (epoch, batch, optimizer step) in the header's metadata.
//!
//! Files are written atomically — a temporary file in the same directory, `fsync`, then
//! a rename — so a run killed mid-write leaves the previous checkpoint intact.
//! Tensors are stored in wgtrain's internal layout (convolution weights KRSC) and the
//! metadata says so (`layout = wgtrain-krsc`); [`crate::torch`] reads and writes
//! PyTorch's layouts.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgtrain_graph::Session;

use crate::error::{ModelError, Result, io};

/// Where training stood when a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Epoch in progress (0-based).
    pub epoch: u64,
    /// Batches of that epoch already trained on.
    pub batch: usize,
    /// Optimizer steps taken in all.
    pub steps: u32,
}

const LAYOUT: &str = "wgtrain-krsc";

/// Fails now, before any training, if `path` cannot be written.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = parent(path);
    if !dir.is_dir() {
        return Err(ModelError::Config(format!(
            "checkpoint {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    let probe = temp_path(path);
    std::fs::write(&probe, b"").map_err(io(&probe))?;
    std::fs::remove_file(&probe).map_err(io(&probe))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes every variable of `session` and `position` to `path`, atomically.
pub fn save(path: &Path, session: &Session, model: &str, position: Position) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for v in session.graph().variables() {
        let data = session.read_variable(&v.name)?;
        tensors.push((v.name.clone(), v.ty.shape.clone(), bytemuck_f32(&data)));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ModelError::Config(format!("checkpoint {}: {e}", path.display())))?;
    let metadata = HashMap::from([
        ("model".to_owned(), model.to_owned()),
        ("layout".to_owned(), LAYOUT.to_owned()),
        ("epoch".to_owned(), position.epoch.to_string()),
        ("batch".to_owned(), position.batch.to_string()),
        ("steps".to_owned(), position.steps.to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::Config(format!("checkpoint {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`,
/// then a rename, so that a crash leaves either the old file or the new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn bytemuck_f32(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Loads a checkpoint written by [`save`] into `session`: every variable must be there
/// with its shape (a list of every mismatch otherwise). Returns the position.
pub fn load(path: &Path, session: &Session, model: &str) -> Result<Position> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let data_err = |message: String| ModelError::Data {
        file: path.to_path_buf(),
        offset: 0,
        message,
    };
    let (st, header) = parse_safetensors(path, &bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| meta.get(key).cloned().unwrap_or_default();
    if get("model") != model {
        return Err(data_err(format!(
            "checkpoint is for model {:?}, not {model:?}",
            get("model")
        )));
    }
    let mut problems = Vec::new();
    let mut values = Vec::new();
    for v in session.graph().variables() {
        match st.tensor(&v.name) {
            Ok(t) if t.shape() == v.ty.shape.as_slice() && t.dtype() == Dtype::F32 => {
                let data: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                values.push((v.name.clone(), data));
            }
            Ok(t) => problems.push(format!(
                "{}: shape {:?} {:?}, expected {:?} F32",
                v.name,
                t.shape(),
                t.dtype(),
                v.ty.shape
            )),
            Err(_) => problems.push(format!("{}: missing", v.name)),
        }
    }
    if !problems.is_empty() {
        return Err(data_err(format!(
            "does not fit the model:\n  {}",
            problems.join("\n  ")
        )));
    }
    for (name, data) in values {
        session.write_variable(&name, &data)?;
    }
    let number = |key: &str| -> Result<u64> {
        get(key)
            .parse()
            .map_err(|_| data_err(format!("metadata {key} = {:?} is not a number", get(key))))
    };
    Ok(Position {
        epoch: number("epoch")?,
        batch: usize::try_from(number("batch")?).map_err(|_| data_err(too_big("batch")))?,
        steps: u32::try_from(number("steps")?).map_err(|_| data_err(too_big("steps")))?,
    })
}

fn too_big(key: &str) -> String {
    format!("metadata {key} is too large")
}

/// Parses a safetensors file, checking its 8-byte header length against the file length
/// first, so a corrupt length is reported as such (with both numbers) rather than as the
/// library's terse "invalid header length".
pub(crate) fn parse_safetensors<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SafeTensors<'a>, safetensors::tensor::Metadata)> {
    let err = |offset: usize, message: String| ModelError::Data {
        file: path.to_path_buf(),
        offset: offset as u64,
        message,
    };
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(err(
            bytes.len(),
            format!(
                "not a safetensors file: {} bytes, shorter than the 8-byte header length",
                bytes.len()
            ),
        ));
    };
    let n = u64::from_le_bytes(*len_bytes);
    let rest = bytes.len() as u64 - 8;
    if n > rest {
        return Err(err(
            0,
            format!(
                "not a safetensors file, or truncated: the header length says {n} bytes, \
                 but only {rest} bytes follow"
            ),
        ));
    }
    let (n, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        use safetensors::SafeTensorError::MetadataIncompleteBuffer;
        match e {
            MetadataIncompleteBuffer => err(
                8 + n as usize,
                format!(
                    "truncated or padded: the tensors after the {n}-byte header do not fill \
                     the remaining {} bytes exactly",
                    rest - n
                ),
            ),
            e => err(8, format!("invalid safetensors header: {e}")),
        }
    })?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| err(8 + n, format!("invalid safetensors file: {e}")))?;
    Ok((st, header))
}
