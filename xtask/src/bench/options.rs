//! Command-line options of `cargo xtask bench`, and the workload sizes they resolve to
//! once the adapter is known (CPU adapters and `--quick` get small sizes).

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

pub const USAGE: &str = "usage: cargo xtask bench [OPTIONS]

  --quick           small sizes only (matmul up to 1024, batch 1): a few minutes on lavapipe
  --filter S        run only benchmarks whose name contains S (may be repeated: any matches)
  --list            print the benchmark names (with the resolved sizes) and exit
  --reps N          timed repeats per figure: median, min, max (default 7, 5 with --quick;
                    at least 5)
  --batch N         batch of the conv / pooling / normalisation workloads
                    (default 1 with --quick or on a CPU adapter, 32 on a GPU)
  --fc-batch N      batch of the fully connected matmuls and the loss
                    (default 16 with --quick or on a CPU adapter, 128 on a GPU)
  --timer T         auto (timestamp queries when the adapter has them), timestamp, queue
  --json PATH       write every figure as JSON (the shape of bench/pytorch_reference.py's)
  --markdown PATH   write a markdown table (adapter, driver, date, commit, command)
  --plot PATH       write a roofline chart as SVG
  --compare PATH    a reference JSON (e.g. from bench/pytorch_reference.py): print its
                    time next to ours and the ratio ours / theirs

Environment: WGTRAIN_ADAPTER=<index or name substring> picks the adapter.
             WGTRAIN_AUTOTUNE=off times the fixed heuristic kernels instead of the tuned ones.";

/// How kernels are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerChoice {
    /// Timestamp queries when the adapter has TIMESTAMP_QUERY, else queue waits.
    Auto,
    /// Timestamp queries; an error when the adapter lacks them.
    Timestamp,
    /// Wall clock around a submission and a queue wait.
    Queue,
}

/// Command-line options of `cargo xtask bench`.
#[derive(Clone, Debug)]
pub struct Options {
    pub quick: bool,
    pub filters: Vec<String>,
    pub list: bool,
    pub reps: Option<usize>,
    pub batch: Option<u32>,
    pub fc_batch: Option<u32>,
    pub timer: TimerChoice,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub compare: Option<PathBuf>,
    /// The arguments as given, for the `command` recorded in the outputs.
    pub args: Vec<String>,
}

fn positive(flag: &str, value: Option<&String>) -> Result<u32> {
    let v = value.with_context(|| format!("{flag} needs a value"))?;
    let n: u32 = v
        .parse()
        .with_context(|| format!("{flag} {v:?} is not a positive whole number"))?;
    ensure!(n > 0, "{flag} must be positive (got 0)");
    Ok(n)
}

fn path(flag: &str, value: Option<&String>) -> Result<PathBuf> {
    Ok(PathBuf::from(
        value.with_context(|| format!("{flag} needs a path"))?,
    ))
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            quick: false,
            filters: Vec::new(),
            list: false,
            reps: None,
            batch: None,
            fc_batch: None,
            timer: TimerChoice::Auto,
            json: None,
            markdown: None,
            plot: None,
            compare: None,
            args: args.to_vec(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                "--list" => opts.list = true,
                "--filter" => opts
                    .filters
                    .push(it.next().context("--filter needs a value")?.clone()),
                "--reps" => {
                    let reps = positive("--reps", it.next())? as usize;
                    ensure!(reps >= 5, "--reps must be at least 5 (got {reps})");
                    opts.reps = Some(reps);
                }
                "--batch" => opts.batch = Some(positive("--batch", it.next())?),
                "--fc-batch" => opts.fc_batch = Some(positive("--fc-batch", it.next())?),
                "--timer" => {
                    opts.timer = match it.next().map(String::as_str) {
                        Some("auto") => TimerChoice::Auto,
                        Some("timestamp") => TimerChoice::Timestamp,
                        Some("queue") => TimerChoice::Queue,
                        other => bail!("--timer takes auto, timestamp or queue, got {other:?}"),
                    }
                }
                "--json" => opts.json = Some(path("--json", it.next())?),
                "--markdown" => opts.markdown = Some(path("--markdown", it.next())?),
                "--plot" => opts.plot = Some(path("--plot", it.next())?),
                "--compare" => opts.compare = Some(path("--compare", it.next())?),
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        Ok(opts)
    }

    /// Whether the benchmark `name` passes the `--filter`s.
    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// The command line, as recorded in the outputs.
    pub fn command(&self) -> String {
        let mut cmd = "cargo xtask bench".to_owned();
        for a in &self.args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        cmd
    }
}

