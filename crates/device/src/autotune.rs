//! Autotuning: which kernel variant computes a given product fastest on this adapter.
//!
//! ## Design
//!
//! A kernel family lists the variants that apply to a problem (`Matmul::variants`,
//! `Conv2d::forward_variants`, ...) and a fixed heuristic choice. On the first use of a
//! (kernel, shape) the [`Autotuner`] times every candidate briefly on scratch buffers of
//! the problem's size and keeps the fastest, in memory and in a small text file per
//! adapter and driver in the user's cache directory, so a later process starts with the
//! answer. Before a variant is ever timed it is validated once per process against the
//! CPU reference on a small input with the same options; a variant that fails is never
//! picked.
//!
//! `WGTRAIN_AUTOTUNE=off` (or `0`) skips all of this and takes the heuristic choice, for
//! runs that must be bit-for-bit reproducible; `WGTRAIN_AUTOTUNE=refresh` re-times every
//! shape and overwrites the file. Problems under [`MIN_TUNED_MACS`] are not tuned: there
//! the dispatch costs more than any difference between the kernels.
//!
//! The cache lives in `$WGTRAIN_CACHE_DIR`, else `$XDG_CACHE_HOME/wgtrain`, else
//! `~/.cache/wgtrain` (`%LOCALAPPDATA%\wgtrain` on Windows). Its file name carries a hash
//! of the adapter, the driver and every shader's source, so a new driver or a changed
//! kernel starts afresh; the first write of a process removes that adapter's files for
//! older shaders. A line that cannot be parsed is reported (file and byte offset) and
//! ignored; a cache that cannot be written costs only the re-tuning.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::log;
use crate::pipeline::Dispatch;

/// Problems with fewer multiply-adds than this take the heuristic choice untimed.
pub const MIN_TUNED_MACS: u64 = 1 << 21;

/// Version of the cache file's format (part of its name).
const FORMAT: u32 = 1;

/// How long one candidate's measured run aims to take.
const TIMING_BUDGET: Duration = Duration::from_millis(3);

/// The most time tuning one shape may take: candidates not yet timed when it is spent
/// are skipped (the heuristic choice is timed first, so it is always among those
/// compared). Kernels of a second or more (a large batch on a CPU adapter) would
/// otherwise stall the first step for minutes, the cold-start cost this tuner is meant
/// to avoid.
const SHAPE_BUDGET: Duration = Duration::from_millis(1500);

/// Whether and how kernels are tuned (`WGTRAIN_AUTOTUNE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Time candidates on first use; reuse the disk cache.
    On,
    /// The fixed heuristic choice everywhere.
    Off,
    /// Time candidates on first use, ignoring (and then overwriting) the disk cache.
    Refresh,
}

impl Mode {
    /// The mode `WGTRAIN_AUTOTUNE` asks for; an unknown value is reported and read as on.
    pub fn from_env() -> Mode {
        match std::env::var("WGTRAIN_AUTOTUNE").as_deref() {
            Err(_) | Ok("") | Ok("on") | Ok("1") => Mode::On,
            Ok("off") | Ok("0") => Mode::Off,
            Ok("refresh") => Mode::Refresh,
            Ok(other) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "wgtrain: WGTRAIN_AUTOTUNE={other:?} is not one of on, off, refresh; tuning on"
                    );
                });
                Mode::On
            }
        }
    }
}

/// One tuned decision as stored: the variant's name and its measured time.
#[derive(Clone, Debug, PartialEq)]
struct Choice {
    variant: String,
    micros: f64,
}

#[derive(Default)]
struct Inner {
    /// `kernel \t shape` to the decision.
    choices: HashMap<String, Choice>,
    /// `kernel \t variant \t options` validated (true) or failed (false) in this process.
    validated: HashMap<String, bool>,
    /// Cache files whose write failure was reported, so each is reported once.
    reported: HashSet<String>,
    /// Whether stale cache files were looked for already.
    pruned: bool,
}

/// The tuned choices of one adapter (see the module documentation).
pub struct Autotuner {
    mode: Mode,
    /// The cache file, or `None` when no cache directory is known.
    path: Option<PathBuf>,
    /// First line of the file: which adapter and driver it is for.
    header: String,
    inner: Mutex<Inner>,
    submissions: std::sync::atomic::AtomicU64,
}

