//! The model-crate half of the GPU check (`validation/gpu/run.sh`): the base-size image codec
//! and transformer on one LibTorch device and precision, on inputs that are the same on every
//! device, so that two runs (CPU f32, CUDA f32 / bf16) can be compared by
//! `validation/gpu/compare.py`; and, with `--bench-rows`, their throughput.
//!
//! ```text
//! cargo build --release -p aion-model --features tch --example gpu_check
//! gpu_check --model DIR --device cpu|cuda|cuda:N --precision f32|bf16 --rows N --out FILE
//!           [--bench-rows M] [--batch K]
//! ```
//!
//! `DIR` is a Hub-layout model with `codecs/image` and `codecs/FLUX_{G,R,I,Z}`
//! (`validation/gpu/random_model.py`). Inputs (seeded, generated on the host): `N` Legacy-Survey-
//! like objects (4 × 160 × 160 DES g, r, i, z cutouts: a galaxy-like blob plus noise, as
//! `validation/bench_embed.py` writes them; four fluxes), and fixed pseudo-random token ids.
//!
//! `FILE` (safetensors) holds `pre_quant` `[N, 5, 576]` (f32) and `tokens` `[N, 576]` of the image
//! codec on the cutouts, and `embedding` `[N, D]` and `logits.tok_z` `[N, 1, V]` of the
//! transformer on the fixed ids (image + four fluxes, 580 tokens; so the transformer is compared
//! on the same input even where a codec token differs). One JSON line on stdout gives the
//! device, precision and, with `--bench-rows M` (batches of `K`, after one warm-up batch):
//! seconds and objects/s of the image codec alone, of the encoder alone (fixed ids) with its
//! TFLOP/s, and of both end to end (cutouts uploaded, tokenized, embedded, embeddings back on the
//! host); on CUDA also the TFLOP/s of an 8192³ bf16 and f32 matrix product, in the same process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aion_model::codecs::image::{Band, ImageCodec};
use aion_model::codecs::scalar::ScalarCodec;
use aion_model::modality::by_token_key;
use aion_model::rng::Rng;
use aion_model::{Aion, AionConfig, DecoderMode, TokenInput};
use burn::backend::libtorch::{LibTorch, LibTorchDevice};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

const SIDE: usize = 160;
const BANDS: [&str; 4] = ["DES-G", "DES-R", "DES-I", "DES-Z"];
const FLUXES: [(&str, &str); 4] = [
    ("tok_flux_g", "FLUX_G"),
    ("tok_flux_r", "FLUX_R"),
    ("tok_flux_i", "FLUX_I"),
    ("tok_flux_z", "FLUX_Z"),
];

struct Args {
    model: PathBuf,
    device: LibTorchDevice,
    bf16: bool,
    rows: usize,
    bench_rows: usize,
    batch: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: PathBuf::new(),
        device: LibTorchDevice::Cpu,
        bf16: false,
        rows: 16,
        bench_rows: 0,
        batch: 64,
        out: PathBuf::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [key, value] = pair else {
            return Err(format!("{} has no value", pair[0]));
        };
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{key} {value}: {e}"))
        };
        match key.as_str() {
            "--model" => a.model = PathBuf::from(value),
            "--out" => a.out = PathBuf::from(value),
            "--rows" => a.rows = number()?,
            "--bench-rows" => a.bench_rows = number()?,
            "--batch" => a.batch = number()?.max(1),
            "--precision" => {
                a.bf16 = match value.as_str() {
                    "f32" => false,
                    "bf16" => true,
                    _ => return Err(format!("--precision {value}: f32 or bf16")),
                }
            }
            "--device" => {
                a.device = match value.as_str() {
                    "cpu" => LibTorchDevice::Cpu,
                    "cuda" => LibTorchDevice::Cuda(0),
                    v => v
                        .strip_prefix("cuda:")
                        .and_then(|i| i.parse().ok())
                        .map(LibTorchDevice::Cuda)
                        .ok_or_else(|| format!("--device {v}: cpu, cuda or cuda:N"))?,
                }
            }
            _ => return Err(format!("unknown option {key}")),
        }
    }
    if a.model.as_os_str().is_empty() || a.out.as_os_str().is_empty() {
        return Err("--model and --out are required".into());
    }
    Ok(a)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("gpu_check: {e}\nusage: gpu_check --model DIR --device cpu|cuda[:N] --precision f32|bf16 --rows N --out FILE [--bench-rows M] [--batch K]");
        std::process::exit(2)
    });
    if let LibTorchDevice::Cuda(i) = args.device
        && i as i64 >= tch::Cuda::device_count()
    {
        eprintln!(
            "gpu_check: cuda:{i} asked for, LibTorch sees {} CUDA device(s)",
            tch::Cuda::device_count()
        );
        std::process::exit(3)
    }
    let device = args.device;
    let result = if args.bf16 {
        run::<LibTorch<half::bf16>>(&args, device)
    } else {
        run::<LibTorch<f32>>(&args, device)
    };
    if let Err(e) = result {
        eprintln!("gpu_check: {e}");
        std::process::exit(1)
    }
}

