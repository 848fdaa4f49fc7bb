//! Catalogue formats and telling them apart by content.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The file formats a catalogue can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// HDF5 files whose datasets have the object as first axis (Multimodal Universe).
    Hdf5,
    /// Apache Parquet files.
    Parquet,
    /// A HATS catalogue directory (HEALPix-partitioned Parquet, as LSDB reads it).
    Hats,
    /// FITS files: binary tables, and image HDUs whose first axis is the object.
    Fits,
}

impl Format {
    /// Every format, for messages.
    pub const ALL: [Format; 4] = [Format::Hdf5, Format::Parquet, Format::Hats, Format::Fits];

    /// The lower-case name used by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Hdf5 => "hdf5",
            Format::Parquet => "parquet",
            Format::Hats => "hats",
            Format::Fits => "fits",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Hdf5 => "HDF5",
            Format::Parquet => "Parquet",
            Format::Hats => "a HATS catalogue",
            Format::Fits => "FITS",
        })
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    /// `hdf5` (or `h5`), `parquet`, `hats`, `fits` (any case).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "hdf5" | "h5" => Ok(Format::Hdf5),
            "parquet" | "pq" => Ok(Format::Parquet),
            "hats" => Ok(Format::Hats),
            "fits" => Ok(Format::Fits),
            _ => Err(format!(
                "unknown catalogue format '{s}': expected one of {}",
                Format::ALL.map(Format::name).join(", ")
            )),
        }
    }
}

const HDF5_SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";

/// The error for a directory that is not a HATS catalogue.
pub(super) fn directory_error(path: &Path) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: "is a directory, not a catalogue file: give its files (e.g. 'DIR/*.h5'), or a \
                  HATS catalogue directory (one holding 'properties' or 'partition_info.csv')"
            .into(),
    }
}

/// Tells the format of `path` from its content: HATS for a catalogue directory, else the file's
/// signature (HDF5, also behind a user block; Parquet `PAR1`; FITS `SIMPLE`, also gzip-compressed
/// `.fits.gz`).
pub(super) fn detect(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return if super::hats::is_catalog(path) {
            Ok(Format::Hats)
        } else {
            Err(directory_error(path))
        };
    }
    let unreadable = |e: std::io::Error| Error::Format {
        path: path.to_path_buf(),
        message: format!("cannot read it: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut head = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut head)
        .map_err(unreadable)?;
    if head.starts_with(HDF5_SIGNATURE) || hdf5_after_user_block(&mut file) {
        return Ok(Format::Hdf5);
    }
    if head.starts_with(b"PAR1") {
        return Ok(Format::Parquet);
    }
    if head.starts_with(b"SIMPLE  =") {
        return Ok(Format::Fits);
    }
    let name = path.to_string_lossy().to_ascii_lowercase();
    if head.starts_with(b"\x1f\x8b")
        && [".fits.gz", ".fit.gz", ".fts.gz"]
            .iter()
            .any(|e| name.ends_with(e))
    {
        return Ok(Format::Fits);
    }
    Err(Error::Format {
        path: path.to_path_buf(),
        message: "is not a catalogue file this suite reads: by its content it is neither HDF5, \
                  Parquet nor FITS (if it is one of them, say which with --format)"
            .into(),
    })
}

/// HDF5 files may start with a user block of 512 · 2ⁿ bytes; the signature follows it.
fn hdf5_after_user_block(file: &mut std::fs::File) -> bool {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata().map_or(0, |m| m.len());
    let mut at = 512u64;
    while at + 8 <= len {
        let mut sig = [0u8; 8];
        if file.seek(SeekFrom::Start(at)).is_err() || file.read_exact(&mut sig).is_err() {
            return false;
        }
        if sig == HDF5_SIGNATURE {
            return true;
        }
        at *= 2;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_display() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
        }
        assert_eq!("H5".parse::<Format>().unwrap(), Format::Hdf5);
        let e = "csv".parse::<Format>().unwrap_err();
        assert!(e.contains("hdf5, parquet, hats, fits"), "{e}");
    }

    #[test]
    fn content_decides_not_the_name() {
        let dir = std::env::temp_dir().join(format!("aion-io-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: [(&str, &[u8], Option<Format>); 4] = [
            ("a.h5", b"PAR1xxxx", Some(Format::Parquet)),
            (
                "b.dat",
                b"SIMPLE  =                    T",
                Some(Format::Fits),
            ),
            ("c.parquet", b"\x89HDF\r\n\x1a\nrest", Some(Format::Hdf5)),
            ("d.h5", b"this is not hdf5", None),
        ];
        for (name, bytes, want) in cases {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            match (detect(&p), want) {
                (Ok(f), Some(w)) => assert_eq!(f, w, "{name}"),
                (Err(e), None) => assert!(e.to_string().contains("d.h5"), "{e}"),
                (got, want) => panic!("{name}: {got:?} vs {want:?}"),
            }
        }
        let mut ub = vec![0u8; 512];
        ub.extend_from_slice(HDF5_SIGNATURE);
        std::fs::write(dir.join("ub.h5"), &ub).unwrap();
        assert_eq!(detect(&dir.join("ub.h5")).unwrap(), Format::Hdf5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
