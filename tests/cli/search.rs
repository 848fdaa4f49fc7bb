//! `aion-search` end to end: results against a brute-force reference computed here, for every
//! metric, 1, 2, 3 (and 5) ranks, several files, `--exclude-self`, ids and vector queries; bad
//! input; the sbatch script.
//!
//! Two kinds of data:
//! * **exact**: small integers (and queries of norm 2 or 4), so every dot product, squared
//!   distance and cosine is computed without rounding error in any order: the tool must equal
//!   the reference bit for bit, and exact duplicate rows make many true ties (broken by row);
//! * **float**: Gaussian vectors, compared with a tolerance ([`check_against_brute_force`], also
//!   the one-liner for any embedding file, e.g. `aion-embed`'s output on the bundled sample).

use std::path::{Path, PathBuf};

use aion_model::rng::Rng;

use crate::model::pipeline_model;
use crate::util::*;

const BIN: &str = SEARCH;

const METRICS: [&str; 3] = ["cosine", "dot", "l2"];
const LAUNCHES: [Launch; 3] = [Launch::Alone, Launch::Mpirun(2), Launch::Mpirun(3)];

// ---------------------------------------------------------------------------------------------
// Test data

/// An embedding table as `aion-embed` writes it.
#[derive(Clone)]
struct Emb {
    d: usize,
    x: Vec<f32>,
    ids: Vec<i64>,
    used: Vec<u64>,
}

impl Emb {
    fn rows(&self) -> usize {
        self.ids.len()
    }
    fn row(&self, r: usize) -> &[f32] {
        &self.x[r * self.d..(r + 1) * self.d]
    }
    fn slice(&self, rows: std::ops::Range<usize>) -> Emb {
        Emb {
            d: self.d,
            x: self.x[rows.start * self.d..rows.end * self.d].to_vec(),
            ids: self.ids[rows.clone()].to_vec(),
            used: self.used[rows].to_vec(),
        }
    }
}

/// Writes `embedding`, `object_id` and (if `with_used`) `modalities_used`.
fn write_emb(path: &Path, e: &Emb, with_used: bool) {
    let f = hdf5::File::create(path).unwrap();
    let x = ndarray::Array2::from_shape_vec((e.rows(), e.d), e.x.clone()).unwrap();
    f.new_dataset_builder()
        .with_data(&x)
        .create("embedding")
        .unwrap();
    f.new_dataset_builder()
        .with_data(&ndarray::arr1(&e.ids))
        .create("object_id")
        .unwrap();
    if with_used {
        f.new_dataset_builder()
            .with_data(&ndarray::arr1(&e.used))
            .create("modalities_used")
            .unwrap();
    }
}

/// Writes a query file: `embedding` (Q, D) and optionally `object_id`.
fn write_queries(path: &Path, d: usize, x: &[f32], ids: Option<&[i64]>) {
    let f = hdf5::File::create(path).unwrap();
    let a = ndarray::Array2::from_shape_vec((x.len() / d, d), x.to_vec()).unwrap();
    f.new_dataset_builder()
        .with_data(&a)
        .create("embedding")
        .unwrap();
    if let Some(ids) = ids {
        f.new_dataset_builder()
            .with_data(&ndarray::arr1(ids))
            .create("object_id")
            .unwrap();
    }
}

/// Exact data: D = 16, entries in −2..=2, with planted duplicates, a duplicated object id,
/// rows without embedding, a NaN row and an all-zero row. Rows 10, 30 and 1600 have norm 2 or 4
/// (exact cosine normalisation when they are queries).
fn exact_table() -> Emb {
    let (n, d) = (2600, 16);
    let mut g = Rng::new(7, 0, 0);
    let mut x: Vec<f32> = (0..n * d).map(|_| g.below(5) as f32 - 2.0).collect();
    let mut set = |r: usize, v: &[f32]| x[r * d..(r + 1) * d].copy_from_slice(v);
    let mut norm2 = vec![0f32; d];
    norm2[3] = 2.0; // |v| = 2
    let mut norm4 = vec![1f32; d]; // |v| = 4
    norm4[5] = -1.0;
    norm4[11] = -1.0;
    let mut sparse = vec![0f32; d]; // |v| = 2
    for (i, s) in [(0, 1.0), (4, -1.0), (9, 1.0), (15, 1.0)] {
        sparse[i] = s;
    }
    set(10, &norm4);
    set(30, &norm2);
    set(1600, &sparse);
    // Exact duplicates of row 10 (in both files) and of row 1600: true ties in every metric.
    for r in [500, 1700, 2500] {
        set(r, &norm4);
    }
    set(1601, &sparse);
    set(7, &sparse);
    set(41, &[f32::NAN; 16]);
    set(42, &[0.0; 16]);
    let mut ids: Vec<i64> = (0..n as i64).map(|r| 5000 + 3 * r).collect();
    ids[1800] = ids[30]; // object id of row 30 appears twice
    let mut used = vec![0b101u64; n];
    used[40] = 0;
    used[1650] = 0;
    Emb { d, x, ids, used }
}

