//! What a model directory holds (`aion-model info`) and a strict check of it without running
//! anything (`aion-model check`).
//!
//! The check loads every part with the loader the tools use (the one description of the
//! weights), so a tensor that is missing, renamed, reshaped, of a non-numeric type or left
//! over is reported by name; it also checks that a codec exists for every modality the
//! configuration declares, reads the extra-modality table (`modalities.json`), and records the
//! SHA-256 of every file. Every problem is collected, not only the first.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn_ndarray::NdArray;

use super::layout;
use super::random::RandomModel;
use crate::codecs::AnyCodec;
use crate::config::AionConfig;
use crate::fourm::Aion;
use crate::lora::LoraSet;
use crate::modality::{CodecKind, ModalityTable, extra::ExtraModalitiesFile};
use crate::probe::{PROBE_DIR, ProbeHead};
use crate::weights::sha256_file;

type Cpu = NdArray<f32>;

/// Tensor count, stored values and dtypes of a safetensors file, from its header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorStats {
    /// Number of tensors.
    pub tensors: usize,
    /// Number of stored values.
    pub values: u64,
    /// Tensors per dtype (`F32`, `I64`, …).
    pub dtypes: BTreeMap<String, usize>,
}

impl fmt::Display for TensorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtypes: Vec<String> = self
            .dtypes
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect();
        write!(
            f,
            "{} tensors ({}), {} values",
            self.tensors,
            dtypes.join(", "),
            human(self.values)
        )
    }
}

/// One codec folder the configuration needs (or that is present without being needed).
#[derive(Debug, Clone, PartialEq)]
pub struct CodecInfo {
    /// Folder name under `codecs/`.
    pub dir: String,
    /// Codec kind.
    pub kind: Option<CodecKind>,
    /// The configuration's modalities it serves (empty: present but not needed).
    pub modalities: Vec<String>,
    /// Its weights, when present.
    pub stats: Option<TensorStats>,
}

/// One file with its checksum.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSum {
    /// Path relative to the model directory.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// What [`describe`] and [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The directory.
    pub dir: PathBuf,
    /// The transformer's configuration, if readable.
    pub config: Option<AionConfig>,
    /// `model.safetensors`, if readable.
    pub transformer: Option<TensorStats>,
    /// Trainable parameters of the transformer (after a strict load; [`check`] only).
    pub parameters: Option<u64>,
    /// Token keys of the extra modalities (`modalities.json`).
    pub extra: Vec<String>,
    /// Codec folders.
    pub codecs: Vec<CodecInfo>,
    /// Set when the directory is a random model made by `aion-model random`.
    pub random: Option<RandomModel>,
    /// Whether it holds a probe head (`probe/`) or LoRA adapters (`adapter.safetensors`).
    pub heads: Vec<String>,
    /// Every file with its checksum ([`check`] only).
    pub files: Vec<FileSum>,
    /// Every problem found, each naming the file and what is wrong.
    pub problems: Vec<String>,
    /// Whether the weights were verified (by [`check`]).
    pub verified: bool,
}

/// Reads what `dir` holds from its JSON files and the safetensors headers (fast: no tensor is
/// read). Problems found on the way (unreadable files, codecs missing) are in the report.
pub fn describe(dir: &Path) -> Report {
    let mut r = Report {
        dir: dir.to_path_buf(),
        random: RandomModel::read(dir),
        ..Report::default()
    };
    if !dir.is_dir() {
        r.problems
            .push(format!("{} is not a directory", dir.display()));
        return r;
    }
    match ExtraModalitiesFile::read_dir(dir) {
        Ok(Some(f)) => r.extra = f.modalities.iter().map(|m| m.token_key.clone()).collect(),
        Ok(None) => {}
        Err(e) => r.problems.push(e.to_string()),
    }
    let modalities = ModalityTable::read_dir(dir).unwrap_or_else(|e| {
        r.problems.push(e.to_string());
        ModalityTable::builtin()
    });
    match AionConfig::from_file_in(layout::config(dir), modalities) {
        Ok(c) => r.config = Some(c),
        Err(e) => r.problems.push(e.to_string()),
    }
    match header_stats(&layout::weights(dir)) {
        Ok(s) => r.transformer = Some(s),
        Err(e) => r.problems.push(e),
    }
    r.codecs = codecs(dir, r.config.as_ref(), &mut r.problems);
    if dir.join(PROBE_DIR).is_dir() {
        r.heads.push(format!("probe head ({PROBE_DIR}/)"));
    }
    if dir.join("adapter.safetensors").is_file() {
        r.heads.push("LoRA adapters (adapter.safetensors)".into());
    }
    r
}