/// Host-side inputs of `n` objects: cutouts `[n, 4, 160, 160]`, fluxes `[4][n]`, fixed ids.
struct Inputs {
    cutouts: Vec<f32>,
    fluxes: Vec<Vec<f32>>,
    image_ids: Vec<i64>,
    flux_ids: Vec<Vec<i64>>,
}

fn inputs(n: usize, image_vocab: usize, flux_vocab: usize) -> Inputs {
    let mut cutouts = Vec::with_capacity(n * 4 * SIDE * SIDE);
    for row in 0..n {
        let mut rng = Rng::new(7, 1, row as u64);
        let cx = 80.0 + 5.0 * rng.normal();
        let cy = 80.0 + 5.0 * rng.normal();
        for amp in [0.5, 1.5, 2.5, 3.5] {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let r = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                    cutouts.push((amp * (-r / 5.0).exp() + 0.02 * rng.normal()) as f32);
                }
            }
        }
    }
    // Each row from its own stream, so that row i is the same whatever n: the CPU run (n = rows)
    // and the timed device runs (n = bench rows) are compared on their first rows.
    let (mut fluxes, mut flux_ids) = (vec![Vec::new(); 4], vec![Vec::new(); 4]);
    let mut image_ids = Vec::with_capacity(n * 576);
    for row in 0..n {
        let mut rng = Rng::new(7, 2, row as u64);
        for band in &mut fluxes {
            band.push((rng.normal() + 1.0).exp() as f32);
        }
        image_ids.extend((0..576).map(|_| rng.below(image_vocab) as i64));
        for band in &mut flux_ids {
            band.push(rng.below(flux_vocab) as i64);
        }
    }
    Inputs {
        cutouts,
        fluxes,
        image_ids,
        flux_ids,
    }
}

/// The model pieces on one device.
struct Models<B: Backend> {
    image: ImageCodec<B>,
    fluxes: Vec<ScalarCodec>,
    aion: Aion<B>,
    bands: Vec<Band>,
}

impl<B: Backend> Models<B> {
    fn load(dir: &Path, device: &B::Device) -> aion_model::Result<Self> {
        let fluxes = FLUXES
            .iter()
            .map(|(key, folder)| {
                ScalarCodec::load(
                    by_token_key(key).expect("known key"),
                    &aion_model::hub::layout::codec(dir, folder),
                )
            })
            .collect::<aion_model::Result<_>>()?;
        Ok(Self {
            image: ImageCodec::load(&aion_model::hub::layout::codec(dir, "image"), device)?,
            fluxes,
            aion: Aion::load(dir, device)?,
            bands: Band::parse_list(&BANDS)?,
        })
    }

    fn cutouts(
        &self,
        inp: &Inputs,
        rows: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let per = 4 * SIDE * SIDE;
        let data = inp.cutouts[rows.start * per..rows.end * per].to_vec();
        Tensor::from_data(TensorData::new(data, [rows.len(), 4, SIDE, SIDE]), device)
    }

