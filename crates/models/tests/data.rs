//! Data loading: the vendored MNIST test set, malformed IDX and CIFAR files (each error
//! names the file and the byte offset), the synthetic dataset, and the loader.

use std::path::PathBuf;
use std::sync::Arc;

use wgtrain_models::ModelError;
use wgtrain_models::data::cifar::Cifar10;
use wgtrain_models::data::idx::{Mnist, parse_idx_u8};
use wgtrain_models::data::loader::Augment;
use wgtrain_models::data::synthetic::Synthetic;
use wgtrain_models::data::{Dataset, Loader, Subset};

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-data-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn data_error(e: ModelError) -> (PathBuf, u64, String) {
    match e {
        ModelError::Data {
            file,
            offset,
            message,
        } => (file, offset, message),
        other => panic!("expected a data error, got {other}"),
    }
}

#[test]
fn vendored_mnist_test_set_loads() {
    let m = Mnist::vendored_test_set().unwrap();
    assert_eq!(m.len(), 10_000);
    assert_eq!(m.image_shape(), [28, 28, 1]);
    let mut img = vec![0.0; 784];
    // The first test digit is a 7, the second a 2 (as published).
    assert_eq!(m.sample(0, &mut img), 7);
    assert_eq!(m.sample(1, &mut img), 2);
    let (lo, hi) = img
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!((lo - (-0.1307 / 0.3081)).abs() < 1e-5 && (hi - (1.0 - 0.1307) / 0.3081).abs() < 1e-5);
}

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

#[test]
fn malformed_idx_files_name_file_and_offset() {
    let path = PathBuf::from("images.idx");
    let (_, off, msg) = data_error(parse_idx_u8(&path, &[0x1f, 0x00, 8, 3], 3).unwrap_err());
    assert_eq!(off, 0);
    assert!(msg.contains("magic"), "{msg}");
    let (_, off, msg) = data_error(parse_idx_u8(&path, &[0, 0, 0x0d, 3], 3).unwrap_err());
    assert_eq!(off, 2);
    assert!(msg.contains("0x0d"), "{msg}");
    let (_, off, _) = data_error(parse_idx_u8(&path, &[0, 0, 8], 3).unwrap_err());
    assert_eq!(off, 3);
    let mut truncated = idx_header(&[2, 3, 3]);
    truncated.extend_from_slice(&[1; 10]);
    let (file, off, msg) = data_error(parse_idx_u8(&path, &truncated, 3).unwrap_err());
    assert_eq!((file, off), (path.clone(), 26));
    assert!(msg.contains("truncated") && msg.contains("18"), "{msg}");
    let mut dims = idx_header(&[2]);
    dims.truncate(6);
    let (_, off, _) = data_error(parse_idx_u8(&path, &dims, 1).unwrap_err());
    assert_eq!(off, 6);
}

#[test]
fn bad_labels_and_corrupt_gzip_are_errors_with_offsets() {
    let mut images = idx_header(&[2, 2, 2]);
    images.extend_from_slice(&[0; 8]);
    let mut labels = idx_header(&[2]);
    labels.extend_from_slice(&[3, 12]);
    let (ip, lp) = (temp("img.idx", &images), temp("lab.idx", &labels));
    let (file, off, msg) = data_error(Mnist::load(&ip, &lp).unwrap_err());
    assert_eq!((file, off), (lp.clone(), 9));
    assert!(msg.contains("12"), "{msg}");
    let mut three = idx_header(&[3]);
    three.extend_from_slice(&[1, 2, 3]);
    let lp3 = temp("lab3.idx", &three);
    let (_, _, msg) = data_error(Mnist::load(&ip, &lp3).unwrap_err());
    assert!(msg.contains("3 labels for 2 images"), "{msg}");
    let gz = temp(
        "broken.gz",
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0x00],
    );
    let (file, _, msg) = data_error(Mnist::load(&gz, &lp).unwrap_err());
    assert_eq!(file, gz);
    assert!(msg.contains("gzip"), "{msg}");
    let missing = Mnist::load("/no/such/file.idx", &lp)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/no/such/file.idx"), "{missing}");
}

