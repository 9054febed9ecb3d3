//! The WGSL sources, one file per kernel family under the workspace's `shaders/`,
//! compiled into the binary so nothing is read from disk at run time.

/// One WGSL source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shader {
    /// File stem, used in labels and errors (`matmul` for `shaders/matmul.wgsl`).
    pub name: &'static str,
    /// The WGSL text.
    pub source: &'static str,
}

macro_rules! shaders {
    ($($id:ident => $file:literal),* $(,)?) => {
        $(
            #[doc = concat!("`shaders/", $file, ".wgsl`")]
            pub const $id: Shader = Shader {
                name: $file,
                source: include_str!(concat!("../../../shaders/", $file, ".wgsl")),
            };
        )*
        /// Every shader, for validation tests and tools.
        pub const ALL: &[Shader] = &[$($id),*];
    };
}

shaders! {
    MATMUL => "matmul",
    MATMUL_SG => "matmul_sg",
    CLIP => "clip",
    FINITE => "finite",
    ELEMENTWISE => "elementwise",
    REDUCE => "reduce",
    SOFTMAX_XENT => "softmax_xent",
    POOL => "pool",
    LRN => "lrn",
    DROPOUT => "dropout",
    CONV2D => "conv2d",
    CONV2D_SG => "conv2d_sg",
    BATCHNORM => "batchnorm",
    OPTIMIZER => "optimizer",
    PROBE => "probe",
    MSE => "mse",
}
