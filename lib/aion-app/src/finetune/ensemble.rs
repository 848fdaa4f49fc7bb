//! `[ensemble] members = N`: N models trained with seeds `seed`, `seed + 1`, … on the same split
//! (`<output>/member-<i>/`, each a complete run: resumable, with its own checkpoint, summary and
//! calibration), then exported as one ensemble (`crate::ensemble`): `ensemble.json`, the
//! calibration of the mixture posterior fitted on the validation split, and the test-split
//! evaluation of the mixture (`eval/`, `finetune.json`), which is what `aion-predict --model
//! <output>` computes.

use std::collections::BTreeMap;
use std::path::Path;

use aion_model::Aion;
use aion_model::codecs::scalar::ScalarCodec;
use aion_mpi::Session;
use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::config::{EnsembleSection, FinetuneConfig};
use super::data::Masking;
use super::prepare::{self, Setup};
use super::tokens::TokenTask;
use super::{FinetuneArgs, Outcome, codecs, export};
use crate::calibration::CalibrationFile;
use crate::collective::agree;
use crate::ensemble::{EnsembleFile, Mixture};
use crate::signals::StopFlag;

/// Runs `aion-finetune`: one model, or the members of an ensemble and then the ensemble.
pub fn run<B: AutodiffBackend>(
    args: &FinetuneArgs,
    session: &Session,
    stop: &StopFlag,
    device: B::Device,
) -> Result<Outcome> {
    let cfg = agree(session, prepare::effective_config(args))?;
    let n = cfg.ensemble.members;
    if n <= 1 {
        return prepare::run::<B>(args, cfg, session, stop, device);
    }
    let s = agree(session, prepare::setup(cfg.clone()))?;
    if !args.overwrite && agree(session, Ok(prepare::already_finished(&s.out, &s.hash)))? {
        if session.is_root() {
            log::info!(
                "{} already holds the finished ensemble of this configuration; nothing to do",
                s.out.display()
            );
        }
        return Ok(Outcome::Finished);
    }
    let r = if session.is_root() {
        prepare::prepare_output(&s, args.overwrite)
    } else {
        Ok(())
    };
    agree(session, r)?;
    let t0 = std::time::Instant::now();
    let members: Vec<String> = (0..n).map(|i| format!("member-{i}")).collect();
    for (i, m) in members.iter().enumerate() {
        if session.is_root() {
            log::info!(
                "ensemble member {} of {n}: {}",
                i + 1,
                s.out.join(m).display()
            );
        }
        let outcome = prepare::run::<B>(
            args,
            member_config(&cfg, i, &s.out.join(m)),
            session,
            stop,
            device.clone(),
        )?;
        if outcome != Outcome::Finished {
            return Ok(outcome);
        }
    }
    export_ensemble::<B>(session, &s, &members, &device, t0)?;
    Ok(Outcome::Finished)
}

/// Member `i`: seed `seed + i`, the ensemble's split, its own output directory.
fn member_config(cfg: &FinetuneConfig, i: usize, out: &Path) -> FinetuneConfig {
    let mut m = cfg.clone();
    m.seed = cfg.seed + i as u64;
    m.data.split.seed = Some(cfg.data.split.seed.unwrap_or(cfg.seed));
    m.output = Some(out.to_path_buf());
    m.ensemble = EnsembleSection { members: 1 };
    m
}

/// The codecs a member reads (from its directory), for every modality of the run with raw
/// values.
fn member_codecs(s: &Setup, dir: &Path) -> Result<BTreeMap<&'static str, ScalarCodec>> {
    s.needed
        .iter()
        .filter(|n| !n.tokens)
        .map(|n| Ok((n.modality.token_key, codecs::load(dir, n.modality)?)))
        .collect()
}