/// Splits `e` into two files at row 1500; the second has no `modalities_used` (its rows count as
/// embedded), so the reference must treat row 1650 as embedded.
fn write_split(dir: &Path, e: &Emb) -> (Vec<PathBuf>, Emb) {
    let (a, b) = (dir.join("emb-a.h5"), dir.join("emb-b.h5"));
    write_emb(&a, &e.slice(0..1500), true);
    write_emb(&b, &e.slice(1500..e.rows()), false);
    let mut seen = e.clone();
    seen.used[1500..].iter_mut().for_each(|u| *u = 1);
    (vec![a, b], seen)
}

// ---------------------------------------------------------------------------------------------
// Brute-force reference

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Cosine,
    Dot,
    L2,
}

fn metric(name: &str) -> Metric {
    match name {
        "cosine" => Metric::Cosine,
        "dot" => Metric::Dot,
        _ => Metric::L2,
    }
}

/// One hit of the reference: (badness, row, object id, reported score).
type Hit = (f32, usize, i64, f32);

/// Badness (smaller is better) and reported score of every row for query `q`, or `None` for
/// rows without a valid embedding. Sums in f64; for exact data every value is exact, and the
/// last steps mirror the tool's f32 formulas (cosine: `dot / sqrt(|x|²)`, l2: `sqrt(d²)`).
fn scores(e: &Emb, q: &[f32], m: Metric) -> Vec<Option<(f32, f32)>> {
    let qn = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    let qhat: Vec<f32> = q.iter().map(|&v| (f64::from(v) / qn) as f32).collect();
    (0..e.rows())
        .map(|r| {
            let x = e.row(r);
            let xn2: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
            if e.used[r] == 0 || !xn2.is_finite() || (m == Metric::Cosine && xn2 == 0.0) {
                return None;
            }
            Some(match m {
                Metric::Dot => {
                    let s = x.iter().zip(q).map(|(&a, &b)| f64::from(a) * f64::from(b));
                    let s = s.sum::<f64>() as f32;
                    (-s + 0.0, s + 0.0)
                }
                Metric::Cosine => {
                    let s = x
                        .iter()
                        .zip(&qhat)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b));
                    let c = (s.sum::<f64>() as f32) / (xn2 as f32).sqrt();
                    (-c + 0.0, c + 0.0)
                }
                Metric::L2 => {
                    let d2 = x
                        .iter()
                        .zip(q)
                        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2));
                    let d2 = d2.sum::<f64>() as f32;
                    (d2, d2.sqrt())
                }
            })
        })
        .collect()
}

/// The k best rows for `q`: by badness, ties by smaller row; rows with object id `exclude` left
/// out.
fn brute_force(e: &Emb, q: &[f32], m: Metric, k: usize, exclude: Option<i64>) -> Vec<Hit> {
    let mut hits: Vec<Hit> = scores(e, q, m)
        .into_iter()
        .enumerate()
        .filter_map(|(r, s)| s.map(|(b, sc)| (b, r, e.ids[r], sc)))
        .filter(|h| Some(h.2) != exclude)
        .collect();
    hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    hits.truncate(k);
    hits
}

/// The tool's result tables.
#[derive(Debug)]
struct Result {
    k: usize,
    ids: Vec<i64>,
    rows: Vec<i64>,
    scores: Vec<f32>,
    count: Vec<i64>,
    status: Vec<u8>,
    query_ids: Vec<i64>,
}

fn read_result(path: &Path) -> Result {
    let f = hdf5::File::open(path).unwrap();
    let (shape, ids) = read_i64(path, "neighbors/object_id");
    Result {
        k: shape[1],
        ids,
        rows: read_i64(path, "neighbors/row").1,
        scores: f
            .dataset("neighbors/score")
            .unwrap()
            .read_raw::<f32>()
            .unwrap(),
        count: read_i64(path, "neighbors/count").1,
        status: f.dataset("query_status").unwrap().read_raw::<u8>().unwrap(),
        query_ids: read_i64(path, "query_object_id").1,
    }
}

