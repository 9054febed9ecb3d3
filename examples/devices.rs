//! Lists the adapters wgpu can see, opens the one wgtrain would pick, and runs one
//! matmul on it against the CPU reference: the quickest check that a machine is ready.
//!
//! ```text
//! cargo run --release --example devices
//! WGTRAIN_ADAPTER=llvmpipe cargo run --release --example devices
//! ```

use anyhow::{Context, Result, ensure};
use wgtrain::device::kernels::matmul::Matmul;
use wgtrain::device::reference;
use wgtrain::prelude::*;

fn main() -> Result<()> {
    let adapters = Gpu::list_adapters();
    println!("adapters visible to wgpu (index for WGTRAIN_ADAPTER):");
    if adapters.is_empty() {
        println!("  (none)");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!(
            "  [{i}] {} ({:?}, {:?}, driver {})",
            a.name, a.device_type, a.backend, a.driver
        );
    }
    let gpu = Gpu::new().context("opening the GPU")?;
    println!("\nchosen:\n{}\n", gpu.describe());

    // C[37, 53] = A[37, 91] · B[91, 53] + bias, ReLU: awkward sizes on purpose.
    let p = Matmul::new(37, 53, 91).with_bias().with_relu();
    let a: Vec<f32> = (0..37 * 91)
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let b: Vec<f32> = (0..91 * 53)
        .map(|i| ((i * 104_729) % 97) as f32 / 48.0 - 1.0)
        .collect();
    let bias: Vec<f32> = (0..53).map(|i| i as f32 / 53.0 - 0.5).collect();
    let (da, db, dbias) = (
        gpu.upload(&a, "a")?,
        gpu.upload(&b, "b")?,
        gpu.upload(&bias, "bias")?,
    );
    let dc = gpu.pool().acquire(37 * 53 * 4, "c")?;
    let dispatch = p.prepare(&gpu, &da, &db, Some(&dbias), &dc)?;
    let mut encoder = gpu.encoder("devices");
    dispatch.encode(&mut encoder);
    gpu.submit(encoder);
    let got: Vec<f32> = gpu.download(&dc, 37 * 53)?;
    let want = reference::matmul::matmul(&p, &a, &b, Some(&bias), &vec![0.0; 37 * 53]);
    let err = reference::max_relative_error(&got, &want);
    println!("matmul 37x53x91 + bias + ReLU vs CPU reference: max relative error {err:.2e}");
    ensure!(
        err < 1e-4,
        "the GPU result disagrees with the CPU reference"
    );
    println!("ok: this machine can run wgtrain");
    Ok(())
}
