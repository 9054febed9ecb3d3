//! The figure loop every suite goes through: filter, validate at a small size against the
//! CPU reference (never time a wrong kernel), prepare at full size, time, record, print.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use wgtrain_device::kernels::batchnorm::BatchNormPasses;
use wgtrain_device::{DeviceError, Dispatch, Gpu, PooledBuffer};

use super::options::{Options, Sizes};
use super::output::table;
use super::record::{Kind, Record};
use super::roofline::Roofline;
use super::timing::Timer;

/// What one figure computes, for the rate columns.
pub struct Figure {
    /// Stable name, identical in `bench/pytorch_reference.py`.
    pub name: String,
    pub kind: Kind,
    /// The workload in words.
    pub shape: String,
    /// Floating-point operations per repeat; `None` for memory-bound kernels.
    pub flops: Option<f64>,
    /// Bytes per repeat: each input read once, each output written once.
    pub bytes: f64,
}

/// One piece of a workload's dispatch list.
pub enum Part {
    One(Dispatch),
    Many(Vec<Dispatch>),
    /// Batch norm's passes, which own their scratch buffer.
    BatchNorm(BatchNormPasses),
}

/// The full-size buffers and dispatches of a figure. The buffers are kept alive (and out
/// of the pool) for as long as the dispatches that bind them.
pub struct Workload {
    parts: Vec<Part>,
    _buffers: Vec<PooledBuffer>,
}

impl Workload {
    pub fn new(parts: Vec<Part>, buffers: Vec<PooledBuffer>) -> Self {
        Workload {
            parts,
            _buffers: buffers,
        }
    }

    /// One dispatch and its buffers.
    pub fn one(dispatch: Dispatch, buffers: Vec<PooledBuffer>) -> Self {
        Self::new(vec![Part::One(dispatch)], buffers)
    }

    /// Every dispatch, in recording order.
    pub fn dispatches(&self) -> Vec<&Dispatch> {
        self.parts
            .iter()
            .flat_map(|p| match p {
                Part::One(d) => std::slice::from_ref(d),
                Part::Many(v) => v.as_slice(),
                Part::BatchNorm(b) => b.dispatches(),
            })
            .collect()
    }
}

/// The state of a run: the device, options, ceilings, timer, validations done so far,
/// and the records.
pub struct Bench<'a> {
    pub gpu: &'a Gpu,
    pub opts: &'a Options,
    pub sizes: Sizes,
    pub timer: Timer,
    pub roofline: Roofline,
    /// The reference's median ms by name (`--compare`).
    pub reference: Option<HashMap<String, f64>>,
    /// Validation results by key (the small configuration), so each is run once.
    validated: HashMap<String, Result<f64, String>>,
    pub records: Vec<Record>,
}

impl<'a> Bench<'a> {
    pub fn new(
        gpu: &'a Gpu,
        opts: &'a Options,
        sizes: Sizes,
        timer: Timer,
        roofline: Roofline,
        reference: Option<HashMap<String, f64>>,
    ) -> Self {
        Bench {
            gpu,
            opts,
            sizes,
            timer,
            roofline,
            reference,
            validated: HashMap::new(),
            records: Vec::new(),
        }
    }

    /// Whether a figure named `name` is to run (or be listed).
    pub fn wants(&self, name: &str) -> bool {
        self.opts.wants(name)
    }

    /// Runs one figure: `validate` (keyed by `key`, the small configuration it checks;
    /// returns the largest relative error) unless that key already passed, then
    /// `prepare` at full size, then the timing. A failure is recorded and printed with
    /// the figure's name, and the run goes on.
    pub fn figure(
        &mut self,
        fig: Figure,
        key: String,
        validate: impl FnOnce(&Gpu) -> Result<f64>,
        prepare: impl FnOnce(&Gpu) -> Result<Workload>,
    ) {
        if !self.wants(&fig.name) {
            return;
        }
        if self.opts.list {
            println!("{:<52} {}", fig.name, fig.shape);
            return;
        }
        let mut rec = Record::new(&fig.name, fig.kind, fig.shape.clone());
        rec.flops = fig.flops;
        rec.bytes = Some(fig.bytes);
        rec.intensity = fig.flops.map(|f| f / fig.bytes);
        let gpu = self.gpu;
        let checked = self
            .validated
            .entry(key)
            .or_insert_with(|| validate(gpu).map_err(|e| format!("{e:#}")))
            .clone();
        match checked {
            Ok(err) => {
                rec.validated = true;
                rec.validation_error = Some(err);
            }
            Err(e) => {
                rec.error = Some(format!("failed validation, not timed: {e}"));
                return self.push(rec);
            }
        }
        let start = Instant::now();
        let measured = prepare(gpu).and_then(|w| {
            rec.prepare_ms = Some(start.elapsed().as_secs_f64() * 1e3);
            self.timer.measure(gpu, &w.dispatches())
        });
        match measured {
            Ok(m) => {
                let t = m.time;
                (rec.median_ms, rec.min_ms, rec.max_ms) =
                    (Some(t.median), Some(t.min), Some(t.max));
                rec.wall_median_ms = Some(m.wall.median);
                rec.first_run_ms = Some(m.first_run_ms);
                rec.batch = Some(m.batch);
                rec.reps = Some(self.timer.reps());
                rec.timer = Some(self.timer.clock().to_owned());
                self.rate(&mut rec);
            }
            Err(e) => {
                // A tensor past the adapter's binding limit is a limit of this adapter
                // (e.g. AlexNet's fc6 weight on lavapipe's 128 MiB), not a wrong kernel.
                rec.skipped = matches!(
                    e.downcast_ref::<DeviceError>(),
                    Some(DeviceError::TooLarge { .. })
                );
                rec.error = Some(format!("{e:#}"));
            }
        }
        self.push(rec);
    }

    /// Fills the rate columns of a timed record from its flops or bytes.
    pub fn rate(&self, rec: &mut Record) {
        let Some(ms) = rec.median_ms else { return };
        if let Some(flops) = rec.flops.filter(|_| rec.kind.is_compute()) {
            let gflops = flops / (ms * 1e6);
            rec.gflops = Some(gflops);
            rec.fraction_of_peak = Some(gflops / self.roofline.peak_gflops);
        } else if let Some(bytes) = rec.bytes.filter(|&b| b > 0.0) {
            let gbs = bytes / (ms * 1e6);
            rec.gbs = Some(gbs);
            rec.fraction_of_peak = Some(gbs / self.roofline.bandwidth_gbs);
        }
    }

    /// Adds the reference's figure (if any), prints the row and keeps the record.
    pub fn push(&mut self, mut rec: Record) {
        if let Some(theirs) = self.reference.as_ref().and_then(|r| r.get(&rec.name)) {
            rec.reference_median_ms = Some(*theirs);
            rec.ratio_to_reference = rec.median_ms.map(|ours| ours / theirs);
        }
        table::print_row(&rec, self.reference.is_some());
        self.records.push(rec);
    }
}