/// [`describe`], then loads every part strictly and records the checksum of every file.
pub fn check(dir: &Path) -> Report {
    let mut r = describe(dir);
    if !dir.is_dir() {
        return r;
    }
    r.verified = true;
    let dev = Default::default();
    let model = if r.config.is_some() {
        match Aion::<Cpu>::load(dir, &dev) {
            Ok(m) => {
                r.parameters = Some(m.param_names().parameter_count());
                Some(m)
            }
            Err(e) => {
                r.problems.push(e.to_string());
                None
            }
        }
    } else {
        None
    };
    for c in r.codecs.clone() {
        let (Some(_), true, Some(m)) = (c.kind, c.stats.is_some(), c.modalities.first()) else {
            continue;
        };
        let cfg = r
            .config
            .as_ref()
            .expect("needed codecs come from the configuration");
        let m = cfg.modalities.get(m).expect("a known modality");
        // Strictly, with the tools' loader.
        if let Err(e) = AnyCodec::<Cpu>::load(m, &layout::codec(dir, &c.dir), &dev) {
            r.problems.push(format!("codecs/{}: {e}", c.dir));
        }
    }
    if dir.join(PROBE_DIR).is_dir() {
        match ProbeHead::<Cpu>::load(dir, &dev) {
            Ok((_, cfg)) => {
                if let Some(c) = &r.config
                    && cfg.input_dim != c.dim
                {
                    r.problems.push(format!(
                        "{PROBE_DIR}/config.json: input_dim {} differs from the model's dim {}",
                        cfg.input_dim, c.dim
                    ));
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    let adapter = dir.join("adapter.safetensors");
    if let (true, Some(m)) = (adapter.is_file(), &model)
        && let Err(e) = LoraSet::load(&adapter, m, &dev)
    {
        r.problems.push(e.to_string());
    }
    r.files = files(dir, &mut r.problems);
    r
}

/// The codec folders the configuration needs, and those present besides.
fn codecs(dir: &Path, cfg: Option<&AionConfig>, problems: &mut Vec<String>) -> Vec<CodecInfo> {
    let mut needed: BTreeMap<String, (CodecKind, Vec<String>)> = BTreeMap::new();
    if let Some(cfg) = cfg {
        let mut mods = cfg.inputs();
        mods.extend(
            cfg.outputs()
                .into_iter()
                .filter(|m| !cfg.inputs().contains(m)),
        );
        for m in mods {
            let e = needed
                .entry(m.codec_dir.to_string())
                .or_insert_with(|| (m.codec, Vec::new()));
            e.1.push(m.token_key.to_string());
        }
    }
    let root = layout::codecs(dir);
    let mut out = Vec::new();
    for (name, (kind, modalities)) in &needed {
        let cdir = root.join(name);
        let stats = if !cdir.is_dir() {
            problems.push(format!(
                "codecs/{name}: missing (the codec of {})",
                modalities.join(", ")
            ));
            None
        } else {
            if !layout::config(&cdir).is_file() {
                problems.push(format!("codecs/{name}/config.json: missing"));
            }
            match header_stats(&layout::weights(&cdir)) {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push(e);
                    None
                }
            }
        };
        out.push(CodecInfo {
            dir: name.to_string(),
            kind: Some(*kind),
            modalities: modalities.clone(),
            stats,
        });
    }
    let mut present: Vec<String> = std::fs::read_dir(&root)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    present.sort();
    for name in present {
        if !needed.contains_key(name.as_str()) {
            let stats = header_stats(&layout::weights(&root.join(&name))).ok();
            out.push(CodecInfo {
                dir: name,
                kind: None,
                modalities: Vec::new(),
                stats,
            });
        }
    }
    out
}

/// Tensor statistics from a safetensors header (only the header is read). The error names the
/// file.
pub fn header_stats(path: &Path) -> Result<TensorStats, String> {
    let fail = |m: String| format!("{}: {m}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let size = f.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| fail("not a safetensors file (shorter than its header length)".into()))?;
    let n = u64::from_le_bytes(len);
    if n > size.saturating_sub(8) || n > 100 << 20 {
        return Err(fail(format!(
            "not a safetensors file (header of {n} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| fail(e.to_string()))?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| fail(format!("bad header: {e}")))?;
    let mut stats = TensorStats::default();
    let mut end = 0u64;
    for (name, v) in map.iter().filter(|(k, _)| *k != "__metadata__") {
        let shape: Vec<u64> = serde_json::from_value(v["shape"].clone())
            .map_err(|_| fail(format!("tensor {name} has no shape")))?;
        let offsets: [u64; 2] = serde_json::from_value(v["data_offsets"].clone())
            .map_err(|_| fail(format!("tensor {name} has no data offsets")))?;
        let dtype = v["dtype"].as_str().unwrap_or("?").to_string();
        stats.tensors += 1;
        stats.values += shape.iter().product::<u64>();
        *stats.dtypes.entry(dtype).or_default() += 1;
        end = end.max(offsets[1]);
    }
    if 8 + n + end != size {
        return Err(fail(format!(
            "{size} bytes, but its header describes {} (truncated or padded)",
            8 + n + end
        )));
    }
    Ok(stats)
}

/// Every file under `dir` (recursively, sorted) with its SHA-256.
fn files(dir: &Path, problems: &mut Vec<String>) -> Vec<FileSum> {
    let mut paths = Vec::new();
    walk(dir, &mut paths, problems);
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match (std::fs::metadata(&p), sha256_file(&p)) {
            (Ok(meta), Ok(sha256)) => out.push(FileSum {
                path: p.strip_prefix(dir).unwrap_or(&p).to_path_buf(),
                bytes: meta.len(),
                sha256,
            }),
            (Err(e), _) => problems.push(format!("{}: {e}", p.display())),
            (_, Err(e)) => problems.push(e.to_string()),
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out, problems);
        } else {
            out.push(p);
        }
    }
}

/// `1234567` → `1.23 M`.
fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model directory {}", self.dir.display())?;
        if let Some(m) = &self.random {
            writeln!(
                f,
                "  RANDOM WEIGHTS: made by `aion-model random --size {} --seed {}` (not AION-1)",
                m.size.name(),
                m.seed
            )?;
        }
        if let Some(c) = &self.config {
            writeln!(
                f,
                "  transformer: dim {}, {} + {} blocks, {} heads, MLP {} ({}{}{})",
                c.dim,
                c.encoder_depth,
                c.decoder_depth,
                c.num_heads,
                c.mlp_hidden(),
                if c.gated_mlp { "SwiGLU" } else { "GELU" },
                if c.qk_norm { ", qk-norm" } else { "" },
                if c.qkv_bias {
                    ", biases"
                } else {
                    ", no biases"
                },
            )?;
        }
        if let Some(s) = &self.transformer {
            writeln!(f, "  model.safetensors: {s}")?;
        }
        if let Some(p) = self.parameters {
            writeln!(f, "  parameters: {} ({p})", human(p))?;
        }
        if let Some(c) = &self.config {
            writeln!(
                f,
                "  inputs ({}): {}",
                c.domains_in.len(),
                c.domains_in.join(" ")
            )?;
            writeln!(
                f,
                "  outputs ({}): {}",
                c.domains_out.len(),
                c.domains_out.join(" ")
            )?;
        }
        if !self.extra.is_empty() {
            writeln!(
                f,
                "  extra modalities (modalities.json): {}",
                self.extra.join(" ")
            )?;
        }
        writeln!(f, "  codecs ({}):", self.codecs.len())?;
        for c in &self.codecs {
            let kind = c.kind.map_or("-".to_string(), |k| format!("{k:?}"));
            let serves = if c.modalities.is_empty() {
                "not used by this configuration".to_string()
            } else {
                c.modalities.join(" ")
            };
            let stats = c
                .stats
                .as_ref()
                .map_or("no weights".into(), ToString::to_string);
            writeln!(f, "    {:<22} {:<12} {stats}; {serves}", c.dir, kind)?;
        }
        for h in &self.heads {
            writeln!(f, "  also: {h}")?;
        }
        if !self.files.is_empty() {
            writeln!(f, "files (SHA-256, bytes):")?;
            for s in &self.files {
                writeln!(f, "  {}  {:>12}  {}", s.sha256, s.bytes, s.path.display())?;
            }
        }
        if self.problems.is_empty() {
            if self.verified {
                writeln!(
                    f,
                    "check: OK ({} files; every tensor, shape and codec as the model needs)",
                    self.files.len()
                )?;
            }
        } else {
            writeln!(f, "{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                for (i, line) in p.lines().enumerate() {
                    let lead = if i == 0 { "  - " } else { "    " };
                    writeln!(f, "{lead}{line}")?;
                }
            }
        }
        Ok(())
    }
}
