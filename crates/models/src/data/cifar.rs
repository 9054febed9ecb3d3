//! CIFAR-10 binary batches (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`):
//! records of one label byte and 3,072 pixel bytes (32×32, red plane, green, blue).

use std::path::{Path, PathBuf};

use crate::data::Dataset;
use crate::error::{ModelError, Result, io};

const SIDE: usize = 32;
const PIXELS: usize = SIDE * SIDE * 3;
const RECORD: usize = 1 + PIXELS;
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// CIFAR-10 images (32×32×3, 10 classes), normalised per channel.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    /// Records as stored: label byte then CHW pixels.
    records: Vec<u8>,
}

impl Cifar10 {
    /// Parses one or more batch files.
    pub fn load_files(files: &[PathBuf]) -> Result<Self> {
        let mut records = Vec::new();
        for file in files {
            let bytes = std::fs::read(file).map_err(io(file))?;
            check(file, &bytes)?;
            records.extend_from_slice(&bytes);
        }
        Ok(Self { records })
    }

    /// The training (`data_batch_*.bin`) or test (`test_batch.bin`) files of a
    /// `cifar-10-batches-bin` directory.
    pub fn load_dir(dir: &Path, train: bool) -> Result<Self> {
        let files: Vec<PathBuf> = if train {
            (1..=5)
                .map(|i| dir.join(format!("data_batch_{i}.bin")))
                .collect()
        } else {
            vec![dir.join("test_batch.bin")]
        };
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(ModelError::Config(format!(
                "{} is not a CIFAR-10 binary directory: {} is missing",
                dir.display(),
                missing.display()
            )));
        }
        Self::load_files(&files)
    }
}

fn check(file: &Path, bytes: &[u8]) -> Result<()> {
    let err = |offset: usize, message: String| ModelError::Data {
        file: file.to_path_buf(),
        offset: offset as u64,
        message,
    };
    if bytes.is_empty() {
        return Err(err(
            0,
            "empty file: expected records of 3073 bytes".to_owned(),
        ));
    }
    if bytes.len() % RECORD != 0 {
        let whole = bytes.len() / RECORD * RECORD;
        return Err(err(
            whole,
            format!(
                "truncated record: {} bytes left where a record takes {RECORD}",
                bytes.len() - whole
            ),
        ));
    }
    if let Some(r) = (0..bytes.len() / RECORD).find(|r| bytes[r * RECORD] > 9) {
        return Err(err(
            r * RECORD,
            format!(
                "label {} of record {r} is out of range 0..10",
                bytes[r * RECORD]
            ),
        ));
    }
    Ok(())
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / RECORD
    }
    fn image_shape(&self) -> [usize; 3] {
        [SIDE, SIDE, 3]
    }
    fn classes(&self) -> usize {
        10
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        let rec = &self.records[index * RECORD..(index + 1) * RECORD];
        let plane = SIDE * SIDE;
        for (i, o) in out.iter_mut().enumerate().take(PIXELS) {
            let (pixel, c) = (i / 3, i % 3);
            *o = (rec[1 + c * plane + pixel] as f32 / 255.0 - MEAN[c]) / STD[c];
        }
        rec[0] as u32
    }
}