/// Asserts query `j` of `got` equals `want` bit for bit (ids, rows, scores, −1/NaN fill).
fn assert_exact(got: &Result, j: usize, want: &[Hit], what: &str) {
    let k = got.k;
    let sl = |v: &[i64]| v[j * k..(j + 1) * k].to_vec();
    let mut ids = vec![-1; k];
    let mut rows = vec![-1; k];
    let mut sc = vec![f32::NAN; k];
    for (i, h) in want.iter().enumerate() {
        (ids[i], rows[i], sc[i]) = (h.2, h.1 as i64, h.3);
    }
    assert_eq!(sl(&got.rows), rows, "{what}: query {j}: rows");
    assert_eq!(sl(&got.ids), ids, "{what}: query {j}: object ids");
    let gs: Vec<u32> = got.scores[j * k..(j + 1) * k]
        .iter()
        .map(|s| s.to_bits())
        .collect();
    let ws: Vec<u32> = sc.iter().map(|s| s.to_bits()).collect();
    assert_eq!(
        gs,
        ws,
        "{what}: query {j}: scores {:?} vs {sc:?}",
        &got.scores[j * k..(j + 1) * k]
    );
    assert_eq!(got.count[j], want.len() as i64, "{what}: query {j}: count");
}

/// Asserts query `j` of `got` equals the reference up to rounding: same scores within `tol`,
/// same rows except that rows whose reference scores are within `tol` may swap places.
/// Returns how many positions differ only by such a near-tie swap.
fn assert_close(got: &Result, j: usize, e: &Emb, q: &[f32], m: Metric, excl: Option<i64>) -> usize {
    let k = got.k;
    let want = brute_force(e, q, m, k, excl);
    let all = scores(e, q, m);
    let tol = |b: f32| 1e-4 * (1.0 + b.abs());
    assert_eq!(got.count[j], want.len() as i64, "query {j}: count");
    let mut swaps = 0;
    let mut seen = std::collections::HashSet::new();
    for (i, w) in want.iter().enumerate() {
        let (row, id, score) = (
            got.rows[j * k + i],
            got.ids[j * k + i],
            got.scores[j * k + i],
        );
        assert!(
            row >= 0 && seen.insert(row),
            "query {j}: bad or repeated row {row}"
        );
        let r = row as usize;
        assert_eq!(id, e.ids[r], "query {j}: object id of row {r}");
        assert_ne!(Some(id), excl, "query {j}: excluded object returned");
        let (b, _) = all[r].unwrap_or_else(|| panic!("query {j}: invalid row {r} returned"));
        assert!(
            (score - w.3).abs() <= tol(w.3),
            "query {j} pos {i}: score {score} vs reference {}",
            w.3
        );
        if r != w.1 {
            assert!(
                (b - w.0).abs() <= tol(w.0),
                "query {j} pos {i}: row {r} (badness {b}) instead of {} ({})",
                w.1,
                w.0
            );
            swaps += 1;
        }
    }
    for i in want.len()..k {
        assert_eq!(got.rows[j * k + i], -1);
        assert!(got.scores[j * k + i].is_nan());
    }
    swaps
}

fn search(launch: Launch, args: &[&str]) -> std::process::Output {
    let mut a = args.to_vec();
    a.push("--overwrite");
    run_tool(BIN, launch, &a)
}

/// `--embeddings FILES… --query-ids IDS… --k K REST…`.
fn by_ids<'a>(files: &[&'a Path], ids: &[&'a str], k: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--embeddings"];
    a.extend(files.iter().map(|f| s(f)));
    a.push("--query-ids");
    a.extend(ids);
    a.extend(["--k", k]);
    a.extend(rest);
    a
}

