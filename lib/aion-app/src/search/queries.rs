//! Where the query vectors come from: object ids looked up in the embedding files, or a file of
//! vectors. Rank 0 reads the vectors and broadcasts them; every rank then holds the same
//! [`QuerySet`].

use std::collections::HashMap;
use std::path::Path;

use aion_io::Catalog;
use aion_io::catalog::{ColumnKind, ColumnValues};
use aion_mpi::{Session, block_range, blocks};
use anyhow::{Context, Result, bail, ensure};

use super::kernel::{Metric, Prepared, norm2};
use crate::collective::agree;
use crate::output::ObjectIds;

/// Why a query is not searched (`query_status` in the output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Searched.
    Ok = 0,
    /// The vector holds NaN or ±inf.
    NonFinite = 1,
    /// The vector is all zeros (no direction for cosine).
    Zero = 2,
    /// The query's row has `modalities_used == 0` (no embedding was computed for it).
    NoEmbedding = 3,
}

impl Status {
    /// Name used in logs and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NonFinite => "nonfinite",
            Self::Zero => "zero_norm",
            Self::NoEmbedding => "no_embedding",
        }
    }

    /// The code table, as JSON (attribute of `query_status`).
    pub fn table_json() -> String {
        serde_json::json!({"0": "ok", "1": "nonfinite", "2": "zero_norm", "3": "no_embedding"})
            .to_string()
    }
}

/// The queries of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySet {
    /// Dimension.
    pub d: usize,
    /// `n × d` row-major, as read.
    pub vectors: Vec<f32>,
    /// Object id of each query (−1 when unknown).
    pub object_ids: Vec<i64>,
    /// Whether the object ids are known (ids mode, or the query file has `object_id`).
    pub has_ids: bool,
    /// Global row of each query in the embedding table (−1 for vectors from a file).
    pub rows: Vec<i64>,
    /// Whether the query's row had a computed embedding (`modalities_used != 0`).
    pub embedded: Vec<bool>,
}

impl QuerySet {
    /// Number of queries.
    pub fn len(&self) -> usize {
        self.object_ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.object_ids.is_empty()
    }

    /// Status of each query for `metric`.
    pub fn status(&self, metric: Metric) -> Vec<Status> {
        (0..self.len())
            .map(|j| {
                let v = &self.vectors[j * self.d..(j + 1) * self.d];
                if !self.embedded[j] {
                    Status::NoEmbedding
                } else if !v.iter().all(|x| x.is_finite()) || !norm2(v).is_finite() {
                    Status::NonFinite
                } else if metric == Metric::Cosine && v.iter().all(|&x| x == 0.0) {
                    Status::Zero
                } else {
                    Status::Ok
                }
            })
            .collect()
    }