    /// Token inputs: `image` ids `[b, 576]` plus the four flux tokens.
    fn token_inputs(
        &self,
        image: Tensor<B, 2, Int>,
        fluxes: &[Vec<i64>],
        device: &B::Device,
    ) -> Vec<TokenInput<B>> {
        let b = image.dims()[0];
        let mut out = vec![TokenInput::new(
            by_token_key("tok_image").expect("known key"),
            image,
        )];
        for ((key, _), ids) in FLUXES.iter().zip(fluxes) {
            let t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [b, 1]), device);
            out.push(TokenInput::new(by_token_key(key).expect("known key"), t));
        }
        out
    }

    fn flux_tokens(&self, inp: &Inputs, rows: std::ops::Range<usize>) -> Vec<Vec<i64>> {
        self.fluxes
            .iter()
            .zip(&inp.fluxes)
            .map(|(c, v)| c.encode(&v[rows.clone()]))
            .collect()
    }

    fn fixed_ids(
        &self,
        inp: &Inputs,
        rows: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Vec<TokenInput<B>> {
        let ids = inp.image_ids[rows.start * 576..rows.end * 576].to_vec();
        let image = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows.len(), 576]), device);
        let fluxes: Vec<Vec<i64>> = inp
            .flux_ids
            .iter()
            .map(|v| v[rows.clone()].to_vec())
            .collect();
        self.token_inputs(image, &fluxes, device)
    }
}

fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

fn ints<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec().expect("i64 data")
}

fn run<B: Backend<Device = LibTorchDevice>>(
    args: &Args,
    device: LibTorchDevice,
) -> Result<(), String> {
    let t = Instant::now();
    let m = Models::<B>::load(&args.model, &device).map_err(|e| e.to_string())?;
    let load_s = t.elapsed().as_secs_f64();
    let image_vocab = by_token_key("tok_image").expect("known key").vocab;
    let flux_vocab = by_token_key("tok_flux_g").expect("known key").vocab;
    let n = args.rows;
    let inp = inputs(n.max(args.bench_rows), image_vocab, flux_vocab);

    // The comparison set: rows 0..n in one batch.
    let enc = m
        .image
        .encode_with_intermediates(m.cutouts(&inp, 0..n, &device), &m.bands)
        .map_err(|e| e.to_string())?;
    let pre_quant = floats(enc.pre_quant);
    let tokens = ints(enc.tokens);
    let fixed = m.fixed_ids(&inp, 0..n, &device);
    let embedding = floats(m.aion.embed(&fixed));
    let z = by_token_key("tok_z").expect("known key");
    let logits = m.aion.predict(&fixed, &[z], DecoderMode::Joint);
    let logits_z = floats(logits.into_iter().next().expect("one target"));
    let d = m.aion.config().dim;
    let file: Vec<(&str, Vec<usize>, Array)> = vec![
        (
            "pre_quant",
            vec![n, pre_quant.len() / n / 576, 576],
            Array::F32(pre_quant),
        ),
        ("tokens", vec![n, 576], Array::I64(tokens)),
        ("embedding", vec![n, d], Array::F32(embedding)),
        (
            "logits.tok_z",
            vec![n, 1, logits_z.len() / n],
            Array::F32(logits_z),
        ),
    ];
    write_safetensors(&args.out, file)?;

    let mut report = format!(
        "{{\"device\": \"{device:?}\", \"precision\": \"{}\", \"rows\": {n}, \"load_seconds\": {load_s:.3}",
        if args.bf16 { "bf16" } else { "f32" }
    );
    if args.bench_rows > 0 {
        report += &bench(&m, &inp, args, &device);
    }
    println!("{report}}}");
    Ok(())
}

/// Seconds of `f` over the bench rows in batches, after one warm-up batch.
fn timed(rows: usize, batch: usize, mut f: impl FnMut(std::ops::Range<usize>)) -> f64 {
    f(0..batch.min(rows));
    let t = Instant::now();
    for start in (0..rows).step_by(batch) {
        f(start..(start + batch).min(rows));
    }
    t.elapsed().as_secs_f64()
}