fn launch_name(l: Launch) -> String {
    match l {
        Launch::Alone => "alone".into(),
        Launch::Mpirun(n) => format!("mpirun -n {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The one-liner for any embedding file

/// Runs `aion-search` on `files` for every metric on 1, 2 and 3 ranks, with object-id queries
/// (three objects spread over the table, `--exclude-self`) and a query file (two perturbed rows),
/// and checks every result against the brute-force reference (tolerance for rounding; near-ties
/// may swap). For the bundled sample once `aion-embed` has written it:
/// `check_against_brute_force(&[&embeddings_h5], 10);`
pub fn check_against_brute_force(files: &[&Path], k: usize) {
    let e = load(files);
    // Query candidates: valid rows holding the first occurrence of their object id (an id on
    // several rows is searched with its first row's vector).
    let mut seen = std::collections::HashSet::new();
    let valid: Vec<usize> = (0..e.rows())
        .filter(|&r| seen.insert(e.ids[r]))
        .filter(|&r| e.used[r] != 0 && e.row(r).iter().all(|v| v.is_finite()))
        .filter(|&r| e.row(r).iter().any(|&v| v != 0.0))
        .collect();
    assert!(!valid.is_empty(), "no valid embedding in {files:?}");
    let picks = [valid[0], valid[valid.len() / 2], valid[valid.len() - 1]];
    let ids: Vec<String> = picks.iter().map(|&r| e.ids[r].to_string()).collect();
    let dir = tempdir();
    let qfile = dir.path().join("q.h5");
    let mut g = Rng::new(11, 0, 0);
    let qx: Vec<f32> = [picks[1], picks[2]]
        .iter()
        .flat_map(|&r| e.row(r).to_vec())
        .map(|v| v + 0.05 * g.normal() as f32)
        .collect();
    write_queries(&qfile, e.d, &qx, None);
    let mut swaps = 0;
    for m in METRICS {
        let mut first: Option<(PathBuf, PathBuf)> = None;
        for launch in LAUNCHES {
            let what = format!("{m}, {}", launch_name(launch));
            let out = dir.path().join("ids.h5");
            let kk = k.to_string();
            let kk = kk.as_str();
            let mut args = vec![
                "--metric",
                m,
                "--k",
                kk,
                "--exclude-self",
                "--output",
                s(&out),
            ];
            args.push("--embeddings");
            args.extend(files.iter().map(|f| s(f)));
            args.push("--query-ids");
            args.extend(ids.iter().map(String::as_str));
            if launch == Launch::Mpirun(3) {
                args.extend(["--threads", "2"]); // also the same bits
            }
            assert_ok(&search(launch, &args));
            let got = read_result(&out);
            for (j, &r) in picks.iter().enumerate() {
                let q = e.row(r).to_vec();
                swaps += assert_close(&got, j, &e, &q, metric(m), Some(e.ids[r]));
            }
            let out = dir.path().join("file.h5");
            let mut args = vec!["--metric", m, "--k", kk, "--output", s(&out)];
            args.extend(["--query-file", s(&qfile), "--embeddings"]);
            args.extend(files.iter().map(|f| s(f)));
            assert_ok(&search(launch, &args));
            let got = read_result(&out);
            for j in 0..2 {
                let q = &qx[j * e.d..(j + 1) * e.d];
                swaps += assert_close(&got, j, &e, q, metric(m), None);
            }
            // Any rank count gives the same bits (every row is scored the same way).
            let ids_out = dir.path().join("ids.h5");
            match &first {
                None => {
                    let keep = (
                        dir.path().join(format!("{m}-ids")),
                        dir.path().join(format!("{m}-file")),
                    );
                    std::fs::copy(&ids_out, &keep.0).unwrap();
                    std::fs::copy(&out, &keep.1).unwrap();
                    first = Some(keep);
                }
                Some((a, b)) => {
                    assert_same_results(a, &ids_out, &what);
                    assert_same_results(b, &out, &what);
                }
            }
            eprintln!("{what}: ok");
        }
    }
    eprintln!("near-tie swaps: {swaps}");
}

/// Asserts two results hold the same neighbours and scores, bit for bit.
fn assert_same_results(a: &Path, b: &Path, what: &str) {
    let (x, y) = (read_result(a), read_result(b));
    assert_eq!(x.rows, y.rows, "{what}: rows differ from the 1-rank run");
    assert_eq!(x.ids, y.ids, "{what}: ids differ from the 1-rank run");
    let bits = |r: &Result| r.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&x),
        bits(&y),
        "{what}: scores differ from the 1-rank run"
    );
}

/// Reads embedding files as one table (as the tool does).
fn load(files: &[&Path]) -> Emb {
    let mut e = Emb {
        d: 0,
        x: Vec::new(),
        ids: Vec::new(),
        used: Vec::new(),
    };
    for p in files {
        let f = hdf5::File::open(p).unwrap();
        let ds = f.dataset("embedding").unwrap();
        let (n, d) = (ds.shape()[0], ds.shape()[1]);
        e.d = d;
        e.x.extend(ds.read_raw::<f32>().unwrap());
        let start = e.ids.len() as i64;
        match f.dataset("object_id") {
            Ok(ids) => e.ids.extend(ids.read_raw::<i64>().unwrap()),
            Err(_) => e.ids.extend(start..start + n as i64),
        }
        match f.dataset("modalities_used") {
            Ok(u) => e.used.extend(u.read_raw::<u64>().unwrap()),
            Err(_) => e.used.extend(std::iter::repeat_n(1, n)),
        }
    }
    e
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn exact_ties_every_metric_one_two_three_ranks_two_files() {
    let dir = tempdir();
    let e = exact_table();
    let (files, seen) = write_split(dir.path(), &e);
    // Query objects: row 10 (4 exact duplicates), the object id of row 30 (also on row 1800),
    // row 1600 (duplicated on 1601 and 7, in the other file).
    let qrows = [10usize, 30, 1600];
    let qids: Vec<String> = qrows.iter().map(|&r| e.ids[r].to_string()).collect();
    let k = 12;
    for m in METRICS {
        for (li, launch) in LAUNCHES.into_iter().enumerate() {
            let exclude = li % 2 == 1;
            let what = format!("{m}, {}, exclude_self={exclude}", launch_name(launch));
            let out = dir.path().join(format!("{m}-{li}.h5"));
            let mut args = vec!["--embeddings", s(&files[0]), s(&files[1])];
            args.extend(["--metric", m, "--k", "12", "--output", s(&out)]);
            args.extend(["--chunk-rows", "97", "--query-ids"]);
            args.extend(qids.iter().map(String::as_str));
            if exclude {
                args.push("--exclude-self");
            }
            let err = assert_ok(&search(launch, &args));
            if let Launch::Mpirun(n) = launch {
                assert!(err.contains(&format!("0/{n}]")), "not {n} ranks:\n{err}");
            }
            assert!(
                err.contains("object id 5090 is in 2 rows"),
                "duplicate id not reported:\n{err}"
            );
            let got = read_result(&out);
            assert_eq!(got.status, vec![0, 0, 0]);
            for (j, &r) in qrows.iter().enumerate() {
                let excl = exclude.then_some(e.ids[r]);
                let want = brute_force(&seen, e.row(r), metric(m), k, excl);
                assert_exact(&got, j, &want, &what);
            }
            // The duplicates of row 10 tie at the top, in row order (cosine 1, distance 0).
            if !exclude && m != "dot" {
                assert_eq!(&got.rows[..4], &[10, 500, 1700, 2500], "{what}");
            }
        }
    }
}

#[test]
fn exact_query_file_threads_and_five_ranks() {
    let dir = tempdir();
    let e = exact_table();
    let (files, seen) = write_split(dir.path(), &e);
    // Three vectors: a copy of row 10, one not in the table, a copy of row 1600 (norms 4, 2, 2).
    let mut fresh = [0f32; 16];
    fresh[1] = -2.0;
    let qx: Vec<f32> = [e.row(10), &fresh[..], e.row(1600)].concat();
    let qids = [e.ids[10], 77, e.ids[1600]];
    let qfile = dir.path().join("q.h5");
    write_queries(&qfile, 16, &qx, Some(&qids));
    let k = 9;
    for (m, launch, extra) in [
        ("cosine", Launch::Alone, vec!["--threads", "3"]),
        (
            "l2",
            Launch::Mpirun(2),
            vec!["--threads", "2", "--exclude-self"],
        ),
        ("dot", Launch::Mpirun(5), vec!["--exclude-self"]),
        ("cosine", Launch::Mpirun(5), vec!["--chunk-rows", "50"]),
    ] {
        let what = format!("{m}, {}, {extra:?}", launch_name(launch));
        let out = dir.path().join("f.h5");
        let mut args = vec!["--embeddings", s(&files[0]), s(&files[1])];
        args.extend(["--metric", m, "--k", "9", "--output", s(&out)]);
        args.extend(["--query-file", s(&qfile)]);
        args.extend(extra.iter().copied());
        assert_ok(&search(launch, &args));
        let got = read_result(&out);
        assert_eq!(got.query_ids, qids);
        let exclude = extra.contains(&"--exclude-self");
        for j in 0..3 {
            let excl = exclude.then_some(qids[j]);
            let want = brute_force(&seen, &qx[j * 16..(j + 1) * 16], metric(m), k, excl);
            assert_exact(&got, j, &want, &what);
        }
    }
}

#[test]
fn float_data_matches_brute_force_and_csv_equals_hdf5() {
    let dir = tempdir();
    let mut g = Rng::new(3, 0, 0);
    let (n, d) = (2300, 96);
    let e = Emb {
        d,
        x: (0..n * d).map(|_| g.normal() as f32).collect(),
        ids: (0..n as i64).map(|r| 10_000_000_000 + r * 17).collect(),
        used: vec![1; n],
    };
    let (a, b) = (dir.path().join("a.h5"), dir.path().join("b.h5"));
    write_emb(&a, &e.slice(0..1100), true);
    write_emb(&b, &e.slice(1100..n), true);
    check_against_brute_force(&[&a, &b], 15);

    // CSV: the HDF5 tables flattened, one line per query and neighbour.
    let (h5, csv) = (dir.path().join("r.h5"), dir.path().join("r.csv"));
    let id = e.ids[5].to_string();
    for out in [&h5, &csv] {
        let args = by_ids(&[&a, &b], &[&id], "4", &["--output", s(out)]);
        assert_ok(&search(Launch::Mpirun(2), &args));
    }
    let got = read_result(&h5);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "query,query_object_id,query_row,query_status,neighbor,object_id,row,score"
    );
    assert_eq!(lines.len(), 5);
    for (i, l) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(
            &f[..5],
            &["0", id.as_str(), "5", "ok", &(i + 1).to_string()]
        );
        assert_eq!(f[5].parse::<i64>().unwrap(), got.ids[i]);
        assert_eq!(f[6].parse::<i64>().unwrap(), got.rows[i]);
        assert_eq!(f[7].parse::<f32>().unwrap(), got.scores[i]);
    }
    assert_eq!(
        got.rows[0], 5,
        "the query itself comes first without --exclude-self"
    );
}