    /// The queries as the kernel wants them (normalised for cosine; inactive when not `Ok`).
    pub fn prepare(&self, metric: Metric, exclude_self: bool) -> Prepared {
        let status = self.status(metric);
        let d = self.d;
        let mut mat = self.vectors.clone();
        for (j, q) in mat.chunks_mut(d.max(1)).enumerate() {
            if status.get(j) != Some(&Status::Ok) {
                q.fill(0.0);
            } else if metric == Metric::Cosine {
                let n = q
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt();
                q.iter_mut().for_each(|v| *v = (f64::from(*v) / n) as f32);
            }
        }
        Prepared {
            d,
            norm2: mat.chunks(d.max(1)).map(norm2).collect(),
            mat,
            active: status.iter().map(|&s| s == Status::Ok).collect(),
            exclude: self
                .object_ids
                .iter()
                .map(|&id| exclude_self.then_some(id))
                .collect(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((self.d as u64).to_le_bytes());
        out.extend((self.len() as u64).to_le_bytes());
        out.push(u8::from(self.has_ids));
        for j in 0..self.len() {
            out.extend(self.object_ids[j].to_le_bytes());
            out.extend(self.rows[j].to_le_bytes());
            out.push(u8::from(self.embedded[j]));
        }
        for v in &self.vectors {
            out.extend(v.to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let (d, n) = (u64_at(0) as usize, u64_at(8) as usize);
        let has_ids = b[16] != 0;
        let mut at = 17;
        let (mut object_ids, mut rows, mut embedded) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            object_ids.push(u64_at(at) as i64);
            rows.push(u64_at(at + 8) as i64);
            embedded.push(b[at + 16] != 0);
            at += 17;
        }
        let vectors = b[at..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect::<Vec<_>>();
        assert_eq!(vectors.len(), n * d, "query broadcast size");
        Self {
            d,
            vectors,
            object_ids,
            has_ids,
            rows,
            embedded,
        }
    }

    /// Rank 0's query set on every rank (collective; `mine` is only used on rank 0). A failure
    /// on rank 0 becomes every rank's error.
    pub fn share(session: &Session, mine: Result<QuerySet>) -> Result<QuerySet> {
        let mine = if session.is_root() { mine } else { Ok(empty()) };
        let mine = agree(session, mine)?;
        let bytes = session.broadcast_bytes(&if session.is_root() {
            mine.encode()
        } else {
            Vec::new()
        });
        Ok(Self::decode(&bytes))
    }
}

fn empty() -> QuerySet {
    QuerySet {
        d: 0,
        vectors: Vec::new(),
        object_ids: Vec::new(),
        has_ids: false,
        rows: Vec::new(),
        embedded: Vec::new(),
    }
}

/// The embedding table: the files, their `embedding` dataset and where ids and flags come from.
pub struct Table {
    /// The files, concatenated.
    pub catalog: Catalog,
    /// Name of the embedding dataset.
    pub dataset: String,
    /// Dimension.
    pub d: usize,
    /// Where object ids come from.
    pub ids: ObjectIds,
    /// Whether any file has `modalities_used`.
    pub has_used: bool,
}

impl Table {
    /// Opens and checks the embedding files (same result on every rank).
    pub fn open(patterns: &[String], dataset: &str) -> Result<Self> {
        let mut catalog = Catalog::open(patterns)?;
        let wanted = [
            dataset.to_string(),
            "object_id".to_string(),
            "modalities_used".to_string(),
        ];
        catalog.size_by(&wanted)?;
        let info = catalog.info(dataset)?.with_context(|| {
            format!(
                "no embedding dataset '{dataset}' in {} (aion-embed writes `embedding`; \
                 another name can be given with --embedding-dataset)",
                catalog.paths_text()
            )
        })?;
        if let Some(i) = info.present_in.iter().position(|&p| !p) {
            bail!(
                "{}: no dataset '{dataset}' (every embedding file must hold one)",
                catalog.files()[i].display()
            );
        }
        ensure!(
            info.kind == ColumnKind::Float && info.row_shape.len() == 1 && info.row_shape[0] > 0,
            "dataset '{dataset}' of {} must be float vectors of shape (N, D), found rows of shape \
             {:?} ({:?})",
            catalog.paths_text(),
            info.row_shape,
            info.kind
        );
        ensure!(
            catalog.n_rows() > 0,
            "the embedding files hold no rows: {}",
            catalog.paths_text()
        );
        let has_used = match catalog.info("modalities_used")? {
            Some(i) => {
                ensure!(
                    i.kind == ColumnKind::Int && i.row_shape.is_empty(),
                    "dataset 'modalities_used' must be integers of shape (N,)"
                );
                true
            }
            None => false,
        };
        Ok(Self {
            d: info.row_shape[0],
            ids: ObjectIds::detect(&catalog)?,
            catalog,
            dataset: dataset.to_string(),
            has_used,
        })
    }

    /// Reads rows `rows`: vectors (row-major), object ids, and whether each row was embedded.
    pub fn read(&self, rows: std::ops::Range<usize>) -> Result<(Vec<f32>, Vec<i64>, Vec<bool>)> {
        let mut x = Vec::new();
        let (ids, used) = self.read_into(rows, &mut x)?;
        Ok((x, ids, used))
    }

    /// Like [`Table::read`], with the vectors read into `x` (its memory reused).
    pub fn read_into(
        &self,
        rows: std::ops::Range<usize>,
        x: &mut Vec<f32>,
    ) -> Result<(Vec<i64>, Vec<bool>)> {
        self.catalog.read_f32_into(&self.dataset, rows.clone(), x)?;
        let ids = self.ids.read(&self.catalog, &rows)?;
        let used = if self.has_used && !rows.is_empty() {
            let c = self.catalog.read("modalities_used", rows.clone())?;
            match c.values {
                // A file without the dataset counts as "every row embedded".
                ColumnValues::I64(v) => v
                    .iter()
                    .zip(&c.present)
                    .map(|(&m, &p)| !p || m != 0)
                    .collect(),
                _ => unreachable!("open() checked the kind"),
            }
        } else {
            vec![true; rows.len()]
        };
        Ok((ids, used))
    }
}

/// Rows per read while looking ids up.
const LOOKUP_ROWS: usize = 1 << 20;

/// Looks `wanted` object ids up in the table (collective): every rank scans the ids of its own
/// block, then all ranks combine the counts and first rows. Returns per wanted id the first
/// (smallest) global row holding it and how many rows hold it; an unknown id is an error.
pub fn lookup(session: &Session, table: &Table, wanted: &[i64]) -> Result<Vec<(usize, u64)>> {
    let mut slot: HashMap<i64, usize> = HashMap::new();
    for &id in wanted {
        let n = slot.len();
        slot.entry(id).or_insert(n);
    }
    let n = table.catalog.n_rows();
    let local = (|| -> Result<Vec<(u64, u64)>> {
        let mut found = vec![(u64::MAX, 0u64); slot.len()];
        for part in blocks(block_range(n, session.rank(), session.size()), LOOKUP_ROWS) {
            let ids = table.ids.read(&table.catalog, &part)?;
            for (i, id) in ids.iter().enumerate() {
                if let Some(&s) = slot.get(id) {
                    let f = &mut found[s];
                    f.0 = f.0.min((part.start + i) as u64);
                    f.1 += 1;
                }
            }
        }
        Ok(found)
    })();
    let local = agree(session, local)?;
    let bytes: Vec<u8> = local
        .iter()
        .flat_map(|&(r, c)| r.to_le_bytes().into_iter().chain(c.to_le_bytes()))
        .collect();
    let mut global = vec![(u64::MAX, 0u64); slot.len()];
    for part in session.all_gather_bytes(&bytes) {
        for (s, rec) in part.chunks_exact(16).enumerate() {
            let r = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            let c = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
            global[s].0 = global[s].0.min(r);
            global[s].1 += c;
        }
    }
    let mut unknown: Vec<i64> = slot
        .iter()
        .filter(|&(_, &s)| global[s].1 == 0)
        .map(|(&id, _)| id)
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let shown: Vec<String> = unknown.iter().take(20).map(i64::to_string).collect();
        let more = if unknown.len() > 20 {
            format!(" and {} more", unknown.len() - 20)
        } else {
            String::new()
        };
        bail!(
            "unknown query id(s) {}{more}: not in the {} of {}",
            shown.join(", "),
            match table.ids {
                ObjectIds::Dataset | ObjectIds::Strings => "object_id dataset",
                ObjectIds::RowIndex =>
                    "row range (these files have no integer object_id, so ids are row indices)",
            },
            table.catalog.paths_text()
        );
    }
    Ok(wanted
        .iter()
        .map(|id| {
            let (row, count) = global[slot[id]];
            (row as usize, count)
        })
        .collect())
}

/// Queries given as object ids (collective): looked up, then read by rank 0 and shared.
pub fn from_ids(session: &Session, table: &Table, ids: &[i64]) -> Result<QuerySet> {
    // The unknown-id error is the same on every rank; `agree` makes it print once.
    let found = agree(session, lookup(session, table, ids))?;
    if session.is_root() {
        for (id, &(row, count)) in ids.iter().zip(&found) {
            if count > 1 {
                log::warn!(
                    "object id {id} is in {count} rows; the first (row {row}) is the query vector, \
                     and --exclude-self drops all {count}"
                );
            }
        }
    }
    let read = (|| -> Result<QuerySet> {
        let mut q = empty();
        q.d = table.d;
        q.has_ids = true;
        for (&id, &(row, _)) in ids.iter().zip(&found) {
            let (x, _, used) = table
                .read(row..row + 1)
                .with_context(|| format!("reading the embedding of query id {id} (row {row})"))?;
            q.vectors.extend(x);
            q.object_ids.push(id);
            q.rows.push(row as i64);
            q.embedded.push(used[0]);
        }
        Ok(q)
    })();
    QuerySet::share(session, read)
}

/// Queries read from `path` (dataset `dataset`, `(Q, D)` floats or one `(D,)` vector; optional
/// `object_id` and `modalities_used`) by rank 0 and shared (collective).
pub fn from_file(session: &Session, path: &Path, dataset: &str, d: usize) -> Result<QuerySet> {
    let read = if session.is_root() {
        read_file(path, dataset, d)
    } else {
        Ok(empty())
    };
    QuerySet::share(session, read)
}

fn read_file(path: &Path, dataset: &str, d: usize) -> Result<QuerySet> {
    let where_ = || format!("query file {}", path.display());
    let mut cat = Catalog::open_as(&[path.display().to_string()], Some(aion_io::Format::Hdf5))
        .with_context(where_)?;
    ensure!(
        cat.has(dataset),
        "{}: no dataset '{dataset}' (name it with --query-dataset)",
        where_()
    );
    cat.size_by(&[dataset.to_string()]).with_context(where_)?;
    let info = cat
        .info(dataset)
        .with_context(where_)?
        .expect("dataset exists");
    ensure!(
        info.kind == ColumnKind::Float,
        "{}: dataset '{dataset}' holds {:?} values, expected floats",
        where_(),
        info.kind
    );
    let (n, qd) = match info.row_shape[..] {
        [] => (1, cat.n_rows()), // one vector of shape (D,)
        [qd] => (cat.n_rows(), qd),
        _ => bail!(
            "{}: dataset '{dataset}' has rows of shape {:?}, expected (Q, D) vectors",
            where_(),
            info.row_shape
        ),
    };
    ensure!(
        n > 0 && qd > 0,
        "{}: dataset '{dataset}' is empty: no query vectors",
        where_()
    );
    ensure!(
        qd == d,
        "dimension mismatch: the query vectors in {} have D = {qd}, the embeddings have D = {d}",
        path.display()
    );
    let vectors = match cat.read(dataset, 0..cat.n_rows())?.values {
        ColumnValues::F32(v) => v,
        _ => unreachable!("kind checked"),
    };
    let column = |name: &str| -> Result<Option<Vec<i64>>> {
        let Some(i) = cat.info(name)? else {
            return Ok(None);
        };
        let file = cat.files()[0].to_path_buf();
        let ds = hdf5::File::open(&file)?.dataset(name)?;
        ensure!(
            i.kind == ColumnKind::Int && i.row_shape.is_empty() && ds.shape() == [n],
            "{}: '{name}' must be integers of shape ({n},), one per query; found shape {:?}",
            where_(),
            ds.shape()
        );
        Ok(Some(ds.read_raw::<i64>()?))
    };
    let ids = column("object_id")?;
    let used = column("modalities_used")?;
    Ok(QuerySet {
        d,
        vectors,
        has_ids: ids.is_some(),
        object_ids: ids.unwrap_or_else(|| vec![-1; n]),
        rows: vec![-1; n],
        embedded: used.map_or_else(|| vec![true; n], |u| u.iter().map(|&m| m != 0).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_encoding_round_trips() {
        let q = QuerySet {
            d: 2,
            vectors: vec![1.0, f32::NAN, -3.0, 0.5],
            object_ids: vec![7, -1],
            has_ids: true,
            rows: vec![3, -1],
            embedded: vec![true, false],
        };
        let back = QuerySet::decode(&q.encode());
        assert_eq!(back.object_ids, q.object_ids);
        assert_eq!(back.rows, q.rows);
        assert_eq!(back.embedded, q.embedded);
        assert!(back.vectors[1].is_nan() && back.vectors[3] == 0.5);
    }

    #[test]
    fn statuses() {
        let q = QuerySet {
            d: 2,
            vectors: vec![1.0, 0.0, f32::INFINITY, 0.0, 0.0, 0.0, 1.0, 1.0],
            object_ids: vec![-1; 4],
            has_ids: false,
            rows: vec![-1; 4],
            embedded: vec![true, true, true, false],
        };
        let s = q.status(Metric::Cosine);
        assert_eq!(
            s,
            vec![
                Status::Ok,
                Status::NonFinite,
                Status::Zero,
                Status::NoEmbedding
            ]
        );
        assert_eq!(q.status(Metric::Dot)[2], Status::Ok);
        let p = q.prepare(Metric::Cosine, false);
        assert_eq!(p.active, vec![true, false, false, false]);
        assert_eq!(&p.mat[..2], &[1.0, 0.0]);
    }
}
