//! Learning-rate schedules. The learning rate lives in each optimizer update's uniform
//! buffer, so any schedule is a number per step: nothing recompiles.

/// How the learning rate moves after an optional linear warmup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// Constant.
    None,
    /// Multiply by `gamma` every `every` steps (PyTorch's `StepLR`, counted in steps).
    Step { every: u32, gamma: f32 },
    /// Cosine from the base rate down to `min_lr` at step `total` (`CosineAnnealingLR`).
    Cosine { total: u32, min_lr: f32 },
}

/// A base learning rate, a linear warmup over `warmup` steps, then a [`Decay`].
///
/// The warmup rises linearly to `base_lr`: from `warmup_from` at step 0 when that is
/// positive (Goyal et al.'s gradual warmup from the small-batch rate to the scaled one),
/// else from `base_lr / warmup` at step 0 to `base_lr` at step `warmup - 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub base_lr: f32,
    pub warmup: u32,
    pub warmup_from: f32,
    pub decay: Decay,
}

impl Schedule {
    /// A constant learning rate.
    pub fn constant(lr: f32) -> Self {
        Self {
            base_lr: lr,
            warmup: 0,
            warmup_from: 0.0,
            decay: Decay::None,
        }
    }

    /// The learning rate for 0-based optimizer step `step`.
    pub fn lr(&self, step: u32) -> f32 {
        if step < self.warmup {
            let w = self.warmup as f32;
            if self.warmup_from > 0.0 {
                return self.warmup_from + (self.base_lr - self.warmup_from) * step as f32 / w;
            }
            return self.base_lr * (step + 1) as f32 / w;
        }
        let t = step - self.warmup;
        match self.decay {
            Decay::None => self.base_lr,
            Decay::Step { every, gamma } => self.base_lr * gamma.powi((t / every.max(1)) as i32),
            Decay::Cosine { total, min_lr } => {
                let span = total.saturating_sub(self.warmup).max(1);
                let progress = (t.min(span) as f32) / span as f32;
                min_lr
                    + 0.5
                        * (self.base_lr - min_lr)
                        * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goyal et al.'s recipe: base 0.1 for batch 256, global batch 2048 → 0.8, warmup
    /// over 5 epochs of 10 steps from 0.1, then ×0.1 every 30 steps.
    #[test]
    fn gradual_warmup_from_the_base_rate_to_the_scaled_one() {
        let s = Schedule {
            base_lr: 0.1 * 2048.0 / 256.0,
            warmup: 50,
            warmup_from: 0.1,
            decay: Decay::Step {
                every: 30,
                gamma: 0.1,
            },
        };
        for step in 0..50u32 {
            let want = 0.1 + (0.8 - 0.1) * step as f32 / 50.0;
            assert!((s.lr(step) - want).abs() < 1e-6, "step {step}");
        }
        assert!((s.lr(50) - 0.8).abs() < 1e-6);
        assert!((s.lr(79) - 0.8).abs() < 1e-6);
        assert!((s.lr(80) - 0.08).abs() < 1e-6);
    }

    #[test]
    fn warmup_then_step_decay() {
        let s = Schedule {
            base_lr: 0.1,
            warmup: 4,
            warmup_from: 0.0,
            decay: Decay::Step {
                every: 10,
                gamma: 0.5,
            },
        };
        assert!((s.lr(0) - 0.025).abs() < 1e-7);
        assert!((s.lr(3) - 0.1).abs() < 1e-7);
        assert!((s.lr(13) - 0.1).abs() < 1e-7);
        assert!((s.lr(14) - 0.05).abs() < 1e-7);
        assert!((s.lr(24) - 0.025).abs() < 1e-7);
    }

    #[test]
    fn cosine_reaches_its_floor_at_the_end() {
        let s = Schedule {
            base_lr: 1.0,
            warmup: 0,
            warmup_from: 0.0,
            decay: Decay::Cosine {
                total: 100,
                min_lr: 0.01,
            },
        };
        assert!((s.lr(0) - 1.0).abs() < 1e-6);
        assert!((s.lr(50) - 0.505).abs() < 1e-3);
        assert!((s.lr(100) - 0.01).abs() < 1e-6);
        assert!((s.lr(500) - 0.01).abs() < 1e-6);
    }
}
