//! `cargo xtask <task>` — workspace tasks.
//!
//! - `bench [OPTIONS]`: the adapter's roofline (peak FMA rate and copy bandwidth,
//!   measured by probe shaders), then matmul, convolution, memory-bound and
//!   dispatch-overhead figures, each validated against the CPU reference before it is
//!   timed; outputs as a table, JSON, markdown and an SVG roofline chart, optionally
//!   side by side with a reference run (`bench/pytorch_reference.py`). See
//!   `cargo xtask bench --help` and `docs/benchmarks.md`.
//! - `gen-shaders`: regenerates the generated WGSL kernels (`shaders/matmul_sg.wgsl`).

mod bench;
mod gen_shaders;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let start = std::time::Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // Internal: the cold-start child process of `bench` (see bench::steps).
        Some("first-step") => bench::steps::first_step(start),
        Some("bench") if args[1..].iter().any(|a| a == "-h" || a == "--help") => {
            println!("{}", bench::options::USAGE);
            Ok(())
        }
        Some("bench") => bench::run(bench::options::Options::parse(&args[1..])?),
        Some("gen-shaders") => gen_shaders::run(),
        Some("-h") | Some("--help") | None => {
            println!(
                "usage: cargo xtask bench [OPTIONS]\n\n{}",
                bench::options::USAGE
            );
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{}", bench::options::USAGE),
    }
}