#[test]
fn cifar_records_parse_and_malformed_files_name_offsets() {
    let mut rec = vec![3u8];
    rec.extend((0..3072).map(|i| (i % 256) as u8));
    let mut two = rec.clone();
    two.extend_from_slice(&rec);
    two[3073] = 9;
    let ds = Cifar10::load_files(&[temp("ok.bin", &two)]).unwrap();
    assert_eq!((ds.len(), ds.image_shape()), (2, [32, 32, 3]));
    let mut img = vec![0.0; 3072];
    assert_eq!(ds.sample(0, &mut img), 3);
    assert_eq!(ds.sample(1, &mut img), 9);
    // HWC: pixel 1's green value is the green plane's byte 1 = (1024 + 1) % 256.
    assert!((img[4] - (1.0 / 255.0 - 0.4822) / 0.2435).abs() < 1e-5);
    let truncated = temp("short.bin", &two[..5000]);
    let (file, off, msg) =
        data_error(Cifar10::load_files(std::slice::from_ref(&truncated)).unwrap_err());
    assert_eq!((file, off), (truncated, 3073));
    assert!(msg.contains("truncated"), "{msg}");
    two[3073] = 10;
    let bad = temp("bad.bin", &two);
    let (_, off, msg) = data_error(Cifar10::load_files(&[bad]).unwrap_err());
    assert_eq!(off, 3073);
    assert!(msg.contains("label 10"), "{msg}");
    let err = Cifar10::load_dir(std::path::Path::new("/no/such/dir"), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data_batch_1.bin"), "{err}");
}

#[test]
fn synthetic_samples_are_deterministic_and_balanced() {
    let ds = Synthetic::new(100, 24, 10, 5);
    let (mut a, mut b) = (vec![0.0; 24 * 24 * 3], vec![0.0; 24 * 24 * 3]);
    assert_eq!(ds.sample(17, &mut a), ds.sample(17, &mut b));
    assert_eq!(a, b);
    let other = Synthetic::new(100, 24, 10, 6);
    other.sample(17, &mut b);
    assert_ne!(a, b);
    let counts = (0..100).fold([0; 10], |mut c, i| {
        c[ds.sample(i, &mut a) as usize] += 1;
        c
    });
    assert!(counts.iter().all(|&n| n == 10), "{counts:?}");
}

#[test]
fn loader_shuffles_reproducibly_and_covers_every_sample_once() {
    let ds: Arc<dyn Dataset> = Arc::new(Subset::new(Synthetic::new(50, 8, 5, 1), 0, 23));
    let loader = Loader::new(ds, 5).unwrap().shuffled(42);
    assert_eq!(loader.batches_per_epoch(), 5);
    let e0: Vec<_> = loader.epoch(0, 0).map(Result::unwrap).collect();
    assert_eq!(
        e0.iter().map(|b| b.shape[0]).collect::<Vec<_>>(),
        vec![5, 5, 5, 5, 3]
    );
    assert_eq!(
        e0,
        loader.epoch(0, 0).map(Result::unwrap).collect::<Vec<_>>()
    );
    let e1: Vec<_> = loader.epoch(1, 0).map(Result::unwrap).collect();
    assert_ne!(e0, e1);
    // Resuming at batch 2 gives the same batches as the uninterrupted epoch.
    assert_eq!(
        loader.epoch(1, 2).map(Result::unwrap).collect::<Vec<_>>(),
        e1[2..].to_vec()
    );
    // Every sample exactly once: the synthetic label is index % 5, so 23 samples give
    // labels 0..5 with counts 5, 5, 5, 4, 4.
    let mut counts = [0; 5];
    e0.iter()
        .flat_map(|b| &b.labels)
        .for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [5, 5, 5, 4, 4]);
    // Stopping early does not hang.
    let mut it = loader.epoch(2, 0);
    assert!(it.next().is_some());
    drop(it);
}

