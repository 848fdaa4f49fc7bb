//! Times the image codec on a batch of synthetic 160×160 DES cutouts (NdArray backend).
//!
//! ```text
//! cargo run --release -p aion-model --example image_codec_bench -- <codec dir> [batch] [runs] [gemm|native|both]
//! ```
//! `<codec dir>` holds `config.json` + `model.safetensors` (e.g. `codecs/image/` of a Hub
//! snapshot, or a random full-size codec written by the reference package).

use std::path::PathBuf;
use std::time::Instant;

use aion_model::codecs::image::{Band, ImageCodec};
use aion_model::nn::Conv2dAlgo;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

type B = NdArray<f32>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: image_codec_bench <codec dir> [batch] [runs]")?,
    );
    let batch: usize = args.next().map_or(Ok(4), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let algos = match args.next().as_deref() {
        None | Some("gemm") => vec![Conv2dAlgo::ShiftedMatmul],
        Some("native") => vec![Conv2dAlgo::Native],
        Some("both") => vec![Conv2dAlgo::ShiftedMatmul, Conv2dAlgo::Native],
        Some(other) => return Err(format!("unknown conv algorithm {other}").into()),
    };
    let dev = Default::default();
    let t = Instant::now();
    let mut codec = ImageCodec::<B>::load(&dir, &dev)?;
    println!(
        "loaded {} in {:.2}s ({:?})",
        dir.display(),
        t.elapsed().as_secs_f64(),
        codec.config()
    );
    let bands = Band::parse_list(&["DES-G", "DES-R", "DES-I", "DES-Z"])?;
    let n = batch * 4 * 160 * 160;
    // Deterministic sky-like noise (~0.05 nanomaggies).
    let values: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 0.1)
        .collect();
    let flux = Tensor::<B, 4>::from_data(TensorData::new(values, [batch, 4, 160, 160]), &dev);
    for algo in algos {
        codec.set_conv_algo(algo);
        let mut tokens = None;
        for r in 0..runs {
            let t = Instant::now();
            let tok = codec.encode(flux.clone(), &bands)?;
            let _ = tok.clone().into_data();
            println!(
                "{algo:?}: encode B={batch} run {r}: {:.2}s",
                t.elapsed().as_secs_f64()
            );
            tokens = Some(tok);
        }
        let tokens = tokens.ok_or("runs must be >= 1")?;
        let t = Instant::now();
        let _ = codec.decode(tokens, &bands)?.into_data();
        println!(
            "{algo:?}: decode B={batch}: {:.2}s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
