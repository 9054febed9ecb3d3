//! The models crate's error type: bad data files name the file and the byte offset;
//! bad model settings name the layer.

use std::path::PathBuf;

use wgtrain_graph::GraphError;

/// Errors from data loading, model building and training.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A data file is malformed: which file, where, and what was expected.
    #[error("{}: at byte {offset}: {message}", file.display())]
    Data {
        file: PathBuf,
        offset: u64,
        message: String,
    },

    /// A weights file does not fit the model: every offending tensor, one per line.
    #[error("{}: does not fit the model ({} problems):\n  {}", file.display(), problems.len(), problems.join("\n  "))]
    Weights {
        file: PathBuf,
        problems: Vec<String>,
    },

    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A setting is out of range (batch size, image size, label...).
    #[error("{0}")]
    Config(String),

    /// Building or running the graph failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

impl From<wgtrain_parallel::ParallelError> for ModelError {
    fn from(e: wgtrain_parallel::ParallelError) -> Self {
        match e {
            wgtrain_parallel::ParallelError::Graph(g) => ModelError::Graph(g),
            other => ModelError::Config(other.to_string()),
        }
    }
}

/// Result alias for the models crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}
