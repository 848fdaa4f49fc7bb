//! Errors of the model crate.
//!
//! Each variant names the file (and tensor, when there is one) it is about; the `Display` text
//! never repeats the wrapped source, so a printed chain (`{:#}` in anyhow) reads once.

use std::fmt;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading or running AION components.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid safetensors file.
    #[error("{path} is not a valid safetensors file: {message}")]
    SafeTensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A `config.json` is malformed or has values this implementation cannot honour.
    #[error("invalid config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Strict weight loading found tensors missing, unexpected, or of the wrong shape or type.
    #[error("weights in {path} do not match the module ({} problem(s)):\n{}", problems.len(), WeightProblems(problems))]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// Every mismatch found (not only the first).
        problems: Vec<WeightProblem>,
    },
    /// Input data that a codec or the transformer cannot accept.
    #[error("invalid input: {0}")]
    Input(String),
}

/// One mismatch between a weight file and the module that loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightProblem {
    /// The module needs this tensor and the file does not have it.
    Missing {
        /// Tensor name.
        name: String,
        /// Shape the module expects.
        expected: Vec<usize>,
    },
    /// The file has a tensor that no part of the module uses.
    Unexpected {
        /// Tensor name.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
    },
    /// The tensor exists with another shape.
    Shape {
        /// Tensor name.
        name: String,
        /// Shape the module expects.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// The tensor's dtype cannot be converted to what the module needs.
    DType {
        /// Tensor name.
        name: String,
        /// The dtype in the file.
        found: String,
    },
}

impl fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { name, expected } => write!(f, "missing tensor {name} {expected:?}"),
            Self::Unexpected { name, shape } => write!(f, "unexpected tensor {name} {shape:?}"),
            Self::Shape {
                name,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor {name} has shape {found:?}, expected {expected:?}"
                )
            }
            Self::DType { name, found } => write!(f, "tensor {name} has unsupported dtype {found}"),
        }
    }
}

struct WeightProblems<'a>(&'a [WeightProblem]);

impl fmt::Display for WeightProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl Error {
    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}
