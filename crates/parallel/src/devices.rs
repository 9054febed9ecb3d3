//! Opening one wgpu device per replica: on distinct adapters, or several on one adapter.

use std::sync::Arc;

use wgtrain_graph::device::{Gpu, wgpu};

use crate::ParallelError;

/// Which devices the replicas get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `N` replicas, one per adapter: the GPUs wgpu sees (CPU adapters only when there
    /// is no GPU), in `WGTRAIN_ADAPTER` index order. Fails if fewer exist.
    Count(usize),
    /// One replica per entry, each an adapter index or name substring as
    /// `WGTRAIN_ADAPTER` takes them; an entry may repeat (several devices on one adapter,
    /// e.g. `0,0` on a machine with one).
    List(Vec<String>),
}

impl DeviceSpec {
    /// Parses `--devices`: a count (`2`) or a comma-separated list of adapters (`0,1`,
    /// `0,0`, `nvidia,amd`).
    pub fn parse(text: &str) -> Result<Self, ParallelError> {
        let text = text.trim();
        if let Ok(n) = text.parse::<usize>() {
            if n == 0 {
                return Err(ParallelError::Config(
                    "--devices 0: at least one device is needed".to_owned(),
                ));
            }
            return Ok(DeviceSpec::Count(n));
        }
        let list: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
        if list.iter().any(String::is_empty) {
            return Err(ParallelError::Config(format!(
                "--devices {text}: expected a count (2) or a comma-separated list of adapter \
                 indices or names (0,1 or 0,0)"
            )));
        }
        Ok(DeviceSpec::List(list))
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        match self {
            DeviceSpec::Count(n) => *n,
            DeviceSpec::List(l) => l.len(),
        }
    }

    /// Always false: a spec names at least one device.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The adapter choices, one per replica, checked against the adapters present;
    /// without opening anything.
    pub fn adapters(&self) -> Result<Vec<String>, ParallelError> {
        let present = Gpu::list_adapters();
        let describe = || {
            present
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {} ({:?})", a.name, a.device_type))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            DeviceSpec::Count(n) => {
                let pick = candidates(&present);
                if pick.len() < *n {
                    let first = pick.first().copied().unwrap_or(0);
                    let example = match *n {
                        ..=8 => vec![first.to_string(); *n].join(","),
                        _ => format!("{first},{first},… ({n} entries)"),
                    };
                    return Err(ParallelError::Config(format!(
                        "--devices {n}: only {} adapter(s) present [{}]; to open several \
                         devices on one adapter list it, e.g. --devices {example}",
                        pick.len(),
                        describe(),
                    )));
                }
                Ok(pick[..*n].iter().map(|i| i.to_string()).collect())
            }
            DeviceSpec::List(list) => {
                for choice in list {
                    let found = match choice.parse::<usize>() {
                        Ok(i) => i < present.len(),
                        Err(_) => present
                            .iter()
                            .any(|a| a.name.to_lowercase().contains(&choice.to_lowercase())),
                    };
                    if !found {
                        return Err(ParallelError::Config(format!(
                            "--devices: no adapter `{choice}` among the {} present [{}]",
                            present.len(),
                            describe()
                        )));
                    }
                }
                Ok(list.clone())
            }
        }
    }

    /// The adapter of an MPI process with local rank `local` (its index among the
    /// processes on its machine): the GPUs in turn, or the CPU adapter where no GPU is.
    pub fn for_local_rank(local: usize) -> Result<String, ParallelError> {
        let pick = candidates(&Gpu::list_adapters());
        match pick.len() {
            0 => Err(ParallelError::Config("no GPU adapter found".to_owned())),
            n => Ok(pick[local % n].to_string()),
        }
    }

    /// Opens one device per replica.
    pub fn open(&self) -> Result<Vec<Arc<Gpu>>, ParallelError> {
        self.adapters()?
            .iter()
            .map(|choice| {
                Gpu::with_adapter(Some(choice))
                    .map(Arc::new)
                    .map_err(|e| ParallelError::Config(format!("--devices: adapter {choice}: {e}")))
            })
            .collect()
    }
}

/// Indices of the adapters replicas are spread over: the GPUs, or every adapter (CPU
/// ones) where there is no GPU.
fn candidates(present: &[wgpu::AdapterInfo]) -> Vec<usize> {
    let gpus: Vec<usize> = (0..present.len())
        .filter(|&i| present[i].device_type != wgpu::DeviceType::Cpu)
        .collect();
    if gpus.is_empty() {
        (0..present.len()).collect()
    } else {
        gpus
    }
}
