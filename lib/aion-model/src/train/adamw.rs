//! AdamW on a flat parameter vector, its learning-rate schedule and gradient clipping.
//!
//! The optimiser runs on the host over the flat vectors of [`super::params`]: the gradients
//! are on the host anyway for the MPI all-reduce, every rank then applies the same update to
//! the same values, and the state (`m`, `v`, step) is plain `f32` arrays that a checkpoint
//! saves and restores exactly. The update is PyTorch's `torch.optim.AdamW` (decoupled weight
//! decay), computed in f64 per element and stored as f32.

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (applied where `decay[i]` is true).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state over `n` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Updates done so far.
    pub t: u64,
}

impl AdamW {
    /// Fresh state for `n` parameters.
    pub fn new(cfg: AdamWConfig, n: usize) -> Self {
        Self {
            cfg,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`; `decay[i]` says whether
    /// parameter `i` is weight-decayed.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], decay: &[bool], lr: f64) {
        assert!(params.len() == grads.len() && grads.len() == self.m.len());
        assert_eq!(decay.len(), params.len());
        self.t += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for i in 0..params.len() {
            let g = f64::from(grads[i]);
            let mut p = f64::from(params[i]);
            if decay[i] {
                p *= 1.0 - lr * c.weight_decay;
            }
            let m = c.beta1 * f64::from(self.m[i]) + (1.0 - c.beta1) * g;
            let v = c.beta2 * f64::from(self.v[i]) + (1.0 - c.beta2) * g * g;
            self.m[i] = m as f32;
            self.v[i] = v as f32;
            let denom = (v / bc2).sqrt() + c.eps;
            p -= lr * (m / bc1) / denom;
            params[i] = p as f32;
        }
    }
}

/// Learning rate at `step` (0-based): linear warm-up from 0 over `warmup` steps, then cosine
/// decay from `lr` to `min_lr` at `total` steps (constant `min_lr` after).
pub fn lr_at(step: u64, total: u64, warmup: u64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`, factor `max_norm / (norm + 1e-6)`); returns the norm
/// before clipping. `max_norm <= 0` disables clipping.
pub fn clip_global_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let f = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (f64::from(*g) * f) as f32;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr() {
        // With bias correction the first Adam step is lr · sign(g) (ε aside).
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
            2,
        );
        let mut p = vec![1.0f32, -1.0];
        opt.step(&mut p, &[0.5, -2.0], &[true, true], 0.1);
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 0.9).abs() < 1e-6,
            "{p:?}"
        );
        let mut q = vec![1.0f32];
        let mut d = AdamW::new(
            AdamWConfig {
                weight_decay: 0.5,
                ..Default::default()
            },
            1,
        );
        d.step(&mut q, &[0.0], &[true], 0.1);
        assert!((q[0] - 0.95).abs() < 1e-6);
    }

    #[test]
    fn schedule_and_clipping() {
        assert!((lr_at(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0, 0.0) - 0.5).abs() < 1e-12);
        assert!(lr_at(100, 100, 10, 1.0, 0.1) - 0.1 < 1e-12);
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5);
    }
}
