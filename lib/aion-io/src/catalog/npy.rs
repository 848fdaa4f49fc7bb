//! NumPy `.npy` arrays as one-column parts (cutouts shipped beside a catalogue, e.g. PICZL's
//! `processed_dered_griz_images.npy` of shape `(4, N, 23, 23)`).
//!
//! The array is one column, named by the survey preset's file role; its object axis is given by
//! the preset (`object_axis`, default 0: `(N, …)`), and rows are returned with the object first
//! (`(4, N, 23, 23)` read with `object_axis = 1` gives rows of shape `[4, 23, 23]`). The header,
//! dtype and byte order are parsed by the `npyz` crate; rows are read with seeks, so memory stays
//! bounded by the rows asked for. Float arrays (`f4`, `f8`) read as floats, integer arrays as
//! integers, `b1` as booleans; Fortran-ordered and structured arrays are refused.

use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, Order, TypeChar};

use super::{Column, ColumnKind, ColumnValues, Described, Part, Shape};
use crate::error::{Error, Result};

/// Element types read from `.npy` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    B1,
}

/// One `.npy` file.
pub(super) struct NpyPart {
    path: PathBuf,
    name: String,
    elem: Elem,
    /// Axes before the object axis (their product), objects, values per object per leading index.
    lead: usize,
    objects: usize,
    inner: usize,
    row_shape: Vec<usize>,
}

impl NpyPart {
    /// Opens `path` as column `name` whose objects run along `object_axis`.
    pub(super) fn open(path: &Path, name: &str, object_axis: usize) -> Result<Self> {
        let fail = |message: String| Error::Format {
            path: path.to_path_buf(),
            message: format!("cannot read as a NumPy .npy array: {message}"),
        };
        let file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let npy = NpyFile::new(BufReader::new(file)).map_err(|e| fail(e.to_string()))?;
        if npy.order() == Order::Fortran {
            return Err(fail(
                "Fortran-ordered array; save it in C order (numpy.ascontiguousarray)".into(),
            ));
        }
        let elem = match npy.dtype() {
            DType::Plain(t) => match (t.type_char(), t.size_field()) {
                (TypeChar::Float, 4) => Elem::F4,
                (TypeChar::Float, 8) => Elem::F8,
                (TypeChar::Int, 1) => Elem::I1,
                (TypeChar::Int, 2) => Elem::I2,
                (TypeChar::Int, 4) => Elem::I4,
                (TypeChar::Int, 8) => Elem::I8,
                (TypeChar::Uint, 1) => Elem::U1,
                (TypeChar::Uint, 2) => Elem::U2,
                (TypeChar::Uint, 4) => Elem::U4,
                (TypeChar::Bool, 1) => Elem::B1,
                _ => return Err(fail(format!("unsupported dtype {t}"))),
            },
            other => return Err(fail(format!("unsupported dtype {}", other.descr()))),
        };
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        if object_axis >= shape.len() {
            return Err(fail(format!(
                "the object axis is {object_axis} but the array has shape {shape:?}"
            )));
        }
        let lead = shape[..object_axis].iter().product();
        let inner = shape[object_axis + 1..].iter().product();
        let row_shape: Vec<usize> = shape[..object_axis]
            .iter()
            .chain(&shape[object_axis + 1..])
            .copied()
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            name: name.to_string(),
            elem,
            lead,
            objects: shape[object_axis],
            inner,
            row_shape,
        })
    }

    fn kind(&self) -> ColumnKind {
        match self.elem {
            Elem::F4 | Elem::F8 => ColumnKind::Float,
            Elem::B1 => ColumnKind::Bool,
            _ => ColumnKind::Int,
        }
    }

    /// Reads `n` elements from flat index `at` (in the file's order) and appends them to `out`.
    fn read_run(&self, at: usize, n: usize, out: &mut ColumnValues) -> std::io::Result<()> {
        fn run<T: npyz::Deserialize, U>(
            path: &Path,
            at: usize,
            n: usize,
            out: &mut Vec<U>,
            conv: impl Fn(T) -> U,
        ) -> std::io::Result<()> {
            let npy = NpyFile::new(BufReader::new(File::open(path)?))?;
            let mut data = npy
                .data::<T>()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            data.seek_to(at as u64)?;
            for v in data.take(n) {
                out.push(conv(v?));
            }
            Ok(())
        }
        let p = &self.path;
        match (self.elem, out) {
            (Elem::F4, ColumnValues::F32(v)) => run(p, at, n, v, |x: f32| x),
            (Elem::F8, ColumnValues::F32(v)) => run(p, at, n, v, |x: f64| x as f32),
            (Elem::F4, ColumnValues::F64(v)) => run(p, at, n, v, |x: f32| f64::from(x)),
            (Elem::F8, ColumnValues::F64(v)) => run(p, at, n, v, |x: f64| x),
            (Elem::I1, ColumnValues::I64(v)) => run(p, at, n, v, |x: i8| i64::from(x)),
            (Elem::I2, ColumnValues::I64(v)) => run(p, at, n, v, |x: i16| i64::from(x)),
            (Elem::I4, ColumnValues::I64(v)) => run(p, at, n, v, |x: i32| i64::from(x)),
            (Elem::I8, ColumnValues::I64(v)) => run(p, at, n, v, |x: i64| x),
            (Elem::U1, ColumnValues::I64(v)) => run(p, at, n, v, |x: u8| i64::from(x)),
            (Elem::U2, ColumnValues::I64(v)) => run(p, at, n, v, |x: u16| i64::from(x)),
            (Elem::U4, ColumnValues::I64(v)) => run(p, at, n, v, |x: u32| i64::from(x)),
            (Elem::B1, ColumnValues::Bool(v)) => run(p, at, n, v, |x: bool| x),
            _ => Err(std::io::Error::other(
                "value type differs from the column's",
            )),
        }
    }
}