/// Mixture posteriors of the members on the validation and test rows, their calibration, and
/// the ensemble's files.
fn export_ensemble<B: AutodiffBackend>(
    session: &Session,
    s: &Setup,
    members: &[String],
    device: &B::Device,
    t0: std::time::Instant,
) -> Result<()> {
    let sp = agree(session, prepare::split(s))?;
    export::write_split(session, &s.out, &sp)?;
    let cols = prepare::read_columns(session, s)?;
    let inner = burn::tensor::Tensor::<B, 1>::zeros([1], device)
        .inner()
        .device();
    let masking = Masking {
        seed: s.cfg.seed,
        mask_ratio: 0.0,
        soft_sigma: 0.0,
    };
    // Per point target, the running mixture on this rank's block of the validation and test rows.
    let (mut val_mix, mut test_mix): (Vec<Mixture>, Vec<Mixture>) = (Vec::new(), Vec::new());
    let mut last = None;
    for m in members {
        let dir = s.out.join(m);
        let codec_map = agree(session, member_codecs(s, &dir))?;
        let data = prepare::modality_data(s, &cols, codec_map)?;
        let model = agree(
            session,
            Aion::<B::InnerBackend>::load(&dir, &inner)
                .with_context(|| format!("cannot load ensemble member {}", dir.display())),
        )?;
        let task = TokenTask::<B> {
            data: &data,
            masking,
            device: device.clone(),
        };
        let blocks = (
            task.block_logits(session, &model, &sp.val),
            task.block_logits(session, &model, &sp.test),
        );
        for (mix, b) in [(&mut val_mix, &blocks.0), (&mut test_mix, &blocks.1)] {
            mix.resize_with(b.logits.len(), Mixture::default);
            for (x, (t, l)) in mix.iter_mut().zip(&b.logits) {
                x.add(l, data[*t].modality.vocab);
            }
        }
        last = Some((data, blocks));
    }
    // Roles, truth and target codecs are the same in every member: the last one's serve.
    let (data, (mut val, mut test)) = last.expect("an ensemble has members");
    for (b, mix) in [(&mut val, &val_mix), (&mut test, &test_mix)] {
        for ((_, l), x) in b.logits.iter_mut().zip(mix) {
            *l = x.log_probs();
        }
    }
    let task = TokenTask::<B> {
        data: &data,
        masking,
        device: device.clone(),
    };
    let calibration = (s.cfg.calibration.method == "temperature" && !sp.val.is_empty())
        .then(|| task.calibrate(session, &sp.val, &val))
        .flatten();
    let preds: Vec<(String, Vec<[f64; 3]>)> = if sp.test.is_empty() {
        Vec::new()
    } else {
        task.predictions(session, &sp.test, &test, calibration.as_ref())
            .into_iter()
            .map(|p| (p.key.to_string(), p.rows))
            .collect()
    };
    let r = if session.is_root() {
        (|| -> Result<()> {
            let out = &s.out;
            EnsembleFile::new(members.to_vec()).write_dir(out)?;
            export::write_calibration(out, calibration.as_ref())?;
            let metrics = export::write_eval(out, &sp, &preds)?;
            summary(s, members, &sp, metrics, calibration.as_ref(), t0, session)
        })()
    } else {
        Ok(())
    };
    agree(session, r)
}

/// The ensemble's `finetune.json`.
fn summary(
    s: &Setup,
    members: &[String],
    sp: &super::data::Split,
    test: serde_json::Value,
    calibration: Option<&CalibrationFile>,
    t0: std::time::Instant,
    session: &Session,
) -> Result<()> {
    let v = json!({
        "tool": super::TOOL, "version": env!("CARGO_PKG_VERSION"), "git_commit": crate::provenance::GIT_COMMIT,
        "finished": true, "finished_at": crate::provenance::now_utc(), "config_hash": s.hash, "config": s.cfg,
        "ranks": session.size(), "members": members,
        "seconds": t0.elapsed().as_secs_f64(),
        "rows": { "train": sp.train.len(), "val": sp.val.len(), "test": sp.test.len() },
        "test": test, "calibration": calibration,
    });
    aion_model::export::write_atomic(
        &s.out.join(export::SUMMARY),
        format!("{}\n", serde_json::to_string_pretty(&v)?).as_bytes(),
    )?;
    Ok(())
}
