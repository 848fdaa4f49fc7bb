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

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::export::{NamedTensor, read_safetensors, write_safetensors};
use crate::fourm::Aion;
use crate::nn::Linear;
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

/// One adaptable linear layer: its state-dict path, kind and packing factor.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    path: String,
    kind: SiteKind,
    packed: usize,
}

fn sites<B: Backend>(model: &Aion<B>) -> Vec<Site> {
    let mut out = Vec::new();
    let mut add = |path: String, kind, packed| out.push(Site { path, kind, packed });
    for (i, b) in model.encoder.iter().enumerate() {
        add(format!("encoder.{i}.attn.qkv"), SiteKind::SelfAttn, 3);
        add(format!("encoder.{i}.attn.proj"), SiteKind::SelfAttn, 1);
        for fc in mlp_layers(b.mlp.fc3.is_some()) {
            add(format!("encoder.{i}.mlp.{fc}"), SiteKind::Mlp, 1);
        }
    }
    for (i, b) in model.decoder.iter().enumerate() {
        add(format!("decoder.{i}.self_attn.qkv"), SiteKind::SelfAttn, 3);
        add(format!("decoder.{i}.self_attn.proj"), SiteKind::SelfAttn, 1);
        add(format!("decoder.{i}.cross_attn.q"), SiteKind::CrossAttn, 1);
        add(format!("decoder.{i}.cross_attn.kv"), SiteKind::CrossAttn, 2);
        add(
            format!("decoder.{i}.cross_attn.proj"),
            SiteKind::CrossAttn,
            1,
        );
        for fc in mlp_layers(b.mlp.fc3.is_some()) {
            add(format!("decoder.{i}.mlp.{fc}"), SiteKind::Mlp, 1);
        }
    }
    out
}

fn mlp_layers(gated: bool) -> &'static [&'static str] {
    if gated {
        &["fc1", "fc2", "fc3"]
    } else {
        &["fc1", "fc2"]
    }
}

/// The linear layer at a state-dict path (`encoder.3.attn.qkv`, …).
fn linear_mut<'a, B: Backend>(model: &'a mut Aion<B>, path: &str) -> Option<&'a mut Linear<B>> {
    let parts: Vec<&str> = path.split('.').collect();
    let [stack, idx, module, layer] = parts.as_slice() else {
        return None;
    };
    let i: usize = idx.parse().ok()?;
    match (*stack, *module) {
        ("encoder", "attn") => {
            let a = &mut model.encoder.get_mut(i)?.attn;
            match *layer {
                "qkv" => Some(&mut a.qkv),
                "proj" => Some(&mut a.proj),
                _ => None,
            }
        }
        ("decoder", "self_attn") => {
            let a = &mut model.decoder.get_mut(i)?.self_attn;
            match *layer {
                "qkv" => Some(&mut a.qkv),
                "proj" => Some(&mut a.proj),
                _ => None,
            }
        }
        ("decoder", "cross_attn") => {
            let a = &mut model.decoder.get_mut(i)?.cross_attn;
            match *layer {
                "q" => Some(&mut a.q),
                "kv" => Some(&mut a.kv),
                "proj" => Some(&mut a.proj),
                _ => None,
            }
        }
        (s, "mlp") => {
            let m = if s == "encoder" {
                &mut model.encoder.get_mut(i)?.mlp
            } else {
                &mut model.decoder.get_mut(i)?.mlp
            };
            match *layer {
                "fc1" => Some(&mut m.fc1),
                "fc2" => Some(&mut m.fc2),
                "fc3" => m.fc3.as_mut(),
                _ => None,
            }
        }
        _ => None,
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
        let mut probe = model.clone();
        for s in sites(model) {
            let mut it = s.path.split('.');
            let (stack, i) = (
                it.next().unwrap_or(""),
                it.next().and_then(|v| v.parse().ok()),
            );
            if !cfg.targets.wants(s.kind) || !i.is_some_and(|i| chosen(stack, i)) {
                continue;
            }
            let lin = linear_mut(&mut probe, &s.path).expect("site exists");
            let [d_in, d_out] = lin.weight.dims();
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
    pub fn apply(&self, model: &Aion<B>) -> Aion<B> {
        let mut out = model.clone();
        for (a, path) in self.adapters.iter().zip(&self.paths) {
            let lin = linear_mut(&mut out, path).expect("adapter path exists in the model");
            let delta = a.down.val().matmul(a.up.val()).mul_scalar(self.scale);
            let w = lin.weight.val() + delta;
            lin.weight = Param::initialized(lin.weight.id, w);
        }
        out
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
        let mut probe = model.clone();
        let (mut adapters, mut paths) = (Vec::new(), Vec::new());
        let mut names: Vec<&str> = by_name
            .keys()
            .filter_map(|n| n.strip_suffix(".lora_down.weight"))
            .collect();
        names.sort_by_key(|p| sites(model).iter().position(|s| s.path == *p));
        for p in names {
            let (down, up) = (
                by_name[format!("{p}.lora_down.weight").as_str()],
                by_name
                    .get(format!("{p}.lora_up.weight").as_str())
                    .ok_or_else(|| bad(format!("{p}.lora_up.weight missing")))?,
            );
            let lin = linear_mut(&mut probe, p).ok_or_else(|| bad(format!("no layer {p}")))?;
            let [d_in, d_out] = lin.weight.dims();
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
