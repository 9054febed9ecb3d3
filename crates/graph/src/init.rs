//! Parameter initialisers (PyTorch's names and formulas) and the seeded generator that
//! draws them, so a model built twice with one seed starts from identical weights.

/// How a variable's first value is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element `value`.
    Constant(f32),
    /// Uniform in `[low, high)`.
    Uniform { low: f32, high: f32 },
    /// Normal with the given mean and standard deviation.
    Normal { mean: f32, std: f32 },
    /// He/Kaiming normal for ReLU networks: std `sqrt(2 / fan_in)`.
    KaimingNormal { fan_in: usize },
    /// He/Kaiming uniform: bound `sqrt(6 / fan_in)`.
    KaimingUniform { fan_in: usize },
    /// Glorot/Xavier uniform: bound `sqrt(6 / (fan_in + fan_out))`.
    XavierUniform { fan_in: usize, fan_out: usize },
    /// Glorot/Xavier normal: std `sqrt(2 / (fan_in + fan_out))`.
    XavierNormal { fan_in: usize, fan_out: usize },
    /// A (possibly rectangular) identity read as rows of `cols` elements: element `i` is
    /// 1 when `i / cols == i % cols`, else 0 (e.g. a fixed channel-copying 1×1 conv).
    Identity { cols: usize },
    /// PyTorch's default for `Linear` and `Conv2d` weights and biases:
    /// uniform with bound `1 / sqrt(fan_in)`.
    TorchDefault { fan_in: usize },
}

impl Init {
    /// `len` values drawn from `rng`.
    pub fn values(&self, len: usize, rng: &mut Rng) -> Vec<f32> {
        let uniform = |rng: &mut Rng, bound: f64| -> Vec<f32> {
            (0..len)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let normal = |rng: &mut Rng, mean: f64, std: f64| -> Vec<f32> {
            (0..len)
                .map(|_| (mean + std * rng.normal()) as f32)
                .collect()
        };
        let fan = |n: usize| n.max(1) as f64;
        match *self {
            Init::Constant(v) => vec![v; len],
            Init::Uniform { low, high } => (0..len)
                .map(|_| (low as f64 + (high - low) as f64 * rng.unit()) as f32)
                .collect(),
            Init::Normal { mean, std } => normal(rng, mean as f64, std as f64),
            Init::KaimingNormal { fan_in } => normal(rng, 0.0, (2.0 / fan(fan_in)).sqrt()),
            Init::KaimingUniform { fan_in } => uniform(rng, (6.0 / fan(fan_in)).sqrt()),
            Init::XavierUniform { fan_in, fan_out } => {
                uniform(rng, (6.0 / fan(fan_in + fan_out)).sqrt())
            }
            Init::XavierNormal { fan_in, fan_out } => {
                normal(rng, 0.0, (2.0 / fan(fan_in + fan_out)).sqrt())
            }
            Init::TorchDefault { fan_in } => uniform(rng, 1.0 / fan(fan_in).sqrt()),
            Init::Identity { cols } => {
                let cols = cols.max(1);
                (0..len)
                    .map(|i| if i / cols == i % cols { 1.0 } else { 0.0 })
                    .collect()
            }
        }
    }
}

/// SplitMix64: small, fast, and good enough for initial weights and data shuffling.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for stream `index` of `seed`, independent of the others.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_normal_has_the_right_spread() {
        let v = Init::KaimingNormal { fan_in: 50 }.values(100_000, &mut Rng::new(1));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.005, "{mean}");
        assert!((var - 2.0 / 50.0).abs() < 0.002, "{var}");
    }

    #[test]
    fn torch_default_stays_in_its_bound() {
        let v = Init::TorchDefault { fan_in: 16 }.values(10_000, &mut Rng::new(2));
        assert!(v.iter().all(|&x| x.abs() <= 0.25));
        assert!(v.iter().any(|&x| x > 0.2) && v.iter().any(|&x| x < -0.2));
    }
}
