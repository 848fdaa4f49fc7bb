//! Errors of the I/O crate. Every variant names the file and, where there is one, the dataset
//! and rows, so a user can find the bad input.

use std::ops::Range;
use std::path::{Path, PathBuf};

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
    /// A catalogue path that cannot be read as a catalogue (unknown format, a plain directory).
    #[error("{path}: {message}")]
    Format {
        /// The path as found.
        path: PathBuf,
        /// What is wrong with it and what to do.
        message: String,
    },
    /// The catalogue's files are of different formats.
    #[error(
        "the catalogue mixes formats: {first} is {first_format} but {path} is {format}; \
         one run reads one format (convert the files, or run them separately)"
    )]
    MixedFormats {
        /// The first file.
        first: PathBuf,
        /// Its format.
        first_format: crate::catalog::Format,
        /// The first file of another format.
        path: PathBuf,
        /// That file's format.
        format: crate::catalog::Format,
    },
    /// A Parquet, FITS or HATS file could not be opened or understood.
    #[error("cannot open {path} as {format}: {message}")]
    OpenAs {
        /// The file or directory.
        path: PathBuf,
        /// The format it was opened as.
        format: crate::catalog::Format,
        /// The library's message.
        message: String,
    },
    /// Reading rows of a Parquet or FITS column failed, or a row does not fit the column.
    #[error("{path}: column '{dataset}', {where_}: {message}")]
    ReadRows {
        /// The file.
        path: PathBuf,
        /// The column.
        dataset: String,
        /// `rows a..b` or `row r` (file-local).
        where_: String,
        /// What went wrong.
        message: String,
    },
    /// A dataset the run needs is in none of the catalogue files.
    #[error("dataset '{dataset}' is missing from {path}")]
    MissingDataset {
        /// The file (the first one, when missing everywhere).
        path: PathBuf,
        /// The dataset.
        dataset: String,
    },
    /// A survey preset does not fit the files (a missing column, a missing or extra file, files
    /// of one part that disagree on their objects), or is itself malformed.
    #[error("survey preset '{preset}': {path}: {message}")]
    Preset {
        /// The preset's name.
        preset: String,
        /// The file concerned (the preset file for a malformed preset).
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
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

impl Error {
    /// [`Error::ReadRows`] for rows `rows` (file-local) of `column` in `path`.
    pub(crate) fn read_rows(
        path: &Path,
        column: &str,
        rows: &Range<usize>,
        message: String,
    ) -> Self {
        Self::ReadRows {
            path: path.to_path_buf(),
            dataset: column.to_string(),
            where_: format!("rows {}..{}", rows.start, rows.end),
            message,
        }
    }
}
