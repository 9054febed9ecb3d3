//! What a user sees for each kind of bad input: the exact message of truncated and
//! wrong-magic IDX files, truncated CIFAR-10 batches, a non-image file in an image folder,
//! layers whose shapes do not fit, a tensor too large for the adapter, and an adapter
//! choice that matches nothing (or no adapter at all). Each test prints the message
//! (`--nocapture`) and checks it word for word, so a change to what users read is seen.

mod common;
use common::gpu;

use std::path::{Path, PathBuf};
use std::process::Command;

use wgtrain_graph::device::Gpu;
use wgtrain_graph::{Graph, Mode, Optimizer, Session, TensorType};
use wgtrain_models::checkpoint;
use wgtrain_models::data::cifar::Cifar10;
use wgtrain_models::data::folder::{ImageFolder, NonImage};
use wgtrain_models::data::idx::Mnist;
use wgtrain_models::layers::{Layer, Sequential};
use wgtrain_models::zoo;

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Prints the message a user would see and checks it word for word.
fn expect(err: impl std::fmt::Display, want: &str) {
    let got = err.to_string();
    eprintln!("{got}");
    assert_eq!(got, want);
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn truncated_and_wrong_magic_idx_files_name_file_and_offset() {
    let labels = temp("labels.idx", &idx(&[2], &[1, 2]));
    let short = temp("short-images.idx", &idx(&[2, 3, 3], &[0; 10]));
    expect(
        Mnist::load(&short, &labels).unwrap_err(),
        &format!(
            "{}: at byte 26: truncated: dimensions [2, 3, 3] need 18 data bytes from \
             offset 16, the file has 10",
            short.display()
        ),
    );
    // A PNG given as the images file.
    let png = temp("digits.png", b"\x89PNG\r\n\x1a\n0000000000000000");
    expect(
        Mnist::load(&png, &labels).unwrap_err(),
        &format!(
            "{}: at byte 0: not an IDX file: magic starts 89 50, expected 00 00",
            png.display()
        ),
    );
    let header_only = temp("cut.idx", &idx(&[2, 3, 3], &[])[..9]);
    expect(
        Mnist::load(&header_only, &labels).unwrap_err(),
        &format!(
            "{}: at byte 9: file ends inside the dimensions (header is 16 bytes)",
            header_only.display()
        ),
    );
    let no_pixels = temp("zero.idx", &idx(&[2, 0, 3], &[]));
    expect(
        Mnist::load(&no_pixels, &labels).unwrap_err(),
        &format!(
            "{}: at byte 8: image size 0x3 has no pixels",
            no_pixels.display()
        ),
    );
}

#[test]
fn a_truncated_cifar_batch_names_file_and_offset() {
    let mut two = vec![0u8; 2 * 3073];
    two[3073] = 5;
    let good = temp("data_batch_1.bin", &two);
    let cut = temp("data_batch_2.bin", &two[..4000]);
    expect(
        Cifar10::load_files(&[good, cut.clone()]).unwrap_err(),
        &format!(
            "{}: at byte 3073: truncated record: 927 bytes left where a record takes 3073",
            cut.display()
        ),
    );
}

fn image_folder_with_junk() -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("wgtrain-bad-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (class, rgb) in [("cat", [200, 10, 10]), ("dog", [10, 10, 200])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        image::RgbImage::from_pixel(4, 4, image::Rgb(rgb))
            .save(root.join(class).join("a.png"))
            .unwrap();
    }
    let junk = root.join("dog/Thumbs.db");
    std::fs::write(&junk, b"\xd0\xcf\x11\xe0 not an image").unwrap();
    (root, junk)
}