/// Workload sizes, resolved from the options and the kind of adapter. The same rules are
/// in `bench/pytorch_reference.py`, so that both sides produce the same benchmark names.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizes {
    /// Square matmul sizes.
    pub square: Vec<u32>,
    /// Also time the transposed square products (`_nt`, `_tn`).
    pub square_transposes: bool,
    /// Batch of the conv, pooling and normalisation workloads.
    pub batch: u32,
    /// Batch of the fully connected layers and the loss.
    pub fc_batch: u32,
    /// Elements of the elementwise and optimizer workloads (the same on every adapter).
    pub elems: u32,
    /// Timed repeats per figure.
    pub reps: usize,
    /// One timed batch of repeats aims at this many milliseconds.
    pub target_ms: f64,
}

impl Sizes {
    /// Small sizes with `--quick` or on a CPU adapter, large ones on a GPU.
    pub fn resolve(opts: &Options, cpu: bool) -> Self {
        let small = opts.quick || cpu;
        let max_square = if opts.quick {
            1024
        } else if cpu {
            2048
        } else {
            4096
        };
        Sizes {
            square: [256, 512, 1024, 2048, 4096]
                .into_iter()
                .filter(|&s| s <= max_square)
                .collect(),
            square_transposes: !opts.quick,
            batch: opts.batch.unwrap_or(if small { 1 } else { 32 }),
            fc_batch: opts.fc_batch.unwrap_or(if small { 16 } else { 128 }),
            // 64 MiB per tensor, as the copy probe: past the last-level cache.
            elems: 1 << 24,
            reps: opts.reps.unwrap_or(if opts.quick { 5 } else { 7 }),
            target_ms: if opts.quick { 20.0 } else { 100.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Options> {
        let args: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        Options::parse(&args)
    }

    #[test]
    fn parses_every_option() {
        let o = parse(
            "--quick --filter conv --filter matmul --reps 9 --batch 4 --fc-batch 8 \
             --timer queue --json a.json --markdown b.md --plot c.svg --compare d.json",
        )
        .unwrap();
        assert!(o.quick);
        assert_eq!(o.filters, ["conv", "matmul"]);
        assert_eq!((o.reps, o.batch, o.fc_batch), (Some(9), Some(4), Some(8)));
        assert_eq!(o.timer, TimerChoice::Queue);
        assert_eq!(o.plot.as_deref(), Some(std::path::Path::new("c.svg")));
        assert!(o.wants("conv_fwd_x") && o.wants("matmul_1") && !o.wants("relu"));
        assert!(o.command().starts_with("cargo xtask bench --quick"));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse("--reps 3").is_err());
        assert!(parse("--batch 0").is_err());
        assert!(parse("--batch x").is_err());
        assert!(parse("--timer fast").is_err());
        assert!(parse("--json").is_err());
        assert!(parse("--bogus").is_err());
    }

    #[test]
    fn quick_and_cpu_sizes_are_small() {
        let quick = Sizes::resolve(&parse("--quick").unwrap(), false);
        assert_eq!(quick.square, [256, 512, 1024]);
        assert_eq!((quick.batch, quick.fc_batch, quick.reps), (1, 16, 5));
        let gpu = Sizes::resolve(&parse("").unwrap(), false);
        assert_eq!(*gpu.square.last().unwrap(), 4096);
        assert_eq!((gpu.batch, gpu.fc_batch, gpu.reps), (32, 128, 7));
        let cpu = Sizes::resolve(&parse("--batch 2").unwrap(), true);
        assert_eq!((*cpu.square.last().unwrap(), cpu.batch), (2048, 2));
    }
}
