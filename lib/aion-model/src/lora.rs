//! LoRA adapters for the transformer's linear layers.
//!
//! Port of the idea of `aion/fourm/lora_utils.py` (polymathic-aion 0.0.2, aion-spec §4): every
//! `nn.Linear` inside the selected module kinds (self-attention, cross-attention, MLP) gets
//! `y = W x + b + s · U (D x)` with `D: in → r·p`, `U: r·p → out`, `p = 3` for the packed `qkv`,
//! `2` for `kv`, else 1; `D ~ N(0, 1/r²)` (std `1/r`), `U = 0`, so training starts from the
//! unchanged model. The reference's `scale` is `s`; here `s = alpha / rank` (the usual LoRA
//! convention; `alpha = rank` gives the reference default `s = 1`).
//!
//! burn modules cannot be re-wired at run time, so instead of wrapping the layers the adapters
//! are applied to the weights: [`LoraSet::apply`] returns a copy of the model whose adapted
//! weights are `W + s · D·U` (burn's `[in, out]` layout, i.e. PyTorch's `W + s · U·D`), built
//! from the adapter tensors. Under autodiff the copy's weights are functions of the adapters, so the
//! gradient reaches `D` and `U` while the base model stays frozen; on a plain backend the copy
//! *is* the fused model. Mathematically this is the
//! same layer; only the float summation order differs. (`fuse_LoRA_into_linear` is
//! the reference's name for the fused form.)
//!
//! Adapter files use the reference's names (`encoder.0.attn.qkv.lora_down.weight` `[r·p, in]`,
//! `….lora_up.weight` `[out, r·p]`, PyTorch layout) with `rank`, `alpha` and `targets` in the
//! safetensors metadata.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::export::{NamedTensor, read_safetensors, write_safetensors};
use crate::fourm::Aion;
use crate::rng::{Rng, tags};

/// Which layers get adapters (the reference's `selfattn | crossattn | attn | mlp | all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraTargets {
    /// Self-attention `qkv` and `proj` (encoder and decoder).
    SelfAttn,
    /// Cross-attention `q`, `kv`, `proj` (decoder).
    CrossAttn,
    /// Both attention kinds.
    Attn,
    /// The MLPs (`fc1`, `fc2`, `fc3`).
    Mlp,
    /// Attention and MLPs.
    All,
}

impl LoraTargets {
    /// Parses the reference's identifiers (`selfattn`, `self_attention`, `crossattn`, `attn`,
    /// `attention`, `mlp`, `all`, `transformer`).
    pub fn parse(id: &str) -> Option<Self> {
        Some(match id.to_ascii_lowercase().as_str() {
            "selfattn" | "selfattention" | "self_attn" | "self_attention" => Self::SelfAttn,
            "crossattn" | "crossattention" | "cross_attn" | "cross_attention" => Self::CrossAttn,
            "attn" | "attention" => Self::Attn,
            "mlp" => Self::Mlp,
            "all" | "transformer" => Self::All,
            _ => return None,
        })
    }

    /// The canonical identifier.
    pub fn name(self) -> &'static str {
        match self {
            Self::SelfAttn => "selfattn",
            Self::CrossAttn => "crossattn",
            Self::Attn => "attn",
            Self::Mlp => "mlp",
            Self::All => "all",
        }
    }

    fn wants(self, kind: SiteKind) -> bool {
        matches!(
            (self, kind),
            (Self::All, _)
                | (Self::SelfAttn | Self::Attn, SiteKind::SelfAttn)
                | (Self::CrossAttn | Self::Attn, SiteKind::CrossAttn)
                | (Self::Mlp, SiteKind::Mlp)
        )
    }
}

/// Which blocks get adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraBlocks {
    /// Encoder block indices (`None` = all).
    pub encoder: Option<Vec<usize>>,
    /// Decoder block indices (`None` = all).
    pub decoder: Option<Vec<usize>>,
}

