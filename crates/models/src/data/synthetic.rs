//! A deterministic synthetic dataset of learnable classes, the embedded default so that
//! nothing has to be downloaded: each image is one of ten procedurally drawn shapes or
//! textures (disc, square, triangle, stripes in three directions, checkerboard, cross,
//! ring, X) with random colours, position, size and pixel noise. Sample `i` of a given
//! seed is always the same image, at any resolution.

use wgtrain_graph::Rng;

use crate::data::Dataset;

/// Names of the classes, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "disc",
    "square",
    "triangle",
    "h-stripes",
    "v-stripes",
    "checkerboard",
    "cross",
    "ring",
    "d-stripes",
    "x",
];

/// `count` RGB images of `size`×`size` in `classes` (≤ 10) balanced classes.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    pub count: usize,
    pub size: usize,
    pub classes: usize,
    pub seed: u64,
}

impl Synthetic {
    pub fn new(count: usize, size: usize, classes: usize, seed: u64) -> Self {
        Self {
            count,
            size,
            classes: classes.clamp(2, 10),
            seed,
        }
    }
}

/// Whether normalised point (u, v) — object-centred, unit radius — is foreground.
fn inside(class: u32, u: f32, v: f32, freq: f32) -> bool {
    let patch = u.abs() < 1.0 && v.abs() < 1.0;
    let stripes = |t: f32| (t * freq * std::f32::consts::PI).sin() > 0.0;
    match class {
        0 => u * u + v * v < 1.0,
        1 => u.abs() < 0.8 && v.abs() < 0.8,
        2 => v > -0.8 && v < 0.8 && u.abs() < (v + 0.8) * 0.55,
        3 => patch && stripes(v),
        4 => patch && stripes(u),
        5 => patch && (stripes(u) ^ stripes(v)),
        6 => (u.abs() < 0.25 && v.abs() < 0.9) || (v.abs() < 0.25 && u.abs() < 0.9),
        7 => {
            let r2 = u * u + v * v;
            r2 < 1.0 && r2 > 0.45
        }
        8 => patch && stripes((u + v) * std::f32::consts::FRAC_1_SQRT_2),
        _ => patch && ((u - v).abs() < 0.3 || (u + v).abs() < 0.3),
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.count
    }
    fn image_shape(&self) -> [usize; 3] {
        [self.size, self.size, 3]
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        let mut rng = Rng::stream(self.seed, index as u64);
        let label = (index % self.classes) as u32;
        let mut colour = |lo: f64, hi: f64| -> [f32; 3] {
            [0, 1, 2].map(|_| (lo + (hi - lo) * rng.unit()) as f32)
        };
        let (mut fg, mut bg) = (colour(0.55, 1.0), colour(0.0, 0.45));
        if rng.unit() < 0.5 {
            std::mem::swap(&mut fg, &mut bg);
        }
        let cx = 0.5 + 0.3 * (rng.unit() as f32 - 0.5);
        let cy = 0.5 + 0.3 * (rng.unit() as f32 - 0.5);
        let radius = 0.22 + 0.13 * rng.unit() as f32;
        let freq = 2.0 + 2.0 * rng.unit() as f32;
        let s = self.size as f32;
        for y in 0..self.size {
            for x in 0..self.size {
                let u = ((x as f32 + 0.5) / s - cx) / radius;
                let v = ((y as f32 + 0.5) / s - cy) / radius;
                let c = if inside(label, u, v, freq) { fg } else { bg };
                let px = &mut out[(y * self.size + x) * 3..][..3];
                for (o, &c) in px.iter_mut().zip(&c) {
                    let noisy = c + 0.08 * rng.normal() as f32;
                    *o = (noisy - 0.5) / 0.25;
                }
            }
        }
        label
    }
}