impl Part for NpyPart {
    fn path(&self) -> &Path {
        &self.path
    }

    fn columns(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    fn has(&self, column: &str) -> bool {
        column == self.name
    }

    fn describe(&self, column: &str) -> Result<Option<Described>> {
        Ok(self.has(column).then(|| Described {
            kind: self.kind(),
            shape: Shape::Fixed(self.row_shape.clone()),
        }))
    }

    fn sample_shape(&self, column: &str) -> Result<Option<Vec<usize>>> {
        Ok(self.has(column).then(|| self.row_shape.clone()))
    }

    fn rows(&self, _column: &str) -> Result<usize> {
        Ok(self.objects)
    }

    fn read(&self, column: &str, rows: Range<usize>, out: &mut Column) -> Result<()> {
        let fail = |message: String| Error::read_rows(&self.path, column, &rows, message);
        out.check_row_shape(&self.row_shape).map_err(fail)?;
        let Column {
            values: out,
            present,
            ..
        } = out;
        if rows.end > self.objects {
            return Err(fail(format!("the array holds {} objects", self.objects)));
        }
        let n = rows.len();
        // Runs of `n * inner` values per leading index, gathered object-first.
        let mut runs = Vec::with_capacity(self.lead);
        for l in 0..self.lead {
            let mut run = match out {
                ColumnValues::F32(_) => ColumnValues::F32(Vec::with_capacity(n * self.inner)),
                ColumnValues::F64(_) => ColumnValues::F64(Vec::with_capacity(n * self.inner)),
                ColumnValues::I64(_) => ColumnValues::I64(Vec::with_capacity(n * self.inner)),
                ColumnValues::Bool(_) => ColumnValues::Bool(Vec::with_capacity(n * self.inner)),
                ColumnValues::Str(_) => {
                    return Err(fail("a .npy array holds no strings".into()));
                }
            };
            let at = (l * self.objects + rows.start) * self.inner;
            self.read_run(at, n * self.inner, &mut run)
                .map_err(|e| fail(e.to_string()))?;
            runs.push(run);
        }
        for r in 0..n {
            for run in &runs {
                let span = r * self.inner..(r + 1) * self.inner;
                match (&mut *out, run) {
                    (ColumnValues::F32(o), ColumnValues::F32(v)) => o.extend_from_slice(&v[span]),
                    (ColumnValues::F64(o), ColumnValues::F64(v)) => o.extend_from_slice(&v[span]),
                    (ColumnValues::I64(o), ColumnValues::I64(v)) => o.extend_from_slice(&v[span]),
                    (ColumnValues::Bool(o), ColumnValues::Bool(v)) => o.extend_from_slice(&v[span]),
                    _ => unreachable!("runs are built of the output's type"),
                }
            }
        }
        present.extend(std::iter::repeat_n(true, n));
        Ok(())
    }
}

/// Whether `path` starts with the `.npy` magic string.
pub(super) fn is_npy(path: &Path) -> bool {
    let mut magic = [0u8; 6];
    File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"\x93NUMPY"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A C-order `.npy` of `shape` with values 0, 1, 2, … of dtype `descr` (`<f4` or `<f8`).
    fn write(path: &Path, descr: &str, shape: &[usize]) {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let dims = if dims.len() == 1 {
            format!("{},", dims[0])
        } else {
            dims.join(", ")
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        for i in 0..shape.iter().product::<usize>() {
            match descr {
                "<f4" => bytes.extend((i as f32).to_le_bytes()),
                _ => bytes.extend((i as f64).to_le_bytes()),
            }
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn rows_along_any_axis_come_object_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        // (bands 2, objects 3, pixels 2): value = b*6 + n*2 + x.
        write(&p, "<f8", &[2, 3, 2]);
        assert!(is_npy(&p));
        let part = NpyPart::open(&p, "cutouts", 1).unwrap();
        assert_eq!(part.rows("cutouts").unwrap(), 3);
        assert_eq!(part.sample_shape("cutouts").unwrap(), Some(vec![2, 2]));
        let mut out = Column::empty(ColumnKind::Float, false, vec![2, 2], 2);
        part.read("cutouts", 1..3, &mut out).unwrap();
        // Object 1: bands 0 and 1 → [2, 3, 8, 9]; object 2 → [4, 5, 10, 11].
        assert_eq!(
            out.values,
            ColumnValues::F32(vec![2., 3., 8., 9., 4., 5., 10., 11.])
        );
        assert_eq!(out.present, [true, true]);
        let e = part
            .read("cutouts", 2..4, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.npy") && e.contains("3 objects"), "{e}");
        let e = NpyPart::open(&p, "c", 3).err().unwrap().to_string();
        assert!(e.contains("object axis is 3"), "{e}");
        let q = dir.path().join("b.npy");
        write(&q, "<f4", &[4]);
        let part = NpyPart::open(&q, "v", 0).unwrap();
        let mut out = Column::empty(ColumnKind::Float, false, vec![], 2);
        part.read("v", 1..3, &mut out).unwrap();
        assert_eq!(out.values, ColumnValues::F32(vec![1., 2.]));
    }
}