#[test]
fn a_non_image_file_in_an_image_folder_fails_by_name_or_is_skipped() {
    let (root, junk) = image_folder_with_junk();
    expect(
        ImageFolder::open(&root, 8, NonImage::Fail).unwrap_err(),
        &format!(
            "{}: at byte 0: not a JPEG or PNG image (use the skip option to leave such \
             files out)",
            junk.display()
        ),
    );
    let ds = ImageFolder::open(&root, 8, NonImage::Skip).unwrap();
    eprintln!("skipped: {:?}", ds.skipped());
    assert_eq!(ds.skipped(), [junk]);
    assert_eq!(ds.class_names(), ["cat", "dog"]);
}

#[test]
fn a_linear_layer_of_the_wrong_width_names_the_layer_and_both_shapes() {
    let mut g = Graph::new();
    let x = g.input("images", TensorType::f32(&[2, 8, 8, 3])).unwrap();
    // After a 4-channel 3x3 convolution (padding 1) the flattened width is 8·8·4 = 256.
    let classifier = Sequential(vec![
        Layer::conv(3, 4, 3, 1, 1),
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear {
            in_f: 300,
            out_f: 10,
        },
    ]);
    expect(
        classifier.build(&mut g, "classifier", x).unwrap_err(),
        "matmul in layer `classifier.3`: inner dimensions differ: [2, 256] has 256, \
         [10, 300]ᵀ has 300",
    );
    // A convolution expecting the wrong number of input channels.
    let convs = Sequential(vec![Layer::conv(1, 4, 3, 1, 1)]);
    expect(
        convs.build(&mut g, "features", x).unwrap_err(),
        "conv2d in layer `features.0`: x [2, 8, 8, 3] has 3 channels, so with 1 group(s) \
         weight [K, R, S, C/groups] needs 3 input channels per filter, but weight \
         [4, 3, 3, 1] has 1",
    );
}

#[test]
fn an_unwritable_checkpoint_path_names_the_missing_directory() {
    // Trainer::new runs this check before any training (see tests/train.rs).
    let path = Path::new("/nonexistent-dir/run.safetensors");
    expect(
        checkpoint::check_writable(path).unwrap_err(),
        "checkpoint /nonexistent-dir/run.safetensors: directory /nonexistent-dir does not \
         exist",
    );
}