impl LoraBlocks {
    /// Every block.
    pub fn all() -> Self {
        Self {
            encoder: None,
            decoder: None,
        }
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r`.
    pub rank: usize,
    /// `alpha`; the scale is `alpha / rank`.
    pub alpha: f64,
    /// Layer kinds.
    pub targets: LoraTargets,
    /// Blocks.
    pub blocks: LoraBlocks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SiteKind {
    SelfAttn,
    CrossAttn,
    Mlp,
}

/// One adaptable linear layer: its state-dict path, kind, packing factor, weight parameter and
/// stored shape `[out, in]`.
#[derive(Debug, Clone, PartialEq)]
struct Site {
    path: String,
    kind: SiteKind,
    packed: usize,
    id: ParamId,
    shape: [usize; 2],
}

/// The linear layers of the encoder and decoder blocks (`<stack>.<i>.<module>.<layer>`), in
/// the order the model's description took them, with the packing of their initialisation
/// rule (3 for `qkv`, 2 for `kv`).
fn sites<B: Backend>(model: &Aion<B>) -> Vec<Site> {
    model
        .param_names()
        .linear_weights()
        .into_iter()
        .filter_map(|l| {
            let kind = match l.prefix.split('.').collect::<Vec<_>>()[..] {
                ["encoder", _, "attn", _] | ["decoder", _, "self_attn", _] => SiteKind::SelfAttn,
                ["decoder", _, "cross_attn", _] => SiteKind::CrossAttn,
                ["encoder" | "decoder", _, "mlp", _] => SiteKind::Mlp,
                _ => return None,
            };
            Some(Site {
                path: l.prefix,
                kind,
                packed: l.packed,
                id: l.id,
                shape: l.shape,
            })
        })
        .collect()
}

/// Adds `delta` (burn layout `[in, out]`) to the weight parameter of each adapted layer.
struct AddDeltas<B: Backend> {
    deltas: HashMap<ParamId, Tensor<B, 2>>,
}

impl<B: Backend> ModuleMapper<B> for AddDeltas<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.deltas.remove(&param.id) {
            Some(delta) => {
                let w = param.val();
                let delta: Tensor<B, D> = delta.reshape(w.dims());
                Param::initialized(param.id, w + delta)
            }
            None => param,
        }
    }
}

/// One adapter: `down` `[in, r·p]` and `up` `[r·p, out]` (burn layout).
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `lora_down` (transposed).
    pub down: Param<Tensor<B, 2>>,
    /// `lora_up` (transposed).
    pub up: Param<Tensor<B, 2>>,
}

/// The adapters of a model.
#[derive(Module, Debug)]
pub struct LoraSet<B: Backend> {
    /// Adapters, in site order.
    pub adapters: Vec<LoraAdapter<B>>,
    /// State-dict path of each adapted layer.
    pub paths: Vec<String>,
    /// `alpha / rank`.
    pub scale: f64,
    /// Rank.
    pub rank: usize,
    /// `alpha`.
    pub alpha: f64,
    /// Canonical target identifier.
    pub targets: String,
}

impl<B: Backend> LoraSet<B> {
    /// Fresh adapters for `model` (`down ~ N(0, 1/r²)`, `up = 0`), seeded.
    pub fn init(model: &Aion<B>, cfg: &LoraConfig, seed: u64, device: &B::Device) -> Result<Self> {
        if cfg.rank == 0 {
            return Err(Error::Input("LoRA rank must be at least 1".into()));
        }
        let chosen = |stack: &str, i: usize| {
            let list = if stack == "encoder" {
                &cfg.blocks.encoder
            } else {
                &cfg.blocks.decoder
            };
            list.as_ref().is_none_or(|l| l.contains(&i))
        };
        let mut rng = Rng::new(seed, tags::INIT, 0x10_4a);
        let mut adapters = Vec::new();
        let mut paths = Vec::new();
        for s in sites(model) {
            let mut it = s.path.split('.');
            let (stack, i) = (
                it.next().unwrap_or(""),
                it.next().and_then(|v| v.parse().ok()),
            );
            if !cfg.targets.wants(s.kind) || !i.is_some_and(|i| chosen(stack, i)) {
                continue;
            }
            let [d_out, d_in] = s.shape;
            let r = cfg.rank * s.packed;
            if r > d_in.min(d_out) {
                return Err(Error::Input(format!(
                    "LoRA rank {} × {} exceeds the width {} of {}",
                    cfg.rank,
                    s.packed,
                    d_in.min(d_out),
                    s.path
                )));
            }
            let std = 1.0 / cfg.rank as f64;
            let down: Vec<f32> = (0..d_in * r).map(|_| (rng.normal() * std) as f32).collect();
            adapters.push(LoraAdapter {
                down: Param::from_tensor(Tensor::from_data(
                    TensorData::new(down, [d_in, r]),
                    device,
                )),
                up: Param::from_tensor(Tensor::zeros([r, d_out], device)),
            });
            paths.push(s.path);
        }
        if adapters.is_empty() {
            return Err(Error::Input(
                "the LoRA targets and blocks select no layer".into(),
            ));
        }
        Ok(Self {
            adapters,
            paths,
            scale: cfg.alpha / cfg.rank as f64,
            rank: cfg.rank,
            alpha: cfg.alpha,
            targets: cfg.targets.name().into(),
        })
    }

    /// The model with every adapted weight replaced by `W + s·D·U` (see the module docs).
    ///
    /// # Panics
    /// If an adapter's path is not a linear layer of `model`.
    pub fn apply(&self, model: &Aion<B>) -> Aion<B> {
        let sites = sites(model);
        let deltas = self
            .adapters
            .iter()
            .zip(&self.paths)
            .map(|(a, path)| {
                let site = sites
                    .iter()
                    .find(|s| s.path == *path)
                    .expect("adapter path exists in the model");
                let delta = a.down.val().matmul(a.up.val()).mul_scalar(self.scale);
                (site.id, delta)
            })
            .collect();
        model.clone().map(&mut AddDeltas { deltas })
    }

    /// The adapters under the reference's names (PyTorch layout) with their metadata.
    pub fn tensors(&self) -> (Vec<NamedTensor>, HashMap<String, String>) {
        let mut out = Vec::new();
        for (a, path) in self.adapters.iter().zip(&self.paths) {
            out.push(NamedTensor::from_tensor(
                format!("{path}.lora_down.weight"),
                a.down.val().transpose(),
            ));
            out.push(NamedTensor::from_tensor(
                format!("{path}.lora_up.weight"),
                a.up.val().transpose(),
            ));
        }
        let meta = HashMap::from([
            ("format".to_string(), "aion-hpc/lora".to_string()),
            ("rank".to_string(), self.rank.to_string()),
            ("alpha".to_string(), self.alpha.to_string()),
            ("targets".to_string(), self.targets.clone()),
        ]);
        (out, meta)
    }

    /// Writes the adapters as a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (t, meta) = self.tensors();
        write_safetensors(path, &t, Some(meta))
    }

    /// Reads adapters written by [`save`](Self::save) for `model` (every adapted layer must
    /// exist with matching widths).
    pub fn load(path: &Path, model: &Aion<B>, device: &B::Device) -> Result<Self> {
        let (tensors, meta) = read_safetensors(path)?;
        let bad = |m: String| Error::config(path, m);
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("metadata {k} missing")))
        };
        let rank: usize = get("rank")?.parse().map_err(|_| bad("bad rank".into()))?;
        let alpha: f64 = get("alpha")?.parse().map_err(|_| bad("bad alpha".into()))?;
        let targets = get("targets")?;
        let by_name: HashMap<&str, &NamedTensor> =
            tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let sites = sites(model);
        let (mut adapters, mut paths) = (Vec::new(), Vec::new());
        let mut names: Vec<&str> = by_name
            .keys()
            .filter_map(|n| n.strip_suffix(".lora_down.weight"))
            .collect();
        names.sort_by_key(|p| sites.iter().position(|s| s.path == *p));
        for p in names {
            let (down, up) = (
                by_name[format!("{p}.lora_down.weight").as_str()],
                by_name
                    .get(format!("{p}.lora_up.weight").as_str())
                    .ok_or_else(|| bad(format!("{p}.lora_up.weight missing")))?,
            );
            let site = sites
                .iter()
                .find(|s| s.path == p)
                .ok_or_else(|| bad(format!("no layer {p}")))?;
            let [d_out, d_in] = site.shape;
            let r = down.shape[0];
            if down.shape != [r, d_in] || up.shape != [d_out, r] {
                return Err(bad(format!(
                    "{p}: adapter shapes do not fit [{d_out}, {d_in}]"
                )));
            }
            let t = |x: &NamedTensor, shape: [usize; 2]| -> Tensor<B, 2> {
                Tensor::<B, 2>::from_data(TensorData::new(x.data.clone(), shape), device)
                    .transpose()
            };
            adapters.push(LoraAdapter {
                down: Param::from_tensor(t(down, [r, d_in])),
                up: Param::from_tensor(t(up, [d_out, r])),
            });
            paths.push(p.to_string());
        }
        if tensors.len() != 2 * paths.len() {
            return Err(bad(
                "unexpected tensors besides lora_down / lora_up pairs".into()
            ));
        }
        Ok(Self {
            adapters,
            paths,
            scale: alpha / rank as f64,
            rank,
            alpha,
            targets,
        })
    }
}
