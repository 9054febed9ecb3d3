//! IDX files (MNIST's format), raw or gzip-compressed: a magic number (two zero bytes,
//! a type byte, the number of dimensions), the dimensions as big-endian u32, then the
//! data. Every malformation is an error naming the file and the byte offset (of the
//! decompressed stream for `.gz` files).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::data::Dataset;
use crate::error::{ModelError, Result, io};

/// An IDX tensor of unsigned bytes: its dimensions and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxU8 {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<(Vec<u8>, bool)> {
    let raw = std::fs::read(path).map_err(io(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| ModelError::Data {
                file: path.to_path_buf(),
                offset: out.len() as u64,
                message: format!(
                    "corrupt gzip stream after {} decompressed bytes: {e}",
                    out.len()
                ),
            })?;
        Ok((out, true))
    } else {
        Ok((raw, false))
    }
}

/// Parses an IDX file of unsigned bytes with `ndims` dimensions.
pub fn parse_idx_u8(file: &Path, bytes: &[u8], ndims: usize) -> Result<IdxU8> {
    let err = |offset: usize, message: String| ModelError::Data {
        file: file.to_path_buf(),
        offset: offset as u64,
        message,
    };
    if bytes.len() < 4 {
        return Err(err(
            bytes.len(),
            format!(
                "file ends inside the 4-byte magic number ({} bytes)",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            0,
            format!(
                "not an IDX file: magic starts {:02x} {:02x}, expected 00 00",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(err(
            2,
            format!("element type {:#04x} is not 0x08 (unsigned byte)", bytes[2]),
        ));
    }
    if bytes[3] as usize != ndims {
        return Err(err(3, format!("{} dimensions, expected {ndims}", bytes[3])));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(err(
            bytes.len(),
            format!("file ends inside the dimensions (header is {header} bytes)"),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(4, format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have < len {
        return Err(err(
            bytes.len(),
            format!(
                "truncated: dimensions {dims:?} need {len} data bytes from offset {header}, the file has {have}"
            ),
        ));
    }
    if have > len {
        return Err(err(
            header + len,
            format!("{} unexpected bytes after the data", have - len),
        ));
    }
    Ok(IdxU8 {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// MNIST-style images and labels (28×28 grey, 10 classes), normalised with MNIST's
/// mean 0.1307 and standard deviation 0.3081 (or scaled to [0, 1], see
/// [`Mnist::unit_range`]).
#[derive(Debug, Clone)]
pub struct Mnist {
    images: Vec<u8>,
    labels: Vec<u8>,
    h: usize,
    w: usize,
    unit_range: bool,
}

impl Mnist {
    /// Loads an images file (`[N, H, W]`) and a labels file (`[N]`), raw or gzipped.
    pub fn load(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Self> {
        let (ip, lp) = (images.as_ref(), labels.as_ref());
        let (ib, _) = read_maybe_gz(ip)?;
        let (lb, _) = read_maybe_gz(lp)?;
        let img = parse_idx_u8(ip, &ib, 3)?;
        let lab = parse_idx_u8(lp, &lb, 1)?;
        // Zero-sized headers parse (the data length matches), but give nothing to train on.
        let empty = |offset: u64, message: String| ModelError::Data {
            file: ip.to_path_buf(),
            offset,
            message,
        };
        if img.dims[0] == 0 {
            return Err(empty(4, "the header says 0 images".to_owned()));
        }
        if img.dims[1] == 0 || img.dims[2] == 0 {
            return Err(empty(
                8,
                format!("image size {}x{} has no pixels", img.dims[1], img.dims[2]),
            ));
        }
        if img.dims[0] != lab.dims[0] {
            return Err(ModelError::Data {
                file: lp.to_path_buf(),
                offset: 4,
                message: format!(
                    "{} labels for {} images in {}",
                    lab.dims[0],
                    img.dims[0],
                    ip.display()
                ),
            });
        }
        if let Some(i) = lab.data.iter().position(|&l| l > 9) {
            return Err(ModelError::Data {
                file: lp.to_path_buf(),
                offset: 8 + i as u64,
                message: format!("label {} is out of range 0..10", lab.data[i]),
            });
        }
        Ok(Self {
            images: img.data,
            labels: lab.data,
            h: img.dims[1],
            w: img.dims[2],
            unit_range: false,
        })
    }

    /// Pixels as `p / 255` in [0, 1] instead of standardised: what the textbook
    /// network (and PyTorch's `ToTensor()` without `Normalize`) feeds.
    pub fn unit_range(mut self) -> Self {
        self.unit_range = true;
        self
    }

    /// The test set vendored in the repository's `data/mnist/`.
    pub fn vendored_test_set() -> Result<Self> {
        let dir = vendored_dir();
        Self::load(
            dir.join("t10k-images-idx3-ubyte.gz"),
            dir.join("t10k-labels-idx1-ubyte.gz"),
        )
    }
}

/// The repository's `data/mnist/` directory.
pub fn vendored_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

impl Dataset for Mnist {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        [self.h, self.w, 1]
    }
    fn classes(&self) -> usize {
        10
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        let n = self.h * self.w;
        let (mean, std) = if self.unit_range {
            (0.0, 1.0)
        } else {
            (0.1307, 0.3081)
        };
        for (o, &p) in out.iter_mut().zip(&self.images[index * n..(index + 1) * n]) {
            *o = (p as f32 / 255.0 - mean) / std;
        }
        self.labels[index] as u32
    }
}
