//! The codec's `config.json`, every key defaulted as documented in `docs/codec.md`.

use serde::{Deserialize, Serialize};
use speechinfer_core::config::check_model_type_and_positive;
use speechinfer_core::{Error, Result};

pub const MODEL_TYPE: &str = "speechinfer-codec";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodecConfig {
    pub model_type: String,
    pub sample_rate: usize,
    pub channels: usize,
    pub n_filters: usize,
    /// Up-sampling ratios in decoder order; the encoder applies them reversed.
    pub ratios: Vec<usize>,
    pub kernel_size: usize,
    pub residual_kernel_size: usize,
    pub last_kernel_size: usize,
    pub n_residual_layers: usize,
    pub dilation_base: usize,
    pub compress: usize,
    pub dimension: usize,
    pub num_codebooks: usize,
    pub codebook_size: usize,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            model_type: MODEL_TYPE.to_string(),
            sample_rate: 16000,
            channels: 1,
            n_filters: 32,
            ratios: vec![8, 5, 4, 2],
            kernel_size: 7,
            residual_kernel_size: 3,
            last_kernel_size: 7,
            n_residual_layers: 1,
            dilation_base: 2,
            compress: 2,
            dimension: 128,
            num_codebooks: 8,
            codebook_size: 1024,
        }
    }
}

impl CodecConfig {
    /// Keys a `config.json` must hold (everything that shapes the architecture).
    pub const REQUIRED_KEYS: &'static [&'static str] = &[
        "sample_rate",
        "channels",
        "n_filters",
        "ratios",
        "kernel_size",
        "residual_kernel_size",
        "last_kernel_size",
        "n_residual_layers",
        "dilation_base",
        "compress",
        "dimension",
        "num_codebooks",
        "codebook_size",
    ];

    /// Samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.ratios.iter().product()
    }

    pub fn frame_rate(&self) -> f64 {
        self.sample_rate as f64 / self.hop_length() as f64
    }

    pub fn validate(&self) -> Result<()> {
        check_model_type_and_positive(
            &self.model_type,
            MODEL_TYPE,
            &[
                ("sample_rate", self.sample_rate),
                ("channels", self.channels),
                ("n_filters", self.n_filters),
                ("kernel_size", self.kernel_size),
                ("residual_kernel_size", self.residual_kernel_size),
                ("last_kernel_size", self.last_kernel_size),
                ("dilation_base", self.dilation_base),
                ("compress", self.compress),
                ("dimension", self.dimension),
                ("num_codebooks", self.num_codebooks),
                ("codebook_size", self.codebook_size),
            ],
        )?;
        if self.ratios.is_empty() || self.ratios.contains(&0) {
            return Err(Error::config(format!(
                "ratios must be a non-empty list of positive integers, got {:?}",
                self.ratios
            )));
        }
        if self.n_filters / self.compress == 0 {
            return Err(Error::config(format!(
                "compress {} leaves no hidden channels for n_filters {}",
                self.compress, self.n_filters
            )));
        }
        if self.codebook_size > (1 << 31) {
            return Err(Error::config("codebook_size is absurdly large"));
        }
        Ok(())
    }
}
