//! The two kinds of training runs: a probe head on frozen embeddings, and token prediction
//! (masked, full, LoRA).

use aion_model::Aion;
use aion_model::lora::LoraSet;
use aion_model::probe::{ProbeConfig, ProbeTask};
use anyhow::Result;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::Outcome;
use super::config::Mode;
use super::data::Masking;
use super::export::{self, Trained};
use super::log::TrainLog;
use super::probe::{ProbeTrain, init_head, pooled_embeddings, targets};
use super::setup::{Context, Run, Setup};
use super::tokens::{TokenTask, Trainee};
use super::trainer::{Ending, Task, train};

/// Mode `probe`: embeddings of the frozen model, then a head trained on them.
pub fn probe<B: AutodiffBackend>(
    run: &Run<'_>,
    model: Aion<B>,
    device: B::Device,
) -> Result<Outcome> {
    let s = run.setup;
    let p = s
        .cfg
        .probe
        .as_ref()
        .expect("validated: probe mode has [probe]");
    let inner = model.valid();
    let dev_inner = Tensor::<B, 1>::zeros([1], &device).inner().device();
    let emb = pooled_embeddings(
        run.session,
        &inner,
        run.data,
        s.catalog.n_rows(),
        &dev_inner,
    );
    let task = if p.task == "regression" {
        ProbeTask::Regression
    } else {
        ProbeTask::Classification
    };
    let hidden = (p.hidden > 0).then_some(p.hidden);
    let mut pc = ProbeConfig::new(task, inner.config().dim, hidden, 2);
    pc.target = p.target.clone();
    pc.inputs = s.cfg.data.inputs.clone();
    let t = targets(&run.cols[&p.target].values, &run.split.train, pc)?;
    let head = init_head::<B>(&t.cfg, s.cfg.seed, &device);
    let task = ProbeTrain {
        emb: &emb,
        targets: &t,
        device,
    };
    train_then_export(run, &task, head, export::probe)
}

/// Modes `masked`, `full`, `lora`: token prediction.
pub fn tokens<B: AutodiffBackend>(
    run: &Run<'_>,
    model: Aion<B>,
    device: B::Device,
) -> Result<Outcome> {
    let s = run.setup;
    let lora = match s.cfg.mode {
        Mode::Lora => Some(LoraSet::init(
            &model,
            &s.cfg.lora_config()?,
            s.cfg.seed,
            &device,
        )?),
        _ => None,
    };
    let model = if lora.is_some() {
        freeze_base(model, s)?
    } else {
        model
    };
    let masking = Masking {
        seed: s.cfg.seed,
        mask_ratio: s.cfg.mask_ratio(),
        soft_sigma: s.cfg.train.soft_label_sigma as f32,
    };
    let task = TokenTask::<B> {
        data: run.data,
        masking,
        device,
    };
    train_then_export(run, &task, Trainee { model, lora }, export::tokens)
}

/// The exporter of a task ([`export::tokens`], [`export::probe`]).
type Export<'x, B, T> = fn(
    &Context<'x>,
    &T,
    Trained<'_, <<T as Task<B>>::Module as AutodiffModule<B>>::InnerModule>,
) -> Result<()>;

/// Trains `task` from `module` (or resumes it from the checkpoint) and, unless a stop signal
/// ended the training, exports the trained module with `export`.
fn train_then_export<'x, B: AutodiffBackend, T: Task<B>>(
    run: &Run<'x>,
    task: &T,
    module: T::Module,
    export: Export<'x, B, T>,
) -> Result<Outcome> {
    let mut log = TrainLog::new(&run.setup.out, run.session.is_root());
    let o = train(
        run.session,
        task,
        module,
        &run.plan(),
        &run.ckpt,
        &mut log,
        run.stop,
    )?;
    if o.ending == Ending::Stopped {
        return Ok(Outcome::Stopped);
    }
    let trained = Trained {
        module: &o.module.valid(),
        progress: &o.progress,
        log: &log,
    };
    export(&run.ctx, task, trained)?;
    Ok(Outcome::Finished)
}

/// Sets `require_grad` on every parameter it maps.
struct RequireGrad(bool);

impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        Param::from_mapped_value(id, t.set_require_grad(self.0), mapper)
    }
}

/// LoRA: the base model frozen, except the embeddings of new modalities and of the roles the
/// run gave the base ([`super::prepare::roles_to_add`]; all of such a modality's embeddings train,
/// including a role the base already gave it).
fn freeze_base<B: AutodiffBackend>(model: Aion<B>, s: &Setup) -> Result<Aion<B>> {
    let mut model = model.no_grad();
    let roles = super::prepare::roles_to_add(s)?;
    let new: Vec<&str> = s
        .cfg
        .new_modalities
        .iter()
        .map(|n| n.token_key.as_str())
        .chain(roles.iter().map(|r| r.token_key.as_str()))
        .collect();
    model.embeddings = model
        .embeddings
        .into_iter()
        .map(|e| {
            if new.contains(&&*e.modality.token_key) {
                e.map(&mut RequireGrad(true))
            } else {
                e
            }
        })
        .collect();
    Ok(model)
}