#[test]
fn provenance_and_summary_are_recorded() {
    let dir = tempdir();
    let e = exact_table();
    let (files, _) = write_split(dir.path(), &e);
    let out = dir.path().join("p.h5");
    let rest = ["--metric", "dot", "--output", s(&out)];
    let args = by_ids(&[&files[0], &files[1]], &["5030"], "3", &rest);
    let err = assert_ok(&search(Launch::Mpirun(2), &args));
    assert!(
        err.contains("1 with modalities_used = 0, 1 with NaN/inf values, 0 all-zero"),
        "{err}"
    );
    let f = hdf5::File::open(&out).unwrap();
    let attr = |n: &str| {
        f.attr(n)
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .to_string()
    };
    assert_eq!(attr("tool"), "aion-search");
    assert_eq!(attr("metric"), "dot");
    assert!(attr("score").starts_with("dot product"));
    assert_eq!(f.attr("n_ranks").unwrap().read_scalar::<i64>().unwrap(), 2);
    assert_eq!(f.attr("k").unwrap().read_scalar::<i64>().unwrap(), 3);
    let summary: serde_json::Value = serde_json::from_str(&attr("summary")).unwrap();
    assert_eq!(summary["rows"], 2600);
    assert_eq!(summary["rows_valid"], 2598);
    let catalog: serde_json::Value = serde_json::from_str(&attr("catalog")).unwrap();
    assert_eq!(catalog["rows"], 2600);
    let sidecar = std::fs::read_to_string(dir.path().join("p.h5.run.json")).unwrap();
    let sidecar: serde_json::Value = serde_json::from_str(&sidecar).unwrap();
    assert_eq!(sidecar["summary"]["queries_searched"], 1);
}

