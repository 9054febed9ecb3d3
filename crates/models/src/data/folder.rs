//! Image folders as torchvision's `ImageFolder` reads them: one sub-folder per class,
//! classes in sorted order, JPEG and PNG files inside. Images are decoded when sampled
//! (on the loader's background thread), resized to `size`×`size` (bilinear, ignoring
//! aspect ratio) and normalised with ImageNet's mean and standard deviation.
//!
//! Opening checks every file's first bytes: a file that is not a JPEG or PNG is named in
//! the error, or skipped (and reported) with [`NonImage::Skip`]. A file that passes that
//! check but fails to decode later is an error naming it when its batch is assembled.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::data::Dataset;
use crate::error::{ModelError, Result, io};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What to do with a file that is not a JPEG or PNG image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonImage {
    /// Stop with an error naming the file.
    Fail,
    /// Leave it out; [`ImageFolder::skipped`] lists what was left out.
    Skip,
}

/// A class-per-folder image dataset.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    files: Vec<(PathBuf, u32)>,
    classes: Vec<String>,
    size: usize,
    skipped: Vec<PathBuf>,
}

fn sniff(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let n = f.read(&mut head).map_err(io(path))?;
    let jpeg = n >= 3 && head[..3] == [0xFF, 0xD8, 0xFF];
    let png = n >= 8 && head == [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    Ok(jpeg || png)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<_>>()?;
    entries.sort();
    Ok(entries)
}

impl ImageFolder {
    /// Scans `root` (one sub-folder per class) for images, resized to `size` when read.
    pub fn open(root: &Path, size: usize, non_image: NonImage) -> Result<Self> {
        if !root.is_dir() {
            return Err(ModelError::Config(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let mut files = Vec::new();
        let mut classes = Vec::new();
        let mut skipped = Vec::new();
        for class_dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = classes.len() as u32;
            classes.push(
                class_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            for file in sorted_entries(&class_dir)?
                .into_iter()
                .filter(|p| p.is_file())
            {
                if sniff(&file)? {
                    files.push((file, label));
                } else if non_image == NonImage::Skip {
                    skipped.push(file);
                } else {
                    return Err(ModelError::Data {
                        file,
                        offset: 0,
                        message:
                            "not a JPEG or PNG image (use the skip option to leave such files out)"
                                .to_owned(),
                    });
                }
            }
        }
        if classes.len() < 2 || files.is_empty() {
            return Err(ModelError::Config(format!(
                "{} holds {} class folder(s) and {} image(s): an image folder needs one \
                 sub-folder of JPEG/PNG images per class, at least two classes",
                root.display(),
                classes.len(),
                files.len()
            )));
        }
        Ok(Self {
            files,
            classes,
            size,
            skipped,
        })
    }

    /// Class names (folder names) in label order.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// Files left out because they are not images.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        [self.size, self.size, 3]
    }
    fn classes(&self) -> usize {
        self.classes.len()
    }

    /// Infallible view for callers that cannot handle errors: a file that fails to
    /// decode gives a black image (the loader uses `try_sample`, which reports it).
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        self.try_sample(index, out).unwrap_or_else(|_| {
            out.fill(0.0);
            self.files[index].1
        })
    }

    fn try_sample(&self, index: usize, out: &mut [f32]) -> Result<u32> {
        let (path, label) = &self.files[index];
        let img = image::ImageReader::open(path)
            .map_err(io(path))?
            .with_guessed_format()
            .map_err(io(path))?
            .decode()
            .map_err(|e| ModelError::Data {
                file: path.clone(),
                offset: 0,
                message: format!("cannot decode: {e}"),
            })?;
        let s = self.size as u32;
        let rgb = img.resize_exact(s, s, FilterType::Triangle).into_rgb8();
        for (o, (i, &v)) in out.iter_mut().zip(rgb.as_raw().iter().enumerate()) {
            let c = i % 3;
            *o = (v as f32 / 255.0 - MEAN[c]) / STD[c];
        }
        Ok(*label)
    }
}