#[test]
fn a_truncated_or_garbled_checkpoint_says_what_is_wrong_where() {
    let model = zoo::mlp([2, 2, 1], &[3], 2, 1).unwrap();
    let session = Session::new(gpu(), model.graph, 0).unwrap();
    let path = temp("run.safetensors", b"");
    let position = checkpoint::Position {
        epoch: 0,
        batch: 0,
        steps: 0,
    };
    checkpoint::save(&path, &session, &model.name, position).unwrap();
    let valid = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let cut = temp("cut.safetensors", &valid[..valid.len() - 10]);
    let rest = valid.len() - 10 - 8 - n;
    expect(
        checkpoint::load(&cut, &session, &model.name).unwrap_err(),
        &format!(
            "{}: at byte {}: truncated or padded: the tensors after the {n}-byte header do \
             not fill the remaining {rest} bytes exactly",
            cut.display(),
            8 + n
        ),
    );
    let mut garbled = valid.clone();
    garbled[8] = b'[';
    let garbled = temp("garbled.safetensors", &garbled);
    let err = checkpoint::load(&garbled, &session, &model.name).unwrap_err();
    let want = format!(
        "{}: at byte 8: invalid safetensors header: invalid JSON in header: ",
        garbled.display()
    );
    eprintln!("{err}");
    assert!(err.to_string().starts_with(&want), "{err}");
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[test]
fn a_weight_past_the_binding_limit_says_what_it_needs_and_what_the_adapter_allows() {
    let limit = gpu().limits().max_storage_buffer_binding_size;
    // A square linear layer one row wider than the limit allows.
    let side = ((limit / 4) as f64).sqrt() as usize + 1;
    let model = zoo::mlp([side, 1, 1], &[side], 2, 1).unwrap();
    let err = match Session::new(gpu(), model.graph, 0) {
        Err(e) => e,
        Ok(_) => panic!("a {side}x{side} weight must not fit in {limit} bytes"),
    };
    let need = (side * side * 4) as u64;
    expect(
        err,
        &format!(
            "fc1.weight: {need} bytes ({}) exceed this adapter's \
             max_storage_buffer_binding_size of {limit} bytes ({}); use a smaller batch or \
             split the tensor",
            mib(need),
            mib(limit)
        ),
    );
}

#[test]
fn a_batch_too_large_for_the_adapter_names_the_tensor_and_the_step_total() {
    let limit = gpu().limits().max_storage_buffer_binding_size;
    // One batch of 28x28 images larger than one binding may be.
    let batch = (limit / (28 * 28 * 4)) as usize + 1;
    let mut model = zoo::mlp([28, 28, 1], &[16], 10, batch).unwrap();
    let training = model.graph.minimize(model.loss, Optimizer::sgd()).unwrap();
    let mut session = Session::new(gpu(), model.graph, 0).unwrap();
    let feeds = [
        ("images", TensorType::f32(&[batch, 28, 28, 1])),
        ("labels", TensorType::u32(&[batch])),
    ];
    let err = session
        .plan_report(Mode::Train, &feeds, &[training.loss], &training.updates)
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    let need = (batch * 28 * 28 * 4) as u64;
    let start = format!("plan.buffer0 (input `images` [{batch}, 28, 28, 1]; this step plans ");
    let end = format!(
        " MiB of buffers in all): {need} bytes ({}) exceed this adapter's \
         max_storage_buffer_binding_size of {limit} bytes ({}); use a smaller batch or \
         split the tensor",
        mib(need),
        mib(limit)
    );
    // The step's total depends on the planner's packing; it is at least the images.
    let total: f64 = err
        .strip_prefix(&start)
        .and_then(|rest| rest.strip_suffix(&end))
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message: {err}"));
    assert!(total >= need as f64 / 1048576.0, "{err}");
}

/// Runs this test binary's `test` alone in a child process with `env` set, returning
/// what it printed: the way to see `Gpu::new` under another environment.
fn child(test: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("WGTRAIN_BAD_INPUT_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Prints what `Gpu::new` says under the child's environment.
fn gpu_new_message() -> String {
    match Gpu::new() {
        Ok(gpu) => format!("opened {}", gpu.info().name),
        Err(e) => format!("error: {e}"),
    }
}

/// The child's report, after the test harness's own text on the same line.
fn gpu_new_line(out: &str) -> &str {
    out.split_once("GPU_NEW: ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or(out)
}

#[test]
fn an_unknown_adapter_lists_the_adapters_and_no_adapter_says_how_to_install_one() {
    const NAME: &str =
        "an_unknown_adapter_lists_the_adapters_and_no_adapter_says_how_to_install_one";
    if std::env::var_os("WGTRAIN_BAD_INPUT_CHILD").is_some() {
        println!("GPU_NEW: {}", gpu_new_message());
        return;
    }
    let out = child(NAME, &[("WGTRAIN_ADAPTER", "no-such-gpu-xyz")]);
    let line = gpu_new_line(&out);
    eprintln!("{line}");
    let name = gpu().info().name.clone();
    assert!(
        line.starts_with(
            "error: WGTRAIN_ADAPTER=\"no-such-gpu-xyz\" matches no adapter; available: [0] "
        ) && line.contains(name.as_str()),
        "{out}"
    );
    // With every Vulkan driver hidden, Linux has no adapter left (PRIMARY backends only).
    if cfg!(target_os = "linux") {
        let none = Path::new("/nonexistent/wgtrain-icd.json").to_str().unwrap();
        let out = child(
            NAME,
            &[("VK_ICD_FILENAMES", none), ("VK_DRIVER_FILES", none)],
        );
        let line = gpu_new_line(&out);
        eprintln!("{line}");
        assert!(
            line.contains("no GPU adapter found") && line.contains("mesa-vulkan-drivers"),
            "{out}"
        );
    }
}