#[test]
fn fewer_valid_rows_than_k_fill_and_warn_and_more_ranks_than_rows() {
    let dir = tempdir();
    let e = Emb {
        d: 4,
        x: vec![
            1.0,
            0.0,
            0.0,
            0.0, //
            0.0,
            1.0,
            0.0,
            0.0, //
            f32::NAN,
            0.0,
            0.0,
            0.0, //
            1.0,
            1.0,
            0.0,
            0.0,
        ],
        ids: vec![1, 2, 3, 4],
        used: vec![1, 1, 1, 0],
    };
    let p = dir.path().join("tiny.h5");
    write_emb(&p, &e, true);
    let out = dir.path().join("o.h5");
    let args = [
        "--embeddings",
        s(&p),
        "--query-ids",
        "1",
        "2",
        "--k",
        "5",
        "--output",
        s(&out),
        "--metric",
        "dot",
        "--exclude-self",
    ];
    let err = assert_ok(&search(Launch::Mpirun(5), &args));
    assert!(err.contains("2 queries found fewer than k = 5"), "{err}");
    let got = read_result(&out);
    assert_eq!(got.count, vec![1, 1]);
    assert_eq!(&got.ids[..5], &[2, -1, -1, -1, -1]);
    assert_eq!(&got.rows[5..10], &[0, -1, -1, -1, -1]);
    assert_eq!(got.scores[0], 0.0);
    assert!(got.scores[1..5].iter().all(|s| s.is_nan()));
}

#[test]
fn unusable_queries_are_flagged_not_searched() {
    let dir = tempdir();
    let e = exact_table();
    let (files, seen) = write_split(dir.path(), &e);
    let qfile = dir.path().join("q.h5");
    let mut qx = vec![0f32; 16 * 4];
    qx[..16].copy_from_slice(e.row(30));
    qx[16] = f32::NAN;
    // query 2: all zeros (no direction for cosine); query 3: flagged by modalities_used = 0.
    qx[48..].copy_from_slice(e.row(10));
    {
        let f = hdf5::File::create(&qfile).unwrap();
        let a = ndarray::Array2::from_shape_vec((4, 16), qx.clone()).unwrap();
        f.new_dataset_builder().with_data(&a).create("vec").unwrap();
        f.new_dataset_builder()
            .with_data(&ndarray::arr1(&[1u64, 1, 1, 0]))
            .create("modalities_used")
            .unwrap();
    }
    let out = dir.path().join("o.h5");
    let args = [
        "--embeddings",
        s(&files[0]),
        s(&files[1]),
        "--query-file",
        s(&qfile),
        "--query-dataset",
        "vec",
        "--k",
        "4",
        "--output",
        s(&out),
    ];
    let err = assert_ok(&search(Launch::Mpirun(2), &args));
    assert_mentions(
        &err,
        &[
            "3 of 4 queries are not searched",
            "query 1: nonfinite",
            "query 2: zero_norm",
            "query 3: no_embedding",
        ],
    );
    let got = read_result(&out);
    assert_eq!(got.status, vec![0, 1, 2, 3]);
    assert_eq!(got.count, vec![4, 0, 0, 0]);
    assert!(got.rows[4..].iter().all(|&r| r == -1));
    let want = brute_force(&seen, e.row(30), Metric::Cosine, 4, None);
    assert_exact(&got, 0, &want, "cosine query 0");
    // Ids whose row has modalities_used = 0 are flagged the same way; if no query is usable,
    // the run fails.
    let id = e.ids[40].to_string();
    let args = by_ids(&[&files[0], &files[1]], &[&id], "4", &["--output", s(&out)]);
    let err = assert_fails(&search(Launch::Mpirun(2), &args));
    assert!(
        err.contains("no usable query vector: query 0 (object id 5120): no_embedding"),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "printed once:\n{err}");
}

