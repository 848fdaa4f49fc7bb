//! [`Initialiser`]: a [`Source`] that draws every tensor from its [`Init`] rule with a seeded
//! generator and records what it drew, as the state dict of a model made from scratch.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use super::names::ParamNames;
use super::source::{Init, IntType, Source};
use crate::codecs::plausible;
use crate::codecs::scalar_fit::quantile_table;
use crate::error::{Error, Result};
use crate::export::NamedTensor;
use crate::fourm::embeddings::{ordinal_table, sincos_1d, sincos_2d};
use crate::rng::{Rng, tags};

/// Standard deviation of token tables, modality embeddings and the mask token (4M's choice).
pub const EMBED_STD: f64 = 0.02;

/// A tensor as it will be written: its values as little-endian bytes (kept so, the values of a
/// base-size model are held once, not twice, until written).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// State-dict name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Stored type (`F32`, `I32` or `I64`).
    pub dtype: Dtype,
    /// Values, row-major, little-endian.
    pub bytes: Vec<u8>,
}

impl StoredTensor {
    fn floats(name: String, shape: &[usize], values: &[f32]) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            name,
            shape: shape.to_vec(),
            dtype: Dtype::F32,
            bytes,
        }
    }

    /// The values of a `F32` tensor.
    pub fn f32s(&self) -> Option<Vec<f32>> {
        (self.dtype == Dtype::F32).then(|| {
            self.bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }
}

/// Draws tensors from their [`Init`] rules (see the module docs).
///
/// Streams: draws come from the generator `Rng::new(seed, INIT, stream)` selected by
/// [`Source::stream`] (stream 0 at the start), each stream continuing where it stopped.
#[derive(Debug)]
pub struct Initialiser {
    seed: u64,
    ordinal_scalars: bool,
    streams: HashMap<u64, Rng>,
    current: u64,
    given_reservoirs: VecDeque<Vec<f32>>,
    last_reservoir: Vec<f32>,
    hub_prefixes: Vec<(String, String)>,
    out: Vec<StoredTensor>,
    names: ParamNames,
    label: PathBuf,
}

impl Initialiser {
    /// An initialiser drawing with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ordinal_scalars: false,
            streams: HashMap::new(),
            current: 0,
            given_reservoirs: VecDeque::new(),
            last_reservoir: Vec::new(),
            hub_prefixes: Vec::new(),
            out: Vec::new(),
            names: ParamNames::default(),
            label: PathBuf::from("<initial weights>"),
        }
    }

    /// Token tables of quantile / grid scalar modalities start as the ordinal sin-cos code of
    /// the bin rank instead of random values (see [`Init::TokenTable`]).
    pub fn ordinal_scalars(mut self, on: bool) -> Self {
        self.ordinal_scalars = on;
        self
    }

    /// Reservoirs to use, in the order the description takes them, instead of drawing
    /// plausible ones (writing a fitted codec).
    pub fn with_reservoirs(mut self, reservoirs: Vec<Vec<f32>>) -> Self {
        self.given_reservoirs = reservoirs.into();
        self
    }

    /// The tensors drawn so far, in the order they were taken.
    pub fn tensors(&self) -> &[StoredTensor] {
        &self.out
    }

    /// The tensors drawn, in the order they were taken.
    pub fn into_tensors(self) -> Vec<StoredTensor> {
        self.out
    }

    /// The float tensors drawn so far (every tensor of a transformer).
    ///
    /// # Panics
    /// If an integer tensor was drawn.
    pub fn into_float_tensors(self) -> Vec<NamedTensor> {
        self.out
            .into_iter()
            .map(|t| {
                let v = t
                    .f32s()
                    .unwrap_or_else(|| panic!("{} is not a float tensor", t.name));
                NamedTensor::new(t.name, t.shape, v)
            })
            .collect()
    }

    fn rng(&mut self) -> &mut Rng {
        let (seed, current) = (self.seed, self.current);
        self.streams
            .entry(current)
            .or_insert_with(|| Rng::new(seed, tags::INIT, current))
    }

    /// The name written for description name `name` (see [`Source::stored_prefix`]).
    fn written(&self, name: &str) -> String {
        for (prefix, hub) in &self.hub_prefixes {
            if let Some(rest) = name.strip_prefix(prefix.as_str()) {
                return format!("{hub}{rest}");
            }
        }
        name.to_string()
    }

    /// Values of a float tensor under its rule.
    fn draw(&mut self, name: &str, shape: &[usize], init: &Init) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let last = |i: usize| shape.get(i).copied().unwrap_or(1);
        match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { std } => self.normal(n, *std),
            Init::XavierUniform { packed } => {
                let (d_out, d_in) = (last(0), n / last(0).max(1));
                let bound = (6.0 / (d_in + d_out / packed) as f64).sqrt();
                self.uniform(n, bound)
            }
            Init::LeCunUniform => {
                let fan_in = (n / last(0).max(1)).max(1);
                self.uniform(n, (3.0 / fan_in as f64).sqrt())
            }
            Init::TokenTable { ordinal } => {
                if *ordinal && self.ordinal_scalars {
                    ordinal_table(last(0), last(1))
                } else {
                    self.normal(n, EMBED_STD)
                }
            }
            Init::SinCos2d { h, w } => sincos_2d(*h, *w, last(2)),
            Init::SinCos1d { n: positions } => sincos_1d(*positions, last(2)),
            Init::Floats(v) => v.clone(),
            Init::Reservoir(r) => {
                let values = match self.given_reservoirs.pop_front() {
                    Some(v) => v,
                    None => plausible::reservoir(self.rng(), r, n),
                };
                self.last_reservoir.clone_from(&values);
                values
            }
            Init::QuantileTable => quantile_table(&self.last_reservoir, n),
            Init::Ints(_) => panic!("{name}: integer values for a float tensor"),
        }
    }

    fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        let rng = self.rng();
        (0..n).map(|_| (rng.normal() * std) as f32).collect()
    }

    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        let rng = self.rng();
        (0..n)
            .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
            .collect()
    }

    fn draw_ints(name: &str, shape: &[usize], init: &Init) -> Vec<i64> {
        let n: usize = shape.iter().product();
        match init {
            Init::Zeros => vec![0; n],
            Init::Ints(v) => v.clone(),
            other => panic!("{name}: {other:?} for an integer tensor"),
        }
    }

    fn record_ints(&mut self, name: &str, shape: &[usize], stored: IntType, values: &[i64]) {
        let (dtype, bytes) = match stored {
            IntType::I32 => (
                Dtype::I32,
                values
                    .iter()
                    .flat_map(|&v| (v as i32).to_le_bytes())
                    .collect(),
            ),
            IntType::I64 => (
                Dtype::I64,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        self.out.push(StoredTensor {
            name: self.written(name),
            shape: shape.to_vec(),
            dtype,
            bytes,
        });
    }
}

impl Source for Initialiser {
    fn floats(&mut self, name: &str, shape: &[usize], init: &Init) -> Vec<f32> {
        let values = self.draw(name, shape, init);
        let t = StoredTensor::floats(self.written(name), shape, &values);
        self.out.push(t);
        values
    }

    fn ints(&mut self, name: &str, shape: &[usize], stored: IntType, init: &Init) -> Vec<i64> {
        let values = Self::draw_ints(name, shape, init);
        self.record_ints(name, shape, stored, &values);
        values
    }

    fn unused(&mut self, name: &str, shape: &[usize], init: &Init) {
        self.floats(name, shape, init);
    }

    fn optional(&mut self, name: &str, shape: &[usize], stored: IntType, init: &Init) {
        self.ints(name, shape, stored, init);
    }

    fn stored_prefix(&mut self, prefix: &str, hub_prefix: &str, write_hub: bool) {
        if write_hub {
            self.hub_prefixes
                .push((prefix.to_string(), hub_prefix.to_string()));
        }
    }

    fn alias(&mut self, _wanted: &str, _stored: &str, _shape: &[usize]) {}

    fn ignore_prefix(&mut self, _prefix: &str) {}

    fn stream(&mut self, stream: u64) {
        self.current = stream;
    }

    fn has_problems(&self) -> bool {
        false
    }

    fn label(&self) -> &Path {
        &self.label
    }

    fn names_mut(&mut self) -> &mut ParamNames {
        &mut self.names
    }
}

fn views(tensors: &[StoredTensor]) -> Vec<(&str, TensorView<'_>)> {
    tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .expect("tensor bytes match their shape");
            (t.name.as_str(), view)
        })
        .collect()
}

/// Serialises recorded tensors as safetensors bytes.
pub fn stored_bytes(tensors: &[StoredTensor]) -> Vec<u8> {
    safetensors::tensor::serialize(views(tensors), None).expect("safetensors serialisation")
}

/// Writes recorded tensors as a safetensors file, streamed (no second copy of the values), to
/// a temporary name renamed over `path`.
pub fn write_stored(path: &Path, tensors: &[StoredTensor]) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(t) = tensors
        .iter()
        .enumerate()
        .find(|(i, t)| tensors[..*i].iter().any(|o| o.name == t.name))
    {
        return Err(Error::Input(format!(
            "{}: tensor {} is described twice",
            path.display(),
            t.1.name
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    safetensors::tensor::serialize_to_file(views(tensors), None, &tmp)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(err)
}
