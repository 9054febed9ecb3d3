//! `cargo xtask <task>` — workspace tasks.
//!
//! - `bench [--quick] [--filter SUBSTRING]`: the adapter's roofline (peak FMA rate and
//!   copy bandwidth, measured by probe shaders), then matmul figures, each validated
//!   against the CPU reference before it is timed.

mod bench;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask bench [--quick] [--filter SUBSTRING] [--reps N]

  --quick           small sizes only (matmul up to 1024)
  --filter S        run only benchmarks whose name contains S
  --reps N          timed repeats per figure (median, min, max reported; default 7, min 5)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench::run(bench::Options::parse(&args[1..])?),
        Some("-h") | Some("--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n{USAGE}"),
    }
}
