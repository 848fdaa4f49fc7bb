//! The 4M transformer's weight files: strict loading (missing, renamed, extra, mis-shaped
//! tensors), the shared `mod_emb` under either name, input checks, and training (gradients).
//! NdArray only: these are about files and module structure, not numerics.

use std::path::{Path, PathBuf};

use aion_model::fourm::{Aion, DecoderMode, TokenInput};
use aion_model::modality::ModalityInfo;
use burn::tensor::{Int, Tensor};

use crate::fourm::{PREDICT_KEYS, ROWS, check, hub_dir, inputs, io, load, modality};

type Nd = burn::backend::NdArray<f32>;

/// One tensor of a safetensors file, owned.
pub(crate) struct Stored {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Reads every tensor of a safetensors file.
pub(crate) fn read_all(path: &Path) -> Vec<Stored> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| Stored {
            name,
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            bytes: v.data().to_vec(),
        })
        .collect()
}

/// Writes tensors as a safetensors file.
pub(crate) fn write_all(path: &Path, tensors: &[Stored]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|t| {
            let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes);
            (t.name.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A fresh directory under the system temp dir.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("aion-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies a Hub folder with its tensors edited; returns the copy's directory.
pub(crate) fn edited_copy(src: &Path, tag: &str, edit: impl FnOnce(&mut Vec<Stored>)) -> PathBuf {
    let dir = temp_dir(tag);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut tensors = read_all(&src.join("model.safetensors"));
    edit(&mut tensors);
    write_all(&dir.join("model.safetensors"), &tensors);
    dir
}

/// `Aion::load` of an edited copy; the copy is removed afterwards.
fn load_edited(variant: &str, edit: impl FnOnce(&mut Vec<Stored>)) -> Result<Aion<Nd>, String> {
    let dir = edited_copy(&hub_dir(variant), "fourm", edit);
    let result = Aion::<Nd>::load(&dir, &Default::default()).map_err(|e| e.to_string());
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// The error of loading an edited copy (which must fail).
fn load_error(variant: &str, edit: impl FnOnce(&mut Vec<Stored>)) -> String {
    match load_edited(variant, edit) {
        Ok(_) => panic!("loading an edited copy of {variant} must fail"),
        Err(e) => e,
    }
}

fn rename(tensors: &mut [Stored], from: &str, to: &str) {
    let t = tensors.iter_mut().find(|t| t.name == from).unwrap();
    t.name = to.to_string();
}

#[test]
fn loading_fails_on_a_missing_tensor() {
    for name in [
        "decoder.1.cross_attn.kv.weight",
        "encoder_embeddings.catalog.pos_emb",
    ] {
        let err = load_error("swiglu_qknorm_nobias", |t| t.retain(|t| t.name != name));
        eprintln!("{err}");
        assert!(err.contains(&format!("missing tensor {name}")), "{err}");
    }
}

#[test]
fn loading_fails_on_a_renamed_tensor() {
    let (from, to) = ("encoder.0.mlp.fc3.weight", "encoder.0.mlp.fc3.weights");
    let err = load_error("swiglu_qknorm_nobias", |t| rename(t, from, to));
    assert!(err.contains(&format!("missing tensor {from}")), "{err}");
    assert!(err.contains(&format!("unexpected tensor {to}")), "{err}");
}

#[test]
fn loading_fails_on_an_extra_or_misshaped_tensor() {
    let err = load_error("gelu_bias", |t| {
        let copy = Stored {
            name: "decoder_embeddings.tok_z.extra".into(),
            dtype: t[0].dtype,
            shape: t[0].shape.clone(),
            bytes: t[0].bytes.clone(),
        };
        t.push(copy);
    });
    assert!(
        err.contains("unexpected tensor decoder_embeddings.tok_z.extra"),
        "{err}"
    );
    // The no-bias variant has no qkv bias: a file that has one is not that model.
    let err = load_error("swiglu_qknorm_nobias", |t| {
        let bytes = vec![0u8; 3 * 64 * 4];
        t.push(Stored {
            name: "encoder.1.attn.qkv.bias".into(),
            dtype: safetensors::Dtype::F32,
            shape: vec![192],
            bytes,
        });
    });
    assert!(
        err.contains("unexpected tensor encoder.1.attn.qkv.bias"),
        "{err}"
    );
    // Same bytes, transposed shape.
    let name = "decoder.0.mlp.fc2.weight";
    let err = load_error("gelu_bias", |t| {
        let t = t.iter_mut().find(|t| t.name == name).unwrap();
        t.shape.reverse();
    });
    assert!(
        err.contains(&format!(
            "tensor {name} has shape [256, 64], expected [64, 256]"
        )),
        "{err}"
    );
}

/// The shared `mod_emb` may be stored under the encoder name instead of the decoder name, or
/// under both (the decoder's wins, as in the reference's `load_state_dict`).
#[test]
fn shared_modality_embedding_under_either_name() {
    let variant = "swiglu_qknorm_nobias";
    let device = Default::default();
    let mut io = io(variant);
    let inp = inputs::<Nd>(&mut io, &PREDICT_KEYS, true, 0..ROWS, &device);
    let z = modality("tok_z");
    let (enc, dec) = (
        "encoder_embeddings.tok_z.mod_emb",
        "decoder_embeddings.tok_z.mod_emb",
    );
    let model = load_edited(variant, |t| rename(t, dec, enc)).unwrap();
    let got = model.predict(&inp, &[z], DecoderMode::Joint).remove(0);
    check(
        "tok_z, mod_emb stored as encoder's",
        got,
        &mut io,
        "predict.z",
    );
    let model = load_edited(variant, |t| {
        let i = t.iter().position(|t| t.name == dec).unwrap();
        let mut noise = t[i].bytes.clone();
        noise.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        let (dtype, shape) = (t[i].dtype, t[i].shape.clone());
        let name = enc.to_string();
        t.push(Stored {
            name,
            dtype,
            shape,
            bytes: noise,
        });
    })
    .unwrap();
    let got = model.predict(&inp, &[z], DecoderMode::Joint).remove(0);
    check("tok_z, mod_emb stored twice", got, &mut io, "predict.z");
}

#[test]
fn invalid_inputs_are_reported() {
    let model = load::<Nd>("gelu_bias", &Default::default());
    let device = Default::default();
    let ids = |n: usize, v: i64| Tensor::<Nd, 2, Int>::full([2, n], v, &device);
    let err = |inp: Vec<TokenInput<Nd>>| model.check_inputs(&inp).unwrap_err().to_string();
    assert!(err(vec![]).contains("no input"));
    let wrong_len = TokenInput::new(modality("tok_image"), ids(575, 0));
    assert!(err(vec![wrong_len]).contains("575 tokens"));
    let not_input = TokenInput::new(modality("tok_flux_r"), ids(1, 0));
    assert!(err(vec![not_input]).contains("tok_flux_r"));
    let out_of_vocab = TokenInput::new(modality("tok_z"), ids(1, 1025));
    assert!(err(vec![out_of_vocab]).contains("1025"));
    let twice = vec![
        TokenInput::new(modality("tok_z"), ids(1, 0)),
        TokenInput::new(modality("tok_z"), ids(1, 0)),
    ];
    assert!(err(twice).contains("twice"));
    let terr = |t: &[&'static ModalityInfo]| model.check_targets(t).unwrap_err().to_string();
    assert!(terr(&[modality("catalog")]).contains("catalog"));
    assert!(terr(&[modality("tok_xp_bp")]).contains("domains_out"));
    assert!(terr(&[]).contains("no target"));
}

/// The modules train: gradients reach the weights, not the LayerNorm bias buffers of a
/// `norm_bias = false` model (constants in the reference).
#[test]
fn gradients_reach_the_parameters() {
    type Ad = burn::backend::Autodiff<Nd>;
    let device = Default::default();
    let model = load::<Ad>("swiglu_qknorm_nobias", &device);
    let mut io = io("swiglu_qknorm_nobias");
    let inp = inputs::<Ad>(&mut io, &PREDICT_KEYS, true, 0..ROWS, &device);
    let logits = model.predict(&inp, &[modality("tok_z")], DecoderMode::Joint);
    let grads = logits[0].clone().sum().backward();
    let norm = |g: Option<Tensor<Nd, 2>>| g.map(|g| g.abs().sum().into_scalar());
    let qkv = norm(model.encoder[0].attn.qkv.weight.val().grad(&grads));
    let z_head = model
        .embedding(modality("tok_z"))
        .unwrap()
        .to_logits
        .as_ref()
        .unwrap();
    let head = norm(z_head.weight.val().grad(&grads));
    eprintln!("|grad| encoder.0.attn.qkv {qkv:?}, tok_z to_logits {head:?}");
    assert!(qkv.is_some_and(|g| g > 0.0) && head.is_some_and(|g| g > 0.0));
    let mask_token = model.mask_token.val().grad(&grads);
    assert!(mask_token.is_some_and(|g| g.abs().sum().into_scalar() > 0.0));
    let bias = model.encoder[0]
        .norm1
        .bias
        .as_ref()
        .unwrap()
        .val()
        .grad(&grads);
    assert!(bias.is_none(), "a bias buffer must not get a gradient");
}
