//! A full-size (base) transformer file: strict loading of ~1.2 GB of weights in the Hub layout.
//!
//! Needs `AION_BASE_MODEL_DIR` pointing to a folder made by `validation/make_base_model.py`
//! (not committed); without it the test says it was skipped and passes.

use std::path::PathBuf;
use std::time::Instant;

use aion_model::fourm::{Aion, DecoderMode, TokenInput};
use aion_model::modality::by_token_key;
use burn::tensor::{Int, Tensor};

use crate::fourm_loading::{Stored, edited_copy};

type Nd = burn::backend::NdArray<f32>;

fn load_error(dir: &std::path::Path) -> String {
    match Aion::<Nd>::load(dir, &Default::default()) {
        Ok(_) => panic!("loading {} must fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn rename(tensors: &mut [Stored], from: &str, to: &str) {
    let t = tensors.iter_mut().find(|t| t.name == from).unwrap();
    t.name = to.to_string();
}

#[test]
fn base_model_loads_strictly() {
    let Some(dir) = std::env::var_os("AION_BASE_MODEL_DIR").map(PathBuf::from) else {
        eprintln!(
            "skipped: set AION_BASE_MODEL_DIR to a folder made by validation/make_base_model.py"
        );
        return;
    };
    let device = Default::default();
    let t = Instant::now();
    let model = Aion::<Nd>::load(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "loaded {} in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    let cfg = model.config();
    assert_eq!((cfg.dim, cfg.encoder_depth, cfg.num_heads), (768, 12, 12));
    assert_eq!((model.embeddings.len(), model.decoder.len()), (39, 12));

    // A small forward pass runs and is finite.
    let ids = |key: &str, n: usize| {
        let m = by_token_key(key).unwrap();
        TokenInput::new(m, Tensor::<Nd, 2, Int>::ones([2, n], &device))
    };
    let inputs = [ids("tok_flux_g", 1), ids("tok_xp_bp", 55)];
    let z = by_token_key("tok_z").unwrap();
    let logits = model.predict(&inputs, &[z], DecoderMode::Joint).remove(0);
    assert_eq!(logits.dims(), [2, 1, 1025]);
    let finite: Vec<f32> = logits.into_data().to_vec().unwrap();
    assert!(finite.iter().all(|v| v.is_finite()));
    drop(model);

    let removed = "decoder.11.mlp.fc3.weight";
    let copy = edited_copy(&dir, "base-removed", |t| t.retain(|t| t.name != removed));
    let err = load_error(&copy);
    std::fs::remove_dir_all(&copy).ok();
    eprintln!("{err}");
    assert!(err.contains(&format!("missing tensor {removed}")), "{err}");

    let (from, to) = ("encoder.3.attn.qkv.weight", "encoder.3.attn.qkv_weight");
    let copy = edited_copy(&dir, "base-renamed", |t| rename(t, from, to));
    let err = load_error(&copy);
    std::fs::remove_dir_all(&copy).ok();
    eprintln!("{err}");
    assert!(err.contains(&format!("missing tensor {from}")), "{err}");
    assert!(err.contains(&format!("unexpected tensor {to}")), "{err}");
}
