//! Shared test helpers: one `Gpu` per test binary, a seeded random generator, and
//! comparison with explicit tolerances that prints the largest relative error.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgtrain_device::reference::max_relative_error;
use wgtrain_device::{Gpu, PooledBuffer};

/// The process-wide GPU. With no adapter the test fails with the install hint: GPU tests
/// never pass silently on a machine that cannot run them.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(gpu) => gpu,
        Err(e) => panic!("{e}"),
    })
}

/// A small deterministic generator (SplitMix64), so tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.uniform()).collect()
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

pub fn upload(data: &[f32]) -> PooledBuffer {
    gpu().upload(data, "test.input").expect("upload")
}

pub fn upload_u32(data: &[u32]) -> PooledBuffer {
    gpu().upload(data, "test.input").expect("upload")
}

/// A buffer of `len` elements filled with NaN, so an element a kernel forgets to write
/// shows up in the comparison.
pub fn output(len: usize) -> PooledBuffer {
    upload(&vec![f32::NAN; len.max(1)])
}

pub fn run(dispatches: &[&wgtrain_device::Dispatch]) {
    let g = gpu();
    let mut enc = g.encoder("test");
    wgtrain_device::encode_all(&mut enc, "test", dispatches.iter().copied());
    g.submit(enc);
    g.sync().expect("GPU error");
}

pub fn download(buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    gpu().download(buffer, len).expect("download")
}

/// Asserts `got ≈ want` within `|g - w| <= atol + rtol·|w|` elementwise, and prints the
/// largest relative error (collected into the issue notes).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs();
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w} (rtol {rtol}, atol {atol})"
        );
    }
    let err = max_relative_error(got, want);
    println!("max_rel_err {what}: {err:.3e}");
    err
}