fn bench<B: Backend<Device = LibTorchDevice>>(
    m: &Models<B>,
    inp: &Inputs,
    args: &Args,
    device: &LibTorchDevice,
) -> String {
    let (rows, batch) = (args.bench_rows, args.batch);
    let codec = timed(rows, batch, |r| {
        let t = m
            .image
            .encode(m.cutouts(inp, r, device), &m.bands)
            .expect("encode");
        ints(t);
    });
    let encoder = timed(rows, batch, |r| {
        floats(m.aion.embed(&m.fixed_ids(inp, r, device)));
    });
    let end_to_end = timed(rows, batch, |r| {
        let image = m
            .image
            .encode(m.cutouts(inp, r.clone(), device), &m.bands)
            .expect("encode");
        let fluxes = m.flux_tokens(inp, r);
        floats(m.aion.embed(&m.token_inputs(image, &fluxes, device)));
    });
    let flops = encoder_flops(m.aion.config(), 580) * rows as f64;
    let mut s = format!(
        ", \"bench_rows\": {rows}, \"batch\": {batch}, \
         \"image_codec_seconds\": {codec:.4}, \"image_codec_objects_per_s\": {:.1}, \
         \"encoder_seconds\": {encoder:.4}, \"encoder_objects_per_s\": {:.1}, \
         \"encoder_tflop\": {:.3}, \"encoder_tflops\": {:.2}, \
         \"end_to_end_seconds\": {end_to_end:.4}, \"end_to_end_objects_per_s\": {:.1}",
        rows as f64 / codec,
        rows as f64 / encoder,
        flops / 1e12,
        flops / encoder / 1e12,
        rows as f64 / end_to_end
    );
    if let LibTorchDevice::Cuda(i) = *device {
        for (name, kind) in [("bf16", tch::Kind::BFloat16), ("f32", tch::Kind::Float)] {
            s += &format!(
                ", \"matmul_8192_{name}_tflops\": {:.1}",
                matmul_tflops(i, kind)
            );
        }
    }
    s
}

/// FLOPs of one object's encoder pass over `t` tokens: per block the q, k, v and output
/// projections, the MLP (three D × F matrices when gated) and the two attention products; then
/// `decoder_proj_context`.
fn encoder_flops(cfg: &AionConfig, t: usize) -> f64 {
    let (t, d) = (t as f64, cfg.dim as f64);
    let mlp = if cfg.gated_mlp {
        3.0 * d * (2.0 * cfg.mlp_ratio * d / 3.0).floor()
    } else {
        2.0 * d * cfg.mlp_ratio * d
    };
    let block = 2.0 * t * (4.0 * d * d + mlp) + 4.0 * t * t * d;
    cfg.encoder_depth as f64 * block + 2.0 * t * d * d
}

/// TFLOP/s of an 8192³ matrix product on CUDA device `i` (LibTorch's defaults: no TF32 for
/// f32), median-free: 10 products after 3 warm-ups, timed between device synchronisations.
fn matmul_tflops(i: usize, kind: tch::Kind) -> f64 {
    let n = 8192i64;
    let dev = tch::Device::Cuda(i);
    let a = tch::Tensor::randn([n, n], (kind, dev));
    let b = tch::Tensor::randn([n, n], (kind, dev));
    for _ in 0..3 {
        let _ = a.matmul(&b);
    }
    tch::Cuda::synchronize(i as i64);
    let t = Instant::now();
    for _ in 0..10 {
        let _ = a.matmul(&b);
    }
    tch::Cuda::synchronize(i as i64);
    10.0 * 2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64() / 1e12
}

enum Array {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn write_safetensors(path: &Path, arrays: Vec<(&str, Vec<usize>, Array)>) -> Result<(), String> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<(Dtype, Vec<u8>)> = arrays
        .iter()
        .map(|(_, _, a)| match a {
            Array::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Array::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let views = arrays
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), (dtype, b))| {
            TensorView::new(*dtype, shape.clone(), b)
                .map(|v| (name.to_string(), v))
                .map_err(|e| format!("{name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| format!("{}: {e}", path.display()))
}
