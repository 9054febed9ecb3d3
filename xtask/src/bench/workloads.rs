//! The layer shapes the suites time, taken from the networks they come from, and the
//! benchmark names built from them. `bench/pytorch_reference.py` builds the same lists
//! with the same names (check with `--list` on both sides).

use wgtrain_device::kernels::conv2d::Conv2d;

/// A distinct convolution layer: square input `h × h × c`, `k` filters of `r × r`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    /// `alexnet` (torchvision), `alexnet2012` (the paper's two-group layers), `resnet50`.
    pub model: &'static str,
    /// The layer's part of the benchmark name.
    pub id: String,
    pub h: u32,
    pub c: u32,
    pub k: u32,
    pub r: u32,
    pub stride: u32,
    pub pad: u32,
    pub groups: u32,
}

impl ConvLayer {
    /// The layer at batch `n` with input `h × h`.
    pub fn conv(&self, n: u32, h: u32) -> Conv2d {
        Conv2d::new(n, h, h, self.c, self.k, self.r, self.r)
            .stride(self.stride, self.stride)
            .pad(self.pad, self.pad)
            .grouped(self.groups)
    }

    /// `{kind}_{model}_{id}_n{batch}`, e.g. `conv_fwd_resnet50_56x56x64_k64_3x3_s1_n32`.
    pub fn name(&self, kind: &str, batch: u32) -> String {
        format!("{kind}_{}_{}_n{batch}", self.model, self.id)
    }

    /// The shape in words.
    pub fn describe(&self, batch: u32) -> String {
        let p = self.conv(batch, self.h);
        format!(
            "x[{batch},{h},{h},{c}] * w[{k},{r},{r},{cg}] stride {s} pad {pad} groups {g} \
             -> y[{batch},{p},{q},{k}]",
            h = self.h,
            c = self.c,
            k = self.k,
            r = self.r,
            cg = p.cg(),
            s = self.stride,
            pad = self.pad,
            g = self.groups,
            p = p.p(),
            q = p.q(),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn layer(
    model: &'static str,
    id: String,
    h: u32,
    c: u32,
    k: u32,
    r: u32,
    stride: u32,
    pad: u32,
    groups: u32,
) -> ConvLayer {
    ConvLayer {
        model,
        id,
        h,
        c,
        k,
        r,
        stride,
        pad,
        groups,
    }
}

/// AlexNet's convolutions at 224 × 224: torchvision's five (64, 192, 384, 256, 256
/// filters), and the 2012 paper's five (96, 256, 384, 384, 256 filters; conv2, conv4 and
/// conv5 in two groups, as the paper split them over two GPUs). The paper's conv1 is
/// padded by 2 so that 224 × 224 gives its stated 55 × 55 output.
pub fn alexnet_convs() -> Vec<ConvLayer> {
    let tv = |i: u32, h, c, k, r, stride, pad| {
        layer("alexnet", format!("conv{i}"), h, c, k, r, stride, pad, 1)
    };
    let paper = |i: u32, h, c, k, r, stride, pad, groups| {
        layer(
            "alexnet2012",
            format!("conv{i}"),
            h,
            c,
            k,
            r,
            stride,
            pad,
            groups,
        )
    };
    vec![
        tv(1, 224, 3, 64, 11, 4, 2),
        tv(2, 27, 64, 192, 5, 1, 2),
        tv(3, 13, 192, 384, 3, 1, 1),
        tv(4, 13, 384, 256, 3, 1, 1),
        tv(5, 13, 256, 256, 3, 1, 1),
        paper(1, 224, 3, 96, 11, 4, 2, 1),
        paper(2, 27, 96, 256, 5, 1, 2, 2),
        paper(3, 13, 256, 384, 3, 1, 1, 1),
        paper(4, 13, 384, 384, 3, 1, 1, 2),
        paper(5, 13, 384, 256, 3, 1, 1, 2),
    ]
}

/// Every distinct (C, K, R, stride, H) of ResNet-50 (torchvision, stride in the 3 × 3
/// convolution), found by walking the network: the 7 × 7 stem, then per stage the
/// bottleneck's 1 × 1 reduce, 3 × 3 and 1 × 1 expand, and the first block's projection.
pub fn resnet50_convs() -> Vec<ConvLayer> {
    let mut out: Vec<ConvLayer> = Vec::new();
    let mut add = |h: u32, c: u32, k: u32, r: u32, stride: u32| {
        let id = format!("{h}x{h}x{c}_k{k}_{r}x{r}_s{stride}");
        if !out.iter().any(|l| l.id == id) {
            out.push(layer("resnet50", id, h, c, k, r, stride, r / 2, 1));
        }
    };
    add(224, 3, 64, 7, 2);
    let (mut h, mut c) = (56, 64);
    for (width, blocks, first_stride) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)] {
        for block in 0..blocks {
            let stride = if block == 0 { first_stride } else { 1 };
            add(h, c, width, 1, 1);
            add(h, width, width, 3, stride);
            let out_h = h / stride;
            add(out_h, width, 4 * width, 1, 1);
            if block == 0 {
                add(h, c, 4 * width, 1, stride);
            }
            (h, c) = (out_h, 4 * width);
        }
    }
    out
}

/// Fully connected layers `in → out`: AlexNet's fc6, fc7, fc8 and ResNet-50's fc.
pub const FC_LAYERS: [(u32, u32); 4] = [(9216, 4096), (4096, 4096), (4096, 1000), (2048, 1000)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_has_23_distinct_convolutions() {
        let convs = resnet50_convs();
        assert_eq!(convs.len(), 23);
        assert_eq!(convs[0].id, "224x224x3_k64_7x7_s2");
        assert!(convs.iter().any(|l| l.id == "56x56x256_k512_1x1_s2"));
        assert!(convs.iter().any(|l| l.id == "7x7x512_k512_3x3_s1"));
        let macs: u64 = convs.iter().map(|l| l.conv(1, l.h).macs()).sum();
        assert!(macs > 1_000_000_000, "{macs}");
    }

    #[test]
    fn alexnet_output_sizes() {
        let convs = alexnet_convs();
        let out: Vec<u32> = convs.iter().map(|l| l.conv(1, l.h).p()).collect();
        assert_eq!(out, [55, 27, 13, 13, 13, 55, 27, 13, 13, 13]);
        assert_eq!(
            convs[6].name("conv_bwd_data", 32),
            "conv_bwd_data_alexnet2012_conv2_n32"
        );
    }
}
