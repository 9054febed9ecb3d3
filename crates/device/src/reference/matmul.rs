//! Reference for [`Matmul`](crate::kernels::matmul::Matmul).

use crate::kernels::matmul::Matmul;

/// `C = op(A) · op(B) (+ bias) (+ c_in when accumulating) (ReLU)`; returns C's
/// footprint (`c_in` supplies the elements between batch strides, if any).
pub fn matmul(p: &Matmul, a: &[f32], b: &[f32], bias: Option<&[f32]>, c_in: &[f32]) -> Vec<f32> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let (_, _, ec) = p.footprint();
    let mut c = c_in[..ec as usize].to_vec();
    for z in 0..p.batch as usize {
        let (ao, bo, co) = (
            z * p.stride_a as usize,
            z * p.stride_b as usize,
            z * p.stride_c as usize,
        );
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for kk in 0..k {
                    let av = if p.trans_a {
                        a[ao + kk * m + i]
                    } else {
                        a[ao + i * k + kk]
                    };
                    let bv = if p.trans_b {
                        b[bo + j * k + kk]
                    } else {
                        b[bo + kk * n + j]
                    };
                    acc += av as f64 * bv as f64;
                }
                if let Some(bias) = bias {
                    acc += bias[j] as f64;
                }
                let idx = co + i * n + j;
                if p.accumulate {
                    acc += c[idx] as f64;
                }
                if p.relu {
                    acc = super::relu(acc);
                }
                c[idx] = acc as f32;
            }
        }
    }
    c
}
