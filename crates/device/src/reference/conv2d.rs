//! Reference for [`Conv2d`](crate::kernels::conv2d::Conv2d): the forward pass and both
//! backward passes, each written straight from its formula. The `_f64` variants take and
//! return f64, so tests can check the backward passes against finite differences of the
//! forward pass without f32 rounding.

use crate::kernels::conv2d::Conv2d;

/// The shape as `usize`s, so the loops below read like the formulas.
struct Dims {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    r: usize,
    s: usize,
    p: usize,
    q: usize,
    cg: usize,
    kg: usize,
}

impl Dims {
    fn of(p: &Conv2d) -> Self {
        let u = |v: u32| v as usize;
        Dims {
            n: u(p.n),
            h: u(p.h),
            w: u(p.w),
            c: u(p.c),
            k: u(p.k),
            r: u(p.r),
            s: u(p.s),
            p: u(p.p()),
            q: u(p.q()),
            cg: u(p.cg()),
            kg: u(p.kg()),
        }
    }

    fn x_at(&self, n: usize, h: usize, w: usize, c: usize) -> usize {
        ((n * self.h + h) * self.w + w) * self.c + c
    }

    fn w_at(&self, k: usize, r: usize, s: usize, c: usize) -> usize {
        ((k * self.r + r) * self.s + s) * self.cg + c
    }

    fn y_at(&self, n: usize, p: usize, q: usize, k: usize) -> usize {
        ((n * self.p + p) * self.q + q) * self.k + k
    }
}

/// Input coordinate `o·stride - pad + t·dil` of output coordinate `o` and tap `t`, if it
/// lies inside `0..size` (outside is zero padding).
fn input_coord(o: usize, t: usize, stride: u32, pad: u32, dil: u32, size: usize) -> Option<usize> {
    let i = (o * stride as usize + t * dil as usize).checked_sub(pad as usize)?;
    (i < size).then_some(i)
}

/// Output coordinate `o` with `o·stride - pad + t·dil = i`, if it exists in `0..size`.
fn output_coord(i: usize, t: usize, stride: u32, pad: u32, dil: u32, size: usize) -> Option<usize> {
    let shifted = (i + pad as usize).checked_sub(t * dil as usize)?;
    let o = shifted / stride as usize;
    (shifted % stride as usize == 0 && o < size).then_some(o)
}

/// `y[n,p,q,k] = Σ_{r,s,c} x[n, p·sh - ph + r·dh, q·sw - pw + s·dw, g·Cg + c] · w[k,r,s,c]
/// (+ bias[k]) (ReLU)` with `g = k / Kg` and `x` zero outside the image.
pub fn forward(p: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    to_f32(forward_core(p, x, w, bias))
}

/// [`forward`] in f64.
pub fn forward_f64(p: &Conv2d, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    forward_core(p, x, w, bias)
}

/// `dx[n,h,w,c] = Σ_{k in c's group, r, s} dy[n,p,q,k] · w[k,r,s,c - g·Cg]` where
/// `p = (h + ph - r·dh) / sh` and `q = (w + pw - s·dw) / sw` must divide exactly and fall
/// inside the output. A ReLU epilogue is ignored: `dy` is taken as already masked.
pub fn backward_data(p: &Conv2d, dy: &[f32], w: &[f32]) -> Vec<f32> {
    to_f32(backward_data_core(p, dy, w))
}

/// [`backward_data`] in f64.
pub fn backward_data_f64(p: &Conv2d, dy: &[f64], w: &[f64]) -> Vec<f64> {
    backward_data_core(p, dy, w)
}

/// `dw[k,r,s,c] = Σ_{n,p,q} dy[n,p,q,k] · x[n, p·sh - ph + r·dh, q·sw - pw + s·dw, g·Cg + c]`
/// with `x` zero outside the image. A ReLU epilogue is ignored: `dy` is taken as masked.
pub fn backward_filter(p: &Conv2d, x: &[f32], dy: &[f32]) -> Vec<f32> {
    to_f32(backward_filter_core(p, x, dy))
}