#[test]
fn augmentation_is_seeded_and_keeps_pixels() {
    let ds: Arc<dyn Dataset> = Arc::new(Synthetic::new(8, 16, 4, 2));
    let aug = Augment {
        flip: true,
        crop_padding: 2,
    };
    let loader = Loader::new(ds.clone(), 8)
        .unwrap()
        .shuffled(3)
        .augmented(aug);
    let a: Vec<_> = loader.epoch(0, 0).map(Result::unwrap).collect();
    assert_eq!(
        a,
        loader.epoch(0, 0).map(Result::unwrap).collect::<Vec<_>>()
    );
    let plain: Vec<_> = Loader::new(ds, 8)
        .unwrap()
        .shuffled(3)
        .epoch(0, 0)
        .map(Result::unwrap)
        .collect();
    assert_eq!(a[0].labels, plain[0].labels);
    assert_ne!(a[0].images, plain[0].images);
    assert!(Loader::new(Arc::new(Synthetic::new(8, 16, 4, 2)), 0).is_err());
}

mod folder {
    use super::*;
    use wgtrain_models::data::folder::{ImageFolder, NonImage};

    fn png(path: &std::path::Path, rgb: [u8; 3]) {
        let img = image::RgbImage::from_pixel(5, 3, image::Rgb(rgb));
        img.save(path).unwrap();
    }

    fn folder(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("wgtrain-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for class in ["cat", "dog"] {
            std::fs::create_dir_all(root.join(class)).unwrap();
        }
        png(&root.join("cat/a.png"), [255, 0, 0]);
        png(&root.join("cat/b.png"), [250, 5, 0]);
        png(&root.join("dog/c.png"), [0, 0, 255]);
        root
    }

    #[test]
    fn classes_come_from_sorted_folders_and_images_are_resized_and_normalised() {
        let root = folder("ok");
        let ds = ImageFolder::open(&root, 4, NonImage::Fail).unwrap();
        assert_eq!(ds.class_names(), ["cat", "dog"]);
        assert_eq!((ds.len(), ds.image_shape()), (3, [4, 4, 3]));
        let mut img = vec![0.0; 48];
        assert_eq!(ds.try_sample(2, &mut img).unwrap(), 1);
        // Pure blue: red channel (0 - 0.485) / 0.229, blue (1 - 0.406) / 0.225.
        assert!((img[0] + 0.485 / 0.229).abs() < 1e-4 && (img[2] - 0.594 / 0.225).abs() < 1e-4);
        let loader = Loader::new(Arc::new(ds), 2).unwrap();
        let batches: Vec<_> = loader.epoch(0, 0).map(Result::unwrap).collect();
        assert_eq!(batches[0].labels, [0, 0]);
    }

    #[test]
    fn a_non_image_file_is_named_or_skipped() {
        let root = folder("junk");
        let junk = root.join("dog/notes.txt");
        std::fs::write(&junk, b"hello").unwrap();
        let err = ImageFolder::open(&root, 4, NonImage::Fail)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notes.txt") && err.contains("not a JPEG or PNG"),
            "{err}"
        );
        let ds = ImageFolder::open(&root, 4, NonImage::Skip).unwrap();
        assert_eq!((ds.len(), ds.skipped()), (3, &[junk][..]));
    }

    #[test]
    fn a_corrupt_image_ends_the_epoch_with_an_error_naming_it() {
        let root = folder("corrupt");
        let bad = root.join("dog/d.png");
        std::fs::write(
            &bad,
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3],
        )
        .unwrap();
        let ds = ImageFolder::open(&root, 4, NonImage::Fail).unwrap();
        let loader = Loader::new(Arc::new(ds), 4).unwrap();
        let err = loader
            .epoch(0, 0)
            .find_map(|b| b.err())
            .expect("an error")
            .to_string();
        assert!(err.contains("d.png") && err.contains("decode"), "{err}");
        assert!(ImageFolder::open(&root.join("missing"), 4, NonImage::Fail).is_err());
    }
}
