//! The catalogue readers against fixtures written by the real tools
//! (`validation/make_format_fixtures.py`: h5py, pyarrow, hats-import, astropy): every format
//! gives the HDF5 file's columns, shapes and values row for row; HATS partitions are read in
//! (Norder, Npix) order; damaged inputs are clear errors naming file, column and row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aion_io::catalog::{ColumnKind, ColumnValues};
use aion_io::{Catalog, Format};

fn formats_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../validation/fixtures/formats")
}

fn fixture(name: &str) -> String {
    formats_dir().join(name).display().to_string()
}

fn open(name: &str, columns: &[String]) -> Catalog {
    let mut c = Catalog::open(&[fixture(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
    c.size_by(columns).unwrap_or_else(|e| panic!("{name}: {e}"));
    c
}

/// Object ids as integers (HATS files of the MMU layout hold them as strings).
fn ids(c: &Catalog) -> Vec<i64> {
    match c.read("object_id", 0..c.n_rows()).unwrap().values {
        ColumnValues::I64(v) => v,
        ColumnValues::Str(v) => v.iter().map(|s| s.parse().unwrap()).collect(),
        other => panic!("object_id: {other:?}"),
    }
}

fn same(a: &ColumnValues, b: &ColumnValues) -> bool {
    match (a, b) {
        (ColumnValues::F32(x), ColumnValues::F32(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
        }
        _ => a == b,
    }
}

/// Rows of `v` (row length `len`) reordered by `order`.
fn permute(v: &ColumnValues, order: &[usize], len: usize) -> ColumnValues {
    fn pick<T: Clone>(v: &[T], order: &[usize], len: usize) -> Vec<T> {
        order
            .iter()
            .flat_map(|&r| v[r * len..(r + 1) * len].iter().cloned())
            .collect()
    }
    match v {
        ColumnValues::F32(x) => ColumnValues::F32(pick(x, order, len)),
        ColumnValues::F64(x) => ColumnValues::F64(pick(x, order, len)),
        ColumnValues::I64(x) => ColumnValues::I64(pick(x, order, len)),
        ColumnValues::Bool(x) => ColumnValues::Bool(pick(x, order, len)),
        ColumnValues::Str(x) => ColumnValues::Str(pick(x, order, len)),
    }
}

/// Checks that `other` holds `reference`'s columns (renamed by `names`) with the same values,
/// matching rows by object id.
fn assert_same_table(set: &str, other: &str, names: &BTreeMap<&str, &str>) {
    let h5 = format!("{set}.h5");
    let columns: Vec<String> = Catalog::open(&[fixture(&h5)]).unwrap().columns();
    let reference = open(&h5, &columns);
    let mapped: Vec<String> = columns
        .iter()
        .map(|c| names.get(c.as_str()).map_or(c.clone(), |n| n.to_string()))
        .collect();
    let cat = open(other, &mapped);
    assert_eq!(cat.n_rows(), reference.n_rows(), "{other}: rows");
    let by_id: BTreeMap<i64, usize> = ids(&cat)
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let order: Vec<usize> = ids(&reference).iter().map(|id| by_id[id]).collect();
    for (col, name) in columns.iter().zip(&mapped) {
        let want = reference.info(col).unwrap().unwrap();
        let got = cat
            .info(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{other}: no column {name}"));
        assert_eq!(got.row_shape, want.row_shape, "{other}: {name} shape");
        if col == "object_id" {
            continue;
        }
        assert_eq!(got.kind, want.kind, "{other}: {name} kind");
        let r = reference.read(col, 0..reference.n_rows()).unwrap();
        let c = cat.read(name, 0..cat.n_rows()).unwrap();
        assert!(c.present.iter().all(|&p| p), "{other}: {name}: absent rows");
        let len = want.row_shape.iter().product();
        assert!(
            same(&permute(&c.values, &order, len), &r.values),
            "{other}: {name}: values differ from {h5}"
        );
        if want.kind == ColumnKind::Float {
            // The buffer-reusing read agrees with the plain one.
            let mut buf = Vec::new();
            cat.read_f32_into(name, 1..cat.n_rows(), &mut buf).unwrap();
            let ColumnValues::F32(all) = &c.values else {
                unreachable!()
            };
            assert!(same(
                &ColumnValues::F32(buf),
                &ColumnValues::F32(all[len..].to_vec())
            ));
        }
    }
}

#[test]
fn parquet_fits_and_hats_read_the_same_rows_as_hdf5() {
    let none = BTreeMap::new();
    for other in [
        "mm.parquet",
        "mm.fits.gz",
        "sdss.parquet",
        "sdss.fits",
        "sdss_hats",
    ] {
        let set = other.split(['.', '_']).next().unwrap();
        assert_same_table(set, other, &none);
    }
    // The Multimodal Universe HATS layout: struct fields as <struct>_<field>, images as `flux`.
    let mmu = BTreeMap::from([("image_array", "image_flux")]);
    assert_same_table("mm", "mm_hats", &mmu);
}

#[test]
fn formats_are_told_by_content_and_can_be_forced() {
    for (name, f) in [
        ("mm.h5", Format::Hdf5),
        ("mm.parquet", Format::Parquet),
        ("mm.fits.gz", Format::Fits),
        ("mm_hats", Format::Hats),
    ] {
        assert_eq!(
            Catalog::open(&[fixture(name)]).unwrap().format(),
            f,
            "{name}"
        );
        assert_eq!(
            Catalog::open_as(&[fixture(name)], Some(f))
                .unwrap()
                .format(),
            f
        );
    }
    let e = Catalog::open_as(&[fixture("mm.parquet")], Some(Format::Fits))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mm.parquet") && e.contains("FITS"), "{e}");
    let e = Catalog::open(&[fixture("sdss.h5"), fixture("sdss.parquet")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mixes formats") && e.contains("sdss.parquet"),
        "{e}"
    );
}

/// (Norder, Npix) of a partition file path.
fn pixel(p: &Path) -> (u32, u64) {
    let s = p.display().to_string();
    let num = |key: &str| -> u64 {
        let rest = &s[s.rfind(key).unwrap() + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("Norder=") as u32, num("Npix="))
}

#[test]
fn hats_partitions_are_read_in_norder_npix_order() {
    let cat = open("sdss_hats", &["object_id".into()]);
    let pixels: Vec<(u32, u64)> = cat.files().iter().map(|p| pixel(p)).collect();
    let mut sorted = pixels.clone();
    sorted.sort_unstable();
    assert_eq!(pixels, sorted);
    assert!(
        pixels.iter().any(|p| p.0 == 0) && pixels.iter().any(|p| p.0 >= 6),
        "{pixels:?}"
    );
    // Npix 10 after Npix 9: numeric, not name order.
    let zero: Vec<u64> = pixels.iter().filter(|p| p.0 == 0).map(|p| p.1).collect();
    assert!(
        zero.windows(2).all(|w| w[0] < w[1]) && zero.contains(&10),
        "{zero:?}"
    );
    // Every file read is listed: partitions, then the catalogue's metadata files.
    let paths = cat.paths();
    assert_eq!(paths.len(), cat.files().len() + 2);
    assert!(paths.iter().any(|p| p.ends_with("partition_info.csv")));
    assert!(paths.iter().any(|p| p.ends_with("properties")));
    // locate() names the partition file and the row in it.
    let (file, row) = cat.locate(cat.part_rows(1).start + 1).unwrap();
    assert_eq!((file, row), (cat.files()[1], 1));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn a_missing_hats_partition_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let hats = dir.path().join("sdss_hats");
    copy_dir(&formats_dir().join("sdss_hats"), &hats);
    let victim = hats.join("dataset/Norder=1/Dir=0/Npix=25.parquet");
    std::fs::remove_file(&victim).unwrap();
    let e = Catalog::open(&[hats.display().to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Norder=1 Npix=25") && e.contains("missing") && e.contains("Npix=25.parquet"),
        "{e}"
    );
    // Also removed from partition_info.csv: the declared row count catches the lost rows.
    let info = hats.join("partition_info.csv");
    let text = std::fs::read_to_string(&info).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| *l != "1,25").collect();
    std::fs::write(&info, kept.join("\n")).unwrap();
    let mut cat = Catalog::open(&[hats.display().to_string()]).unwrap();
    let e = cat.size_by(&["object_id".into()]).unwrap_err().to_string();
    assert!(
        e.contains("hats_nrows") && e.contains("declare 300 rows"),
        "{e}"
    );
}

#[test]
fn parquet_nulls_are_absent_rows() {
    let cat = open("bad/nulls.parquet", &["FLUX_G".into()]);
    let c = cat.read("FLUX_G", 0..4).unwrap();
    assert_eq!(c.present, [true, false, true, true]);
    let v = c.to_f32().unwrap();
    assert!(v[1].is_nan() && v[0] == 1.5 && v[3] == 4.0);
    assert_eq!(cat.read("EBV", 1..4).unwrap().present, [true, false, true]);
}

#[test]
fn a_row_of_another_length_is_an_error_naming_file_column_and_row() {
    let cat = open("bad/ragged.parquet", &["coeff".into()]);
    assert_eq!(cat.info("coeff").unwrap().unwrap().row_shape, [110]);
    assert!(cat.read("coeff", 0..2).is_ok());
    let e = cat.read("coeff", 0..4).unwrap_err().to_string();
    assert!(
        e.contains("ragged.parquet")
            && e.contains("'coeff'")
            && e.contains("row 2")
            && e.contains("109"),
        "{e}"
    );
}

#[test]
fn fits_image_hdus_whose_first_axis_is_the_object_are_columns() {
    let cat = open("bad/image_hdu.fits", &["B_FLUX".into(), "TARGETID".into()]);
    assert_eq!(cat.n_rows(), 3);
    let cols = cat.columns();
    assert!(
        cols.contains(&"B_FLUX".to_string()) && !cols.contains(&"B_WAVELENGTH".to_string()),
        "{cols:?}"
    );
    let info = cat.info("B_FLUX").unwrap().unwrap();
    assert_eq!(
        (info.row_shape.clone(), info.kind),
        (vec![50], ColumnKind::Float)
    );
    let image = cat.read("B_FLUX", 1..3).unwrap();
    let table = cat.read("B_FLUX_COPY", 1..3).unwrap();
    assert_eq!(image.values, table.values);
    let mut buf = Vec::new();
    cat.read_f32_into("B_FLUX", 0..3, &mut buf).unwrap();
    assert_eq!(ColumnValues::F32(buf[50..].to_vec()), image.values);
}