mod bad_input {
    use super::*;

    fn setup() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempdir();
        let (files, _) = write_split(dir.path(), &exact_table());
        (dir, files)
    }

    fn fails(launch: Launch, args: &[&str]) -> String {
        let err = assert_fails(&search(launch, args));
        assert!(!err.contains("panicked"), "panic:\n{err}");
        err
    }

    #[test]
    fn unknown_ids_are_named() {
        let (dir, f) = setup();
        let out = dir.path().join("o.h5");
        let args = by_ids(
            &[&f[0], &f[1]],
            &["5000", "42", "-7"],
            "3",
            &["--output", s(&out)],
        );
        let err = fails(Launch::Mpirun(3), &args);
        assert!(err.contains("unknown query id(s) -7, 42"), "{err}");
        assert!(err.contains("emb-a.h5"), "{err}");
        assert_eq!(err.matches("error").count(), 1, "printed once:\n{err}");
        assert!(!out.exists());
    }

    #[test]
    fn dimension_mismatch_and_empty_or_missing_query_data() {
        let (dir, f) = setup();
        let out = dir.path().join("o.h5");
        let q = dir.path().join("q.h5");
        let run = |q: &Path, extra: &[&str]| {
            let mut args = vec!["--embeddings", s(&f[0]), s(&f[1]), "--query-file", s(q)];
            args.extend(["--k", "3", "--output", s(&out)]);
            args.extend(extra);
            fails(Launch::Mpirun(2), &args)
        };
        write_queries(&q, 8, &[1.0; 16], None);
        let err = run(&q, &[]);
        assert_mentions(&err, &["dimension mismatch", "D = 8", "D = 16"]);
        write_queries(&q, 16, &[], None);
        let err = run(&q, &[]);
        assert!(err.contains("is empty: no query vectors"), "{err}");
        write_queries(&q, 16, &[1.0; 16], None);
        let err = run(&q, &["--query-dataset", "nope"]);
        assert_mentions(&err, &["no dataset 'nope'", "q.h5"]);
        let err = run(&q, &["--exclude-self"]);
        assert!(
            err.contains("--exclude-self needs the query objects' ids"),
            "{err}"
        );
        let err = run(&dir.path().join("absent.h5"), &[]);
        assert!(err.contains("absent.h5"), "{err}");
    }

    #[test]
    fn empty_or_wrong_embedding_files() {
        let (dir, _) = setup();
        let out = dir.path().join("o.h5");
        let empty = dir.path().join("empty.h5");
        write_emb(
            &empty,
            &Emb {
                d: 16,
                x: vec![],
                ids: vec![],
                used: vec![],
            },
            true,
        );
        let args = by_ids(&[&empty], &["1"], "3", &["--output", s(&out)]);
        let err = fails(Launch::Mpirun(2), &args);
        assert_mentions(&err, &["hold no rows", "empty.h5"]);
        let odd = dir.path().join("odd.h5");
        {
            let f = hdf5::File::create(&odd).unwrap();
            f.new_dataset_builder()
                .with_data(&ndarray::arr1(&[1i64, 2]))
                .create("object_id")
                .unwrap();
        }
        let args = by_ids(&[&odd], &["1"], "3", &["--output", s(&out)]);
        let err = fails(Launch::Alone, &args);
        assert!(err.contains("no embedding dataset 'embedding'"), "{err}");
        // Two files of different D.
        let d8 = dir.path().join("d8.h5");
        write_emb(
            &d8,
            &Emb {
                d: 8,
                x: vec![1.0; 16],
                ids: vec![1, 2],
                used: vec![1, 1],
            },
            true,
        );
        let a = dir.path().join("emb-a.h5");
        let args = by_ids(&[&a, &d8], &["5000"], "3", &["--output", s(&out)]);
        let err = fails(Launch::Mpirun(2), &args);
        assert_mentions(&err, &["d8.h5", "[8]"]);
        let none = dir.path().join("none*.h5");
        let args = by_ids(&[&none], &["1"], "3", &["--output", s(&out)]);
        let err = fails(Launch::Alone, &args);
        assert!(err.contains("none*.h5"), "{err}");
    }

    #[test]
    fn output_and_argument_checks() {
        let (dir, f) = setup();
        let base = ["--embeddings", s(&f[0]), "--query-ids", "5000"];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend(extra);
            a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
        };
        let run = |a: Vec<String>, overwrite: bool| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            if overwrite {
                search(Launch::Alone, &a)
            } else {
                run_tool(BIN, Launch::Alone, &a)
            }
        };
        let out = dir.path().join("o.txt");
        let err = assert_fails(&run(with(&["--k", "3", "--output", s(&out)]), true));
        assert!(err.contains(".csv"), "{err}");
        let out = dir.path().join("o.csv");
        let err = assert_fails(&run(with(&["--k", "0", "--output", s(&out)]), true));
        assert!(err.contains("--k must be at least 1"), "{err}");
        // A file the tool did not write is never replaced, with or without --overwrite.
        std::fs::write(&out, "keep me").unwrap();
        for overwrite in [false, true] {
            let err = assert_fails(&run(with(&["--k", "2", "--output", s(&out)]), overwrite));
            assert!(err.contains("not written by an aion-hpc tool"), "{err}");
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
        }
        // One it wrote needs --overwrite to be replaced.
        std::fs::remove_file(&out).unwrap();
        assert_ok(&run(with(&["--k", "2", "--output", s(&out)]), true));
        let first = std::fs::read_to_string(&out).unwrap();
        assert!(first.starts_with("query,"));
        let err = assert_fails(&run(with(&["--k", "3", "--output", s(&out)]), false));
        assert!(err.contains("exists (pass --overwrite"), "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
        assert_ok(&run(with(&["--k", "3", "--output", s(&out)]), true));
        assert_ne!(std::fs::read_to_string(&out).unwrap(), first);
        // Neither --query-ids nor --query-file: clap's usage error (exit 2).
        let err = assert_fails(&run_tool(
            BIN,
            Launch::Alone,
            &["--embeddings", s(&f[0]), "--k", "2", "--output", s(&out)],
        ));
        assert!(err.contains("--query-ids"), "{err}");
    }
}

