//! Timing: one *run* records a list of dispatches `batch` times in one compute pass, in
//! one submission, and waits for it. Its time per repeat comes from
//!
//! - timestamp queries (when the adapter has TIMESTAMP_QUERY): the pass's beginning and
//!   end timestamps, resolved into a buffer and read back, times the queue's timestamp
//!   period — time inside the GPU, free of submission and wake-up costs; or
//! - the wall clock around `submit` and the queue wait (`poll(wait_indefinitely)`),
//!   which includes them: the batch is made long enough for them not to matter.
//!
//! A figure is a cold first run (reported on its own), a warm run that sizes the batch
//! so one run takes about `target_ms`, then `reps` timed runs: median, min and max.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use wgtrain_device::{Dispatch, Gpu};

use super::options::TimerChoice;

/// Median, min and max of a set of timings, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// The statistics of `samples` (at least one).
    pub fn of(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            0.5 * (s[mid - 1] + s[mid])
        };
        Stats {
            median,
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

/// The timing of one figure.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Per repeat of the dispatch list, from the clock in use.
    pub time: Stats,
    /// Per repeat, from the wall clock (equal to `time` with queue timing).
    pub wall: Stats,
    /// Repeats recorded per timed run.
    pub batch: usize,
    /// Wall time of the first run, cold (first touch of memory, lazy driver work).
    pub first_run_ms: f64,
}

/// GPU-side clock: a two-entry timestamp query set and the buffers to read it back.
struct Timestamps {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

/// Times dispatch lists with timestamp queries or queue waits.
pub struct Timer {
    timestamps: Option<Timestamps>,
    reps: usize,
    target_ms: f64,
}

impl Timer {
    /// A timer for `gpu` as `choice` asks; `reps` timed runs of about `target_ms` each.
    pub fn new(gpu: &Gpu, choice: TimerChoice, reps: usize, target_ms: f64) -> Result<Self> {
        let has = gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let use_timestamps = match choice {
            TimerChoice::Auto => has,
            TimerChoice::Timestamp if !has => {
                bail!(
                    "--timer timestamp: adapter {} has no TIMESTAMP_QUERY",
                    gpu.info().name
                )
            }
            TimerChoice::Timestamp => true,
            TimerChoice::Queue => false,
        };
        let timestamps = use_timestamps.then(|| {
            let device = gpu.device();
            let buffer = |label, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            use wgpu::BufferUsages as U;
            Timestamps {
                query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench.timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                }),
                resolve: buffer("bench.timestamps.resolve", U::QUERY_RESOLVE | U::COPY_SRC),
                readback: buffer("bench.timestamps.readback", U::MAP_READ | U::COPY_DST),
                period_ns: gpu.queue().get_timestamp_period() as f64,
            }
        });
        Ok(Timer {
            timestamps,
            reps,
            target_ms,
        })
    }

    /// `"timestamp"` or `"queue"`: how figures other than dispatch overhead are timed.
    pub fn clock(&self) -> &'static str {
        if self.timestamps.is_some() {
            "timestamp"
        } else {
            "queue"
        }
    }

    pub fn reps(&self) -> usize {
        self.reps
    }

    /// One run: `dispatches` recorded `batch` times in one pass and one submission.
    /// Returns (clock ms, wall ms), both for the whole run.
    fn run(&self, gpu: &Gpu, dispatches: &[&Dispatch], batch: usize) -> Result<(f64, f64)> {
        let start = Instant::now();
        let mut enc = gpu.encoder("bench");
        {
            let writes = self
                .timestamps
                .as_ref()
                .map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: &t.query_set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: writes,
            });
            for _ in 0..batch {
                for d in dispatches {
                    d.record(&mut pass);
                }
            }
        }
        if let Some(t) = &self.timestamps {
            enc.resolve_query_set(&t.query_set, 0..2, &t.resolve, 0);
            enc.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
        }
        gpu.submit(enc);
        gpu.sync()?;
        let wall = start.elapsed().as_secs_f64() * 1e3;
        let Some(t) = &self.timestamps else {
            return Ok((wall, wall));
        };
        let ticks = read_timestamps(gpu, &t.readback)?;
        ensure!(
            ticks[1] > ticks[0],
            "timestamp queries returned no elapsed time ({} -> {}): rerun with --timer queue",
            ticks[0],
            ticks[1]
        );
        Ok(((ticks[1] - ticks[0]) as f64 * t.period_ns * 1e-6, wall))
    }

    /// Times `dispatches` as one repeat.
    pub fn measure(&self, gpu: &Gpu, dispatches: &[&Dispatch]) -> Result<Measured> {
        let (_, first_run_ms) = self.run(gpu, dispatches, 1)?;
        let (one, _) = self.run(gpu, dispatches, 1)?;
        let batch = ((self.target_ms / one.max(1e-3)).ceil() as usize).clamp(1, 1000);
        let mut clock = Vec::with_capacity(self.reps);
        let mut wall = Vec::with_capacity(self.reps);
        for _ in 0..self.reps {
            let (c, w) = self.run(gpu, dispatches, batch)?;
            clock.push(c / batch as f64);
            wall.push(w / batch as f64);
        }
        Ok(Measured {
            time: Stats::of(&clock),
            wall: Stats::of(&wall),
            batch,
            first_run_ms,
        })
    }
}

/// Maps the readback buffer and returns the two timestamps.
fn read_timestamps(gpu: &Gpu, readback: &wgpu::Buffer) -> Result<[u64; 2]> {
    let slice = readback.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.sync()?;
    rx.recv()
        .context("timestamp readback: the map callback never ran")?
        .context("timestamp readback")?;
    let ticks = {
        let view = slice.get_mapped_range().context("timestamp readback")?;
        let words: Vec<u64> = view
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        [words[0], words[1]]
    };
    readback.unmap();
    Ok(ticks)
}

/// Wall-clock statistics of `reps` calls of `f`, each returning its own elapsed ms,
/// after one warm-up call (for the dispatch-overhead figures, where host cost is the
/// point and GPU timestamps would hide it).
pub fn wall_stats(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Stats> {
    f()?;
    let samples: Vec<f64> = (0..reps).map(|_| f()).collect::<Result<_>>()?;
    Ok(Stats::of(&samples))
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn stats_median_min_max() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
        assert_eq!(Stats::of(&[1.0, 2.0, 3.0, 4.0]).median, 2.5);
    }
}
