//! Column units travel from the files into the reader (`Catalog::units`): FITS `TUNITn`, HDF5
//! attribute `units`, Parquet field metadata `unit` (what aion-export writes), and a survey
//! preset's copied column keeps its source's; a column without units has none.

use aion_io::Catalog;
use aion_io::export::fits::FitsTable;
use aion_io::export::parquet::ParquetTable;
use aion_io::export::{Block, Dtype, Field, Values};

fn fields() -> Vec<Field> {
    let mut ra = Field::new("ra", Dtype::F64, Vec::new());
    ra.units = Some("deg".into());
    let z = Field::new("z", Dtype::F64, Vec::new());
    vec![ra, z]
}

fn blocks() -> Vec<Block> {
    vec![
        Block::full(Values::F64(vec![10.0, 20.0])),
        Block::full(Values::F64(vec![0.1, 0.2])),
    ]
}

fn units_of(
    paths: &[String],
    preset: Option<&aion_io::Preset>,
) -> (Option<String>, Option<String>) {
    let cat = Catalog::open_with(paths, None, preset).unwrap();
    (cat.units("ra"), cat.units("z"))
}

#[test]
fn units_are_read_from_fits_hdf5_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let fits = dir.path().join("t.fits");
    let mut t = FitsTable::create(&fits, "T", fields(), "test", &[]).unwrap();
    t.write(2, &blocks()).unwrap();
    t.finish().unwrap();
    let fits = vec![fits.display().to_string()];
    assert_eq!(units_of(&fits, None), (Some("deg".into()), None));

    let pq = dir.path().join("t.parquet");
    let mut t =
        ParquetTable::new(std::fs::File::create(&pq).unwrap(), fields(), Vec::new()).unwrap();
    t.write(2, &blocks()).unwrap();
    t.finish().unwrap();
    let pq = vec![pq.display().to_string()];
    assert_eq!(units_of(&pq, None), (Some("deg".into()), None));

    let h5 = dir.path().join("t.h5");
    {
        let f = hdf5::File::create(&h5).unwrap();
        let ra = f
            .new_dataset_builder()
            .with_data(&[10.0f64, 20.0])
            .create("ra")
            .unwrap();
        let unit: hdf5::types::VarLenUnicode = "deg".parse().unwrap();
        ra.new_attr::<hdf5::types::VarLenUnicode>()
            .create("units")
            .unwrap()
            .write_scalar(&unit)
            .unwrap();
        f.new_dataset_builder()
            .with_data(&[0.1f64, 0.2])
            .create("z")
            .unwrap();
    }
    let h5 = vec![h5.display().to_string()];
    assert_eq!(units_of(&h5, None), (Some("deg".into()), None));

    // A preset's copy keeps the units; a computed E(B-V) has none.
    let preset: aion_io::Preset = serde_json::from_str(
        r#"{"name": "p", "columns": {
            "RA2": {"op": "copy", "from": "ra"},
            "EBV": {"op": "ebv_from_transmission", "from": "z", "coefficient": 3.214}}}"#,
    )
    .unwrap();
    let cat = Catalog::open_with(&fits, None, Some(&preset)).unwrap();
    assert_eq!(cat.units("RA2").as_deref(), Some("deg"));
    assert_eq!(cat.units("EBV"), None);
}