#[test]
fn search_sbatch_runs_two_ranks() {
    use crate::slurm::{assert_job_recorded, sbatch_completed, slurm_test_dir};
    let Some(dir) = slurm_test_dir() else {
        return;
    };
    let e = exact_table();
    let (files, seen) = write_split(dir.path(), &e);
    let out = dir.path().join("slurm.h5");
    let log = dir.path().join("job-%j.out");
    let rest = ["--metric", "l2", "--exclude-self", "--output", s(&out)];
    let mut args = vec!["slurm/search.sbatch"];
    args.extend(by_ids(&[&files[0], &files[1]], &["5030"], "7", &rest));
    let timeout = std::time::Duration::from_secs(120);
    let (job, log_text) = sbatch_completed("2", &log, &args, timeout);
    assert!(
        log_text.contains("aion-search 0/2]"),
        "the tool did not see 2 ranks:\n{log_text}"
    );
    let got = read_result(&out);
    let want = brute_force(&seen, e.row(10), Metric::L2, 7, Some(5030));
    assert_exact(&got, 0, &want, "sbatch");
    assert_job_recorded(&out, &job, 2);
}

#[test]
fn search_over_real_aion_embed_output_equals_brute_force() {
    // Embeddings of the pipeline fixture's catalogue (every modality) made by aion-embed.
    let (dir, model) = pipeline_model();
    let emb = dir.path().join("emb.h5");
    let cat = fixture("pipeline/catalog.h5");
    let a = io_args(&model, &cat, &emb);
    assert_ok(&run_tool(EMBED, Launch::Mpirun(2), &a));
    check_against_brute_force(&[&emb], 3);
    // The catalogue behind the embeddings has images: the result comes with the cutouts of
    // the queries and their neighbours.
    let out = dir.path().join("cutouts.h5");
    let ids: Vec<i64> = hdf5::File::open(&emb)
        .unwrap()
        .dataset("object_id")
        .unwrap()
        .read_raw()
        .unwrap();
    let (q0, q1) = (ids[0].to_string(), ids[3].to_string());
    let args = by_ids(&[&emb], &[&q0, &q1], "3", &["--output", s(&out)]);
    assert_ok(&search(Launch::Alone, &args));
    assert_self_describing(&out);
    assert_figure(
        &format!("{}.cutouts", out.display()),
        &[
            "query 1",
            "query 2",
            "neighbour 3",
            "cosine similarity",
            &format!("id {q0}"),
        ],
    );
    let svg = std::fs::read_to_string(format!("{}.cutouts.svg", out.display())).unwrap();
    assert_eq!(
        svg.matches("data:image/png;base64,").count(),
        2 * 4,
        "2 queries × (1 + 3) cutouts"
    );
}