/// 64-bit FNV-1a: a hash that stays the same across Rust versions (it names files).
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The user's cache directory for wgtrain, if the environment names one.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("WGTRAIN_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Some(Path::new(&dir).join("wgtrain"));
    }
    if cfg!(windows) {
        return var("LOCALAPPDATA").map(|d| Path::new(&d).join("wgtrain"));
    }
    var("HOME").map(|home| Path::new(&home).join(".cache").join("wgtrain"))
}

impl Autotuner {
    /// The tuner for `info`'s adapter in the mode and cache directory the environment
    /// names.
    pub fn new(info: &wgpu::AdapterInfo) -> Self {
        Self::with(info, Mode::from_env(), cache_dir())
    }

    /// The tuner with an explicit mode and cache directory (`None`: memory only).
    pub fn with(info: &wgpu::AdapterInfo, mode: Mode, dir: Option<PathBuf>) -> Self {
        let header = format!(
            "# wgtrain autotune cache v{FORMAT}: {} ({:?}), driver {} {}",
            info.name, info.backend, info.driver, info.driver_info
        );
        let sources = crate::shaders::ALL.iter().flat_map(|s| s.source.bytes());
        let hash = fnv1a(header.bytes().chain(sources));
        let path = dir.map(|d| d.join(format!("autotune-{hash:016x}.tsv")));
        let tuner = Self {
            mode,
            path,
            header,
            inner: Mutex::default(),
            submissions: Default::default(),
        };
        if mode == Mode::On {
            tuner.load();
        }
        tuner
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The cache file (whether or not it exists yet).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Queue submissions made to time or validate candidates (they do not count in
    /// [`Gpu::submissions`](crate::Gpu::submissions)).
    pub fn submissions(&self) -> u64 {
        self.submissions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Decisions known so far (loaded or tuned), as `(kernel, shape, variant)`.
    pub fn decisions(&self) -> Vec<(String, String, String)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .choices
            .iter()
            .map(|(key, c)| {
                let (kernel, shape) = key.split_once('\t').unwrap_or((key, ""));
                (kernel.to_owned(), shape.to_owned(), c.variant.clone())
            })
            .collect();
        out.sort();
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The variant to use for `kernel` on `shape`: the cached or freshly tuned winner
    /// among `candidates`, or `heuristic` when tuning is off or the problem is small.
    ///
    /// `validate(v)` checks a variant against the reference on a small input (called at
    /// most once per `validation_key(v)` and process); `time(v)` runs it once on the real
    /// shape and returns its time (`beat`: the best time so far). A candidate that fails
    /// either is skipped (and the choice then goes to memory only, not to the file); if
    /// all fail, the heuristic choice stands. The two fastest are timed a second time
    /// and keep the better of their two times.
    #[allow(clippy::too_many_arguments)]
    pub fn choose<V: Copy + Display + PartialEq>(
        &self,
        kernel: &str,
        shape: &str,
        macs: u64,
        candidates: &[V],
        heuristic: V,
        validation_key: impl Fn(V) -> String,
        mut validate: impl FnMut(V) -> Result<bool>,
        mut time: impl FnMut(V, Option<Duration>) -> Result<Duration>,
    ) -> V {
        if self.mode == Mode::Off || macs < MIN_TUNED_MACS || candidates.len() < 2 {
            return heuristic;
        }
        let key = format!("{kernel}\t{shape}");
        if let Some(choice) = self.lock().choices.get(&key) {
            if let Some(v) = candidates.iter().find(|v| v.to_string() == choice.variant) {
                return *v;
            }
        }
        let started = Instant::now();
        let mut timed: Vec<(V, Duration)> = Vec::new();
        // A candidate that failed is a bug or a driver problem: the choice made without
        // it is kept for this process only, so the next one tries again.
        let mut all_ran = true;
        let order = std::iter::once(heuristic)
            .filter(|h| candidates.contains(h))
            .chain(candidates.iter().copied().filter(|&v| v != heuristic));
        for v in order {
            if started.elapsed() > SHAPE_BUDGET {
                if log::enabled(log::Level::Info) {
                    eprintln!(
                        "wgtrain: autotune: {kernel} {shape}: time budget spent, {v} and later candidates skipped"
                    );
                }
                break;
            }
            let vkey = format!("{kernel}\t{v}\t{}", validation_key(v));
            let known = self.lock().validated.get(&vkey).copied();
            let valid = match known {
                Some(ok) => ok,
                None => {
                    let ok = match validate(v) {
                        Ok(true) => true,
                        Ok(false) => {
                            eprintln!(
                                "wgtrain: autotune: {kernel} variant {v} disagrees with the reference; never picked"
                            );
                            false
                        }
                        Err(e) => {
                            eprintln!(
                                "wgtrain: autotune: {kernel} variant {v} could not be validated, so is never picked: {e}"
                            );
                            false
                        }
                    };
                    self.lock().validated.insert(vkey, ok);
                    ok
                }
            };
            if !valid {
                all_ran = false;
                continue;
            }
            let beat = timed.iter().map(|t: &(V, Duration)| t.1).min();
            match time(v, beat) {
                Ok(t) => timed.push((v, t)),
                Err(e) => {
                    all_ran = false;
                    eprintln!("wgtrain: autotune: {kernel} variant {v} on {shape}: {e}");
                }
            }
        }
        // A shared machine's load comes and goes: the two fastest are timed once more,
        // in the other order, and each keeps its better time.
        timed.sort_by_key(|t| t.1);
        let retime = if started.elapsed() > SHAPE_BUDGET {
            0
        } else {
            2
        };
        for i in (0..timed.len().min(retime)).rev() {
            if let Ok(again) = time(timed[i].0, None) {
                timed[i].1 = timed[i].1.min(again);
            }
        }
        let Some(&(winner, t)) = timed.iter().min_by_key(|t| t.1) else {
            return heuristic;
        };
        if log::enabled(log::Level::Info) {
            eprintln!(
                "wgtrain: autotune: {kernel} {shape}: {winner} ({:.1} µs), tuned in {:.0} ms",
                t.as_secs_f64() * 1e6,
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        let choice = Choice {
            variant: winner.to_string(),
            micros: t.as_secs_f64() * 1e6,
        };
        self.lock().choices.insert(key.clone(), choice.clone());
        if all_ran {
            self.store(&key, &choice);
        }
        winner
    }

    /// Times `dispatch`: a warm-up run (it may pay for the driver's lazy compilation, so
    /// its time is not used), one timed run, and then enough runs in one submission to
    /// fill [`TIMING_BUDGET`] (at most 16). A timed run slower than 3 × `beat` is
    /// returned as is, since that candidate has lost already.
    pub fn time(
        &self,
        gpu: &crate::Gpu,
        dispatch: &Dispatch,
        beat: Option<Duration>,
    ) -> Result<Duration> {
        self.run(gpu, dispatch, 1)?;
        let once = self.run(gpu, dispatch, 1)?;
        if beat.is_some_and(|b| once > 3 * b) {
            return Ok(once);
        }
        let reps = (TIMING_BUDGET.as_secs_f64() / once.as_secs_f64().max(1e-6)).clamp(1.0, 16.0);
        let reps = reps as u32;
        Ok(self.run(gpu, dispatch, reps)? / reps)
    }

    /// Records `dispatch` `reps` times, submits, waits: the wall time.
    fn run(&self, gpu: &crate::Gpu, dispatch: &Dispatch, reps: u32) -> Result<Duration> {
        let mut encoder = gpu.encoder("wgtrain.autotune");
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgtrain.autotune"),
                timestamp_writes: None,
            });
            for _ in 0..reps {
                dispatch.record(&mut pass);
            }
        }
        let start = Instant::now();
        self.submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gpu.queue().submit(Some(encoder.finish()));
        gpu.sync()?;
        Ok(start.elapsed())
    }

    /// Reads the cache file into memory (missing file: nothing to read).
    fn load(&self) {
        let Some(path) = &self.path else { return };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let (choices, problems) = parse(&text);
        for (offset, problem) in problems {
            eprintln!(
                "wgtrain: autotune cache {}: byte {offset}: {problem}; line ignored",
                path.display()
            );
        }
        self.lock().choices.extend(choices);
    }

    /// Adds one decision to the cache file: re-read it (another process may have added
    /// lines), merge, and replace it atomically.
    fn store(&self, key: &str, choice: &Choice) {
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            let mut choices = match std::fs::read_to_string(path) {
                Ok(text) if self.mode == Mode::On => parse(&text).0,
                _ => HashMap::new(),
            };
            if self.mode == Mode::Refresh {
                choices.extend(self.lock().choices.clone());
            }
            choices.insert(key.to_owned(), choice.clone());
            let mut lines: Vec<String> = choices
                .iter()
                .map(|(k, c)| format!("{k}\t{}\t{:.1}", c.variant, c.micros))
                .collect();
            lines.sort();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Unique per process and per write: several devices of one process (data-
            // parallel replicas) may store at once.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "{}", self.header)?;
            writeln!(file, "# kernel\tshape\tvariant\tmicroseconds")?;
            for line in lines {
                writeln!(file, "{line}")?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        match write() {
            Ok(()) => self.prune_stale(path),
            Err(e) => {
                let mut inner = self.lock();
                if inner.reported.insert(path.display().to_string()) {
                    eprintln!(
                        "wgtrain: autotune cache {} not written ({e}); tuning stays in memory",
                        path.display()
                    );
                }
            }
        }
    }

    /// Removes (once per process) the other cache files of this adapter and driver: they
    /// were tuned for shaders that have changed since (their names hash other sources).
    fn prune_stale(&self, current: &Path) {
        if std::mem::replace(&mut self.lock().pruned, true) {
            return;
        }
        let Some(Ok(entries)) = current.parent().map(std::fs::read_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path == current || !name.starts_with("autotune-") || !name.ends_with(".tsv") {
                continue;
            }
            let same_adapter = std::fs::read_to_string(&path)
                .is_ok_and(|text| text.lines().next() == Some(self.header.as_str()));
            if same_adapter {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The decisions in a cache file's text, and `(byte offset, problem)` for each line that
/// is not one.
fn parse(text: &str) -> (HashMap<String, Choice>, Vec<(usize, String)>) {
    let mut choices = HashMap::new();
    let mut problems = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = match fields[..] {
            [kernel, shape, variant, micros] if !variant.is_empty() => micros
                .parse::<f64>()
                .ok()
                .filter(|m| m.is_finite() && *m >= 0.0)
                .map(|micros| {
                    let key = format!("{kernel}\t{shape}");
                    (key, variant.to_owned(), micros)
                }),
            _ => None,
        };
        match parsed {
            Some((key, variant, micros)) => {
                choices.insert(key, Choice { variant, micros });
            }
            None => problems.push((
                start,
                format!("expected `kernel<TAB>shape<TAB>variant<TAB>microseconds`, found {line:?}"),
            )),
        }
    }
    (choices, problems)
}

/// Runs `dispatch` alone and reads back the first `len` elements of `out` (for
/// validation; the submissions count as the tuner's, not the caller's).
pub(crate) fn run_and_read(
    gpu: &crate::Gpu,
    dispatch: &Dispatch,
    out: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<f32>> {
    let tuner = gpu.autotuner();
    let mut encoder = gpu.encoder("wgtrain.autotune.validate");
    dispatch.encode(&mut encoder);
    tuner
        .submissions
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    gpu.queue().submit(Some(encoder.finish()));
    gpu.read_back(out, len, false)
}

/// Whether `got` matches the reference `want` to f32 rounding of `terms`-term sums of
/// values in [-1, 1].
pub(crate) fn close(got: &[f32], want: &[f32], terms: u32) -> bool {
    let tol = 1e-5 * (terms.max(1) as f32).sqrt();
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= tol * (1.0 + w.abs()))
}

/// Deterministic values in [-1, 1) for validation inputs.
pub(crate) fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_decisions_and_names_bad_lines_by_offset() {
        let text = "# header\nmatmul\tm1\tsg32\t12.5\nbroken line\nconv\tx\tBlocked\tNaN\n";
        let (choices, problems) = parse(text);
        assert_eq!(choices.len(), 1);
        assert_eq!(choices["matmul\tm1"].variant, "sg32");
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].0, "# header\nmatmul\tm1\tsg32\t12.5\n".len());
        assert!(problems[1].1.contains("conv"), "{problems:?}");
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
