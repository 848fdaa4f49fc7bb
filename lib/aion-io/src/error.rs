//! Errors of the I/O crate. Every variant names the file and, where there is one, the dataset
//! and rows, so a user can find the bad input.

use std::ops::Range;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A glob pattern or path matched no file.
    #[error("no catalogue file matches {pattern}")]
    NoFiles {
        /// The pattern or path as given.
        pattern: String,
    },
    /// A catalogue path is a directory.
    #[error(
        "{path} is a directory, not a catalogue file: give the files in it (e.g. '{}/*.h5')",
        path.display()
    )]
    Directory {
        /// The directory.
        path: PathBuf,
    },
    /// A glob pattern is malformed.
    #[error("invalid file pattern {pattern}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// HDF5 could not open or create a file.
    #[error("cannot open {path} as HDF5")]
    Open {
        /// The file.
        path: PathBuf,
        /// HDF5's error.
        #[source]
        source: hdf5::Error,
    },
    /// A dataset the run needs is in none of the catalogue files.
    #[error("dataset '{dataset}' is missing from {path}")]
    MissingDataset {
        /// The file (the first one, when missing everywhere).
        path: PathBuf,
        /// The dataset.
        dataset: String,
    },
    /// Datasets of one file disagree on the number of rows.
    #[error("{path}: dataset '{dataset}' has {found} rows but '{reference}' has {expected}")]
    RowCount {
        /// The file.
        path: PathBuf,
        /// The dataset with the odd length.
        dataset: String,
        /// The dataset that set the row count.
        reference: String,
        /// Rows of `reference`.
        expected: usize,
        /// Rows of `dataset`.
        found: usize,
    },
    /// A dataset has a shape or type the run cannot use.
    #[error("{path}: dataset '{dataset}': {message}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The dataset.
        dataset: String,
        /// What is wrong.
        message: String,
    },
    /// Reading rows failed.
    #[error("{path}: cannot read rows {}..{} of dataset '{dataset}'", rows.start, rows.end)]
    Read {
        /// The file.
        path: PathBuf,
        /// The dataset.
        dataset: String,
        /// Rows (file-local) that were being read.
        rows: Range<usize>,
        /// HDF5's error.
        #[source]
        source: hdf5::Error,
    },
    /// Creating, writing, flushing or closing the output failed on one or more ranks (every rank
    /// returns the same error).
    #[error("{path}: cannot write '{object}': {detail}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// The dataset, group or attribute (or `(flush)`, `(close)`).
        object: String,
        /// Which rank(s) failed, HDF5's account and the file system's error.
        detail: String,
    },
}