/// [`backward_filter`] in f64.
pub fn backward_filter_f64(p: &Conv2d, x: &[f64], dy: &[f64]) -> Vec<f64> {
    backward_filter_core(p, x, dy)
}

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|v| v as f32).collect()
}

fn forward_core<T: Copy + Into<f64>>(p: &Conv2d, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<f64> {
    let d = Dims::of(p);
    let mut y = vec![0.0; d.n * d.p * d.q * d.k];
    for (n, op, oq, k) in grid4(d.n, d.p, d.q, d.k) {
        let g = k / d.kg;
        let mut acc = bias.map_or(0.0, |b| b[k].into());
        for r in 0..d.r {
            let Some(ih) = input_coord(op, r, p.stride_h, p.pad_h, p.dil_h, d.h) else {
                continue;
            };
            for s in 0..d.s {
                let Some(iw) = input_coord(oq, s, p.stride_w, p.pad_w, p.dil_w, d.w) else {
                    continue;
                };
                for c in 0..d.cg {
                    let xv: f64 = x[d.x_at(n, ih, iw, g * d.cg + c)].into();
                    acc += xv * w[d.w_at(k, r, s, c)].into();
                }
            }
        }
        if p.relu {
            acc = super::relu(acc);
        }
        y[d.y_at(n, op, oq, k)] = acc;
    }
    y
}

fn backward_data_core<T: Copy + Into<f64>>(p: &Conv2d, dy: &[T], w: &[T]) -> Vec<f64> {
    let d = Dims::of(p);
    let mut dx = vec![0.0; d.n * d.h * d.w * d.c];
    for (n, ih, iw, c) in grid4(d.n, d.h, d.w, d.c) {
        let (g, cl) = (c / d.cg, c % d.cg);
        let mut acc = 0.0f64;
        for r in 0..d.r {
            let Some(op) = output_coord(ih, r, p.stride_h, p.pad_h, p.dil_h, d.p) else {
                continue;
            };
            for s in 0..d.s {
                let Some(oq) = output_coord(iw, s, p.stride_w, p.pad_w, p.dil_w, d.q) else {
                    continue;
                };
                for k in g * d.kg..(g + 1) * d.kg {
                    let dyv: f64 = dy[d.y_at(n, op, oq, k)].into();
                    acc += dyv * w[d.w_at(k, r, s, cl)].into();
                }
            }
        }
        dx[d.x_at(n, ih, iw, c)] = acc;
    }
    dx
}

fn backward_filter_core<T: Copy + Into<f64>>(p: &Conv2d, x: &[T], dy: &[T]) -> Vec<f64> {
    let d = Dims::of(p);
    let mut dw = vec![0.0; d.k * d.r * d.s * d.cg];
    for (k, r, s, c) in grid4(d.k, d.r, d.s, d.cg) {
        let g = k / d.kg;
        let mut acc = 0.0f64;
        for (n, op) in grid2(d.n, d.p) {
            let Some(ih) = input_coord(op, r, p.stride_h, p.pad_h, p.dil_h, d.h) else {
                continue;
            };
            for oq in 0..d.q {
                let Some(iw) = input_coord(oq, s, p.stride_w, p.pad_w, p.dil_w, d.w) else {
                    continue;
                };
                let xv: f64 = x[d.x_at(n, ih, iw, g * d.cg + c)].into();
                acc += xv * dy[d.y_at(n, op, oq, k)].into();
            }
        }
        dw[d.w_at(k, r, s, c)] = acc;
    }
    dw
}

/// Every `(a, b)` in `0..na × 0..nb`, row-major.
fn grid2(na: usize, nb: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..na).flat_map(move |a| (0..nb).map(move |b| (a, b)))
}

/// Every `(a, b, c, d)` in `0..na × 0..nb × 0..nc × 0..nd`, row-major.
fn grid4(
    na: usize,
    nb: usize,
    nc: usize,
    nd: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    grid2(na, nb).flat_map(move |(a, b)| grid2(nc, nd).map(move |(c, d)| (a, b, c, d)))
}
