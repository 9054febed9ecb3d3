//! Reference for [`Pool2d`] and [`GlobalAvgPool`] (NHWC), forward and backward.
//!
//! Forward, for output cell `(n, op, oq, c)` and its window `W = {(ih, iw) : ih = op·stride_h
//! − pad_h + [0, r), iw = oq·stride_w − pad_w + [0, s)}` clipped to the input:
//! max: `y = max_W x`, `argmax = ih·w + iw` of the first maximum in row-major order;
//! avg: `y = Σ_W x / d` with `d = r·s` (count_include_pad) or `d = |W|`.
//! Backward: max `dx[i] = Σ_{windows o with argmax[o] = i} dy[o]`; avg `dx[i] = Σ_{windows
//! o ∋ i} dy[o] / d(o)`. Global average: `y[n, c] = Σ_{h, w} x / (h·w)`, `dx = dy / (h·w)`.

use crate::kernels::pool::{GlobalAvgPool, Pool2d, PoolKind};

/// The in-bounds rows and columns of output cell `(op, oq)`'s window.
fn window(p: &Pool2d, op: usize, oq: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let clip = |start: i64, len: u32, size: u32| {
        start.max(0) as usize..(start + len as i64).min(size as i64) as usize
    };
    (
        clip(op as i64 * p.stride_h as i64 - p.pad_h as i64, p.r, p.h),
        clip(oq as i64 * p.stride_w as i64 - p.pad_w as i64, p.s, p.w),
    )
}

fn divisor(p: &Pool2d, rows: &std::ops::Range<usize>, cols: &std::ops::Range<usize>) -> f64 {
    if p.count_include_pad {
        (p.r * p.s) as f64
    } else {
        (rows.len() * cols.len()) as f64
    }
}

/// Forward pooling: returns `y [n, P, Q, c]` and, for max pooling, `argmax` (empty for
/// average pooling).
pub fn pool2d_forward(p: &Pool2d, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (h, w, c) = (p.h as usize, p.w as usize, p.c as usize);
    let (ph, qw) = (p.out_h() as usize, p.out_w() as usize);
    let mut y = Vec::with_capacity(p.output_len() as usize);
    let mut argmax = Vec::new();
    for n in 0..p.n as usize {
        for op in 0..ph {
            for oq in 0..qw {
                let (rows, cols) = window(p, op, oq);
                for ch in 0..c {
                    let at = |ih: usize, iw: usize| x[((n * h + ih) * w + iw) * c + ch] as f64;
                    let cells = rows
                        .clone()
                        .flat_map(|ih| cols.clone().map(move |iw| (ih, iw)));
                    match p.kind {
                        PoolKind::Max => {
                            // The first cell starts; only a strictly larger value wins.
                            let mut best: Option<(f64, usize)> = None;
                            for (ih, iw) in cells {
                                if best.is_none_or(|(v, _)| at(ih, iw) > v) {
                                    best = Some((at(ih, iw), ih * w + iw));
                                }
                            }
                            let (v, i) = best.expect("pad <= window / 2 keeps windows non-empty");
                            y.push(v as f32);
                            argmax.push(i as u32);
                        }
                        PoolKind::Avg => {
                            let sum: f64 = cells.map(|(ih, iw)| at(ih, iw)).sum();
                            y.push((sum / divisor(p, &rows, &cols)) as f32);
                        }
                    }
                }
            }
        }
    }
    (y, argmax)
}

/// Backward pooling: `dx [n, h, w, c]` from `dy [n, P, Q, c]` (and `argmax` for max
/// pooling), scattering each output's gradient to its window.
pub fn pool2d_backward(p: &Pool2d, dy: &[f32], argmax: Option<&[u32]>) -> Vec<f32> {
    let (h, w, c) = (p.h as usize, p.w as usize, p.c as usize);
    let (ph, qw) = (p.out_h() as usize, p.out_w() as usize);
    let mut dx = vec![0.0f64; p.input_len() as usize];
    for n in 0..p.n as usize {
        for op in 0..ph {
            for oq in 0..qw {
                let (rows, cols) = window(p, op, oq);
                for ch in 0..c {
                    let o = ((n * ph + op) * qw + oq) * c + ch;
                    let g = dy[o] as f64;
                    match (p.kind, argmax) {
                        (PoolKind::Max, Some(argmax)) => {
                            let at = argmax[o] as usize;
                            dx[(n * h * w + at) * c + ch] += g;
                        }
                        (PoolKind::Max, None) => panic!("max pooling backward needs argmax"),
                        (PoolKind::Avg, _) => {
                            let d = divisor(p, &rows, &cols);
                            for ih in rows.clone() {
                                for iw in cols.clone() {
                                    dx[((n * h + ih) * w + iw) * c + ch] += g / d;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// Global average pooling forward: `y [n, c]`.
pub fn global_avg_pool_forward(g: &GlobalAvgPool, x: &[f32]) -> Vec<f32> {
    let (hw, c) = ((g.h * g.w) as usize, g.c as usize);
    let mut y = Vec::with_capacity(g.output_len() as usize);
    for n in 0..g.n as usize {
        for ch in 0..c {
            let sum: f64 = (0..hw).map(|j| x[(n * hw + j) * c + ch] as f64).sum();
            y.push((sum / hw as f64) as f32);
        }
    }
    y
}

/// Global average pooling backward: `dx [n, h, w, c] = dy[n, c] / (h·w)`.
pub fn global_avg_pool_backward(g: &GlobalAvgPool, dy: &[f32]) -> Vec<f32> {
    let (hw, c) = ((g.h * g.w) as usize, g.c as usize);
    (0..g.input_len() as usize)
        .map(|i| {
            let (n, ch) = (i / (hw * c), i % c);
            (dy[n * c + ch] as f64 / hw as f64) as f32
        })
        .collect()
}
