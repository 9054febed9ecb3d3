//! Layout conversions at the edges: PyTorch's NCHW activations and OIHW convolution
//! weights to wgtrain's NHWC and KRSC, and back. Plain CPU loops; they run once per
//! batch upload or weight load.

/// `[n, c, h, w]` → `[n, h, w, c]`.
pub fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "nchw_to_nhwc: length vs shape");
    let mut out = vec![0.0; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    out[((ni * h + hi) * w + wi) * c + ci] = x[((ni * c + ci) * h + hi) * w + wi];
                }
            }
        }
    }
    out
}

/// `[n, h, w, c]` → `[n, c, h, w]`.
pub fn nhwc_to_nchw(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "nhwc_to_nchw: length vs shape");
    let mut out = vec![0.0; x.len()];
    for ni in 0..n {
        for hi in 0..h {
            for wi in 0..w {
                for ci in 0..c {
                    out[((ni * c + ci) * h + hi) * w + wi] = x[((ni * h + hi) * w + wi) * c + ci];
                }
            }
        }
    }
    out
}

/// PyTorch conv weight `[k, c, r, s]` (OIHW) → `[k, r, s, c]` (KRSC).
pub fn oihw_to_krsc(w: &[f32], k: usize, c: usize, r: usize, s: usize) -> Vec<f32> {
    nchw_to_nhwc(w, k, c, r, s)
}

/// `[k, r, s, c]` (KRSC) → PyTorch's `[k, c, r, s]` (OIHW).
pub fn krsc_to_oihw(w: &[f32], k: usize, r: usize, s: usize, c: usize) -> Vec<f32> {
    nhwc_to_nchw(w, k, r, s, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_round_trip_and_one_known_element() {
        let (n, c, h, w) = (2, 3, 4, 5);
        let x: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let y = nchw_to_nhwc(&x, n, c, h, w);
        // Element (n=1, c=2, h=3, w=4) is last in both layouts.
        assert_eq!(y[((h + 3) * w + 4) * c + 2], x[((c + 2) * h + 3) * w + 4]);
        // Element (n=0, c=1, h=0, w=0): NCHW offset h*w = 20, NHWC offset 1.
        assert_eq!(y[1], 20.0);
        assert_eq!(nhwc_to_nchw(&y, n, h, w, c), x);
    }
}
