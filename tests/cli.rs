//! The examples' multi-device flags as a user meets them: every bad combination is a
//! one-line error before training, naming what is wrong. (Cargo builds the examples
//! before it runs this file; they are started from `target/<profile>/examples/`.)

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the whole suite (`cargo test --workspace`, which builds the \
         examples) or `cargo build --examples` first",
        path.display()
    );
    path
}

/// Runs the mnist example with `args`; returns (success, its stderr, stdout).
fn mnist(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(example("mnist"))
        .args(["--model", "mlp128", "--no-plot"])
        .args(args)
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .env_remove("PMI_SIZE")
        .env_remove("PMIX_RANK")
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", example("mnist").display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The last `error:` line (lavapipe may print its own warnings before it).
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or("")
}

fn refused(args: &[&str], wanted: &str) {
    let (ok, stderr, stdout) = mnist(args);
    assert!(!ok, "{args:?} should fail");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or("");
    assert!(
        line.contains(wanted),
        "{args:?}: expected one line `error: …{wanted}…`, got:\n{stderr}"
    );
    assert!(
        !stdout.contains("epoch "),
        "{args:?} trained before failing:\n{stdout}"
    );
}

#[test]
fn devices_beyond_the_adapters_present() {
    refused(&["--devices", "64"], "--devices 64: only");
    refused(&["--devices", "0,77"], "no adapter `77`");
    refused(&["--devices", "0,,1"], "comma-separated list");
}

#[test]
fn a_world_size_that_does_not_divide_the_batch() {
    refused(
        &["--devices", "0,0,0", "--batch-size", "32"],
        "not a multiple of the 3 devices",
    );
}

#[test]
fn distributed_without_mpi_support_or_outside_mpirun() {
    // A build without the `mpi` feature says how to get it; one with it, started without
    // mpirun, says how to launch it. (Which one the example binary is depends on the last
    // build of the examples, not on this test's features.)
    let (ok, stderr, stdout) = mnist(&["--distributed"]);
    assert!(!ok && !stdout.contains("epoch "), "{stdout}");
    let line = error_line(&stderr);
    assert!(
        line.contains("needs MPI support") || line.contains("not started by mpirun"),
        "{stderr}"
    );
    refused(
        &["--distributed", "--devices", "0,0"],
        "cannot be used with",
    );
}

#[test]
fn two_devices_train() {
    let (ok, stderr, stdout) = mnist(&["--devices", "0,0", "--max-steps", "3"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("rank 1:"),
        "each rank's figures are printed:\n{stdout}"
    );
    assert!(stdout.contains("3 steps in all"), "{stdout}");
}

#[test]
fn asynchronous_flags_are_checked_before_training() {
    refused(&["--async"], "--async needs workers");
    refused(
        &["--dc-lambda", "2"],
        "required arguments were not provided",
    );
    refused(
        &["--devices", "0,0", "--async", "--dc-lambda=-1"],
        "0 or more",
    );
    refused(&["--devices", "0,0", "--async", "--sync-bn"], "--sync-bn");
    refused(
        &["--devices", "0,0", "--async", "--optimizer", "adam"],
        "Adam is not supported",
    );
}

#[test]
fn asynchronous_workers_train() {
    let (ok, stderr, stdout) = mnist(&[
        "--devices",
        "0,0",
        "--async",
        "--dc-adaptive",
        "--staleness",
        "2",
        "--async-order",
        "round-robin",
        "--max-steps",
        "6",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("DC-ASGD-a"), "{stdout}");
    // 2 workers in turn + 2 injected: every push after the first ones is 3 steps stale.
    assert!(
        stdout.contains("6 pushes; staleness mean") && stdout.contains("max 3"),
        "{stdout}"
    );
    assert!(stdout.contains("worker 2:"), "{stdout}");
    assert!(stdout.contains("6 steps in all"), "{stdout}");
}
