//! Writing weights: safetensors files (atomically) and the Hub state dict of an [`Aion`] model.
//!
//! [`state_dict`] is the inverse of [`Aion::from_weights`]: it produces every tensor the strict
//! loader takes, under the reference's names and in PyTorch layout (linear weights
//! `[out, in]`), so a model trained or fine-tuned here is saved as a normal Hub-layout model
//! directory that [`Aion::load`] and every tool load directly. The names are not spelled here:
//! they are the ones `from_weights` took, recorded in the model's
//! [`ParamNames`](crate::weights::ParamNames).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::fourm::Aion;
use crate::fs::write_atomic;
use crate::hub::layout;

/// A float32 tensor with its state-dict name, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// State-dict name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A named tensor (panics if `data` does not fill `shape`).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "data fills shape"
        );
        Self {
            name: name.into(),
            shape,
            data,
        }
    }

    /// From a burn tensor.
    pub fn from_tensor<B: Backend, const D: usize>(
        name: impl Into<String>,
        t: Tensor<B, D>,
    ) -> Self {
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 tensor data");
        Self::new(name, shape, data)
    }
}

/// Serialises float32 tensors (and optional string metadata) as safetensors bytes.
pub fn safetensors_bytes(
    tensors: &[NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let raw: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&raw)
        .map(|(t, bytes)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                .expect("tensor bytes match their shape");
            (t.name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize(views, metadata).expect("safetensors serialisation")
}

/// Writes float32 tensors as a safetensors file, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_atomic(path, &safetensors_bytes(tensors, metadata))
}

/// Reads every tensor of a safetensors file as float32 (any float dtype converted), with the
/// file's metadata.
pub fn read_safetensors(path: &Path) -> Result<(Vec<NamedTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |m: String| Error::SafeTensors {
        path: path.to_path_buf(),
        message: m,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let v = st.tensor(&name).map_err(|e| bad(e.to_string()))?;
        let data: Vec<f32> = match v.dtype() {
            Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => v
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => v
                .data()
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => return Err(bad(format!("tensor {name} has dtype {other:?}"))),
        };
        out.push(NamedTensor::new(name, v.shape().to_vec(), data));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Names of tensors the model takes from a weight file without keeping them (the decoder
/// `token_emb` tables, unused by `AION.forward`): [`state_dict`] writes zeros there unless
/// [`save`] is given the original file to copy them from.
pub fn unkept_tensor_names<B: Backend>(model: &Aion<B>) -> Vec<String> {
    model.param_names().unkept_names()
}

/// The model's state dict under the reference's names, in PyTorch layout (see the module docs).
pub fn state_dict<B: Backend>(model: &Aion<B>) -> Vec<NamedTensor> {
    model.param_names().state_dict(model)
}

/// Writes `dir/config.json` and `dir/model.safetensors` for `model` (atomically each). The
/// tensors the model does not keep ([`unkept_tensor_names`]) are copied from `carry_from`
/// (the model file it was loaded from) when given, so that re-saving a loaded model keeps
/// every stored value. Codecs and `modalities.json` are the caller's business.
pub fn save<B: Backend>(model: &Aion<B>, dir: &Path, carry_from: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tensors = state_dict(model);
    if let Some(src) = carry_from {
        let (stored, _) = read_safetensors(src)?;
        let unkept = unkept_tensor_names(model);
        for t in &mut tensors {
            if unkept.contains(&t.name)
                && let Some(s) = stored
                    .iter()
                    .find(|s| s.name == t.name && s.shape == t.shape)
            {
                t.data.clone_from(&s.data);
            }
        }
    }
    let cfg = serde_json::to_string_pretty(model.config()).expect("config serialises");
    write_atomic(&layout::config(dir), format!("{cfg}\n").as_bytes())?;
    write_safetensors(&layout::weights(dir), &tensors, None)
}
