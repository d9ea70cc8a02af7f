//! The codec decoder (residual-VQ lookup, then a chain of causal convolutions) as flat buffers:
//! what [`reference::decode`] and the CUDA codec decoder run. `Codec::decoder_weights` in the
//! codec crate exports a model in this layout.

pub mod reference;

use crate::KernelError;

/// A convolution or a transposed convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// Causal Conv1d: left-padded by `(kernel - 1)·dilation + 1 - stride` zeros.
    Conv,
    /// Causal ConvTranspose1d: the first `input · stride` outputs (the overlap tail a stream
    /// would carry into its next chunk is dropped at the end of a whole call).
    Transposed,
}

/// How a layer takes part in a residual connection `x + f(x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    None,
    /// Keep this layer's input (before its ELU) for a later [`Skip::Add`].
    Save,
    /// Add the kept input to this layer's output.
    Add,
}

/// One layer of the decoder, weights in the PyTorch layouts.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    /// The checkpoint prefix, for messages.
    pub name: String,
    pub kind: ConvKind,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    /// ELU (α = 1) of the input first.
    pub elu_input: bool,
    pub skip: Skip,
    /// Conv: `[cout, cin, kernel]`; transposed: `[cin, cout, kernel]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvLayer {
    /// Output samples for `t` input samples (a conv's `t` is a multiple of its stride).
    pub fn output_len(&self, t: usize) -> usize {
        match self.kind {
            ConvKind::Conv => t / self.stride,
            ConvKind::Transposed => t * self.stride,
        }
    }

    /// The layer without its weights (what a decoder keeps once they are on a device).
    pub fn shape_only(&self) -> ConvLayer {
        ConvLayer {
            name: self.name.clone(),
            weight: Vec::new(),
            bias: Vec::new(),
            ..*self
        }
    }

    /// Zeros a causal conv sees before the first sample.
    pub fn context(&self) -> usize {
        ((self.kernel - 1) * self.dilation + 1).saturating_sub(self.stride)
    }

    fn validate(&self) -> Result<(), KernelError> {
        let bad = |what: String| Err(KernelError::Shape(format!("{}: {what}", self.name)));
        let sizes = [self.cin, self.cout, self.kernel, self.stride, self.dilation];
        if sizes.contains(&0) {
            return bad(format!("zero size in {sizes:?}"));
        }
        if self.kind == ConvKind::Conv && (self.kernel - 1) * self.dilation + 1 < self.stride {
            return bad(format!("kernel span shorter than stride {}", self.stride));
        }
        if self.kind == ConvKind::Transposed && self.kernel < self.stride {
            return bad(format!(
                "kernel {} shorter than stride {}",
                self.kernel, self.stride
            ));
        }
        if self.weight.len() != self.cin * self.cout * self.kernel {
            return bad(format!(
                "weight holds {} values, expected {}",
                self.weight.len(),
                self.cin * self.cout * self.kernel
            ));
        }
        if self.bias.len() != self.cout {
            return bad(format!(
                "bias holds {} values, expected {}",
                self.bias.len(),
                self.cout
            ));
        }
        Ok(())
    }
}

/// Everything a whole-utterance decode reads: codes `[B, q, F]` → summed codebook vectors
/// `[B, dimension, F]` → every layer in order → audio `[B, channels, F · hop]`.
#[derive(Debug, Clone)]
pub struct CodecDecoderWeights {
    pub dimension: usize,
    pub codebook_size: usize,
    /// `[Q, codebook_size, dimension]`.
    pub codebooks: Vec<f32>,
    pub layers: Vec<ConvLayer>,
}

impl CodecDecoderWeights {
    pub fn num_codebooks(&self) -> usize {
        self.codebooks.len() / (self.codebook_size * self.dimension).max(1)
    }

    /// Output samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.kind == ConvKind::Transposed)
            .map(|l| l.stride)
            .product()
    }

    /// Channels of the decoded audio.
    pub fn channels(&self) -> usize {
        self.layers.last().map_or(0, |l| l.cout)
    }

    /// Fails naming the first buffer or layer that does not fit.
    pub fn validate(&self) -> Result<(), KernelError> {
        let shape = |m: String| Err(KernelError::Shape(m));
        if self.dimension == 0 || self.codebook_size == 0 || self.num_codebooks() == 0 {
            return shape("a decoder needs a dimension, a codebook size and a codebook".into());
        }
        if self.codebooks.len() != self.num_codebooks() * self.codebook_size * self.dimension {
            return shape(format!(
                "codebooks hold {} values, not a whole number of [{}, {}] tables",
                self.codebooks.len(),
                self.codebook_size,
                self.dimension
            ));
        }
        if self.layers.is_empty() {
            return shape("a decoder needs at least one layer".into());
        }
        let mut channels = self.dimension;
        // Channels of the kept input, while a residual connection is open.
        let mut saved: Option<usize> = None;
        for l in &self.layers {
            l.validate()?;
            if l.cin != channels {
                return shape(format!(
                    "{} takes {} channels, gets {channels}",
                    l.name, l.cin
                ));
            }
            let changes_length = l.stride != 1 || l.kind == ConvKind::Transposed;
            // A residual unit is two adjacent length-keeping layers: a Save, then an Add back to
            // the saved channels.
            match (l.skip, saved) {
                (Skip::None, None) => {}
                (Skip::Save, None) if !changes_length => saved = Some(l.cin),
                (Skip::Add, Some(c)) if c == l.cout && !changes_length => saved = None,
                _ => {
                    return shape(format!(
                        "{}: residual connections must be a Save then an Add of the same shape",
                        l.name
                    ))
                }
            }
            channels = l.cout;
        }
        if saved.is_some() {
            return shape("a residual connection is never closed".into());
        }
        Ok(())
    }

    /// Checks codes `[batch, q, frames]` against the codebooks.
    pub fn check_codes(
        &self,
        codes: &[i64],
        batch: usize,
        q: usize,
        frames: usize,
    ) -> Result<(), KernelError> {
        check_codes(
            codes,
            [batch, q, frames],
            self.num_codebooks(),
            self.codebook_size,
        )
    }
}

/// Codes of shape `[batch, q, frames]` for `num_codebooks` codebooks of `codebook_size`.
pub(crate) fn check_codes(
    codes: &[i64],
    shape: [usize; 3],
    num_codebooks: usize,
    codebook_size: usize,
) -> Result<(), KernelError> {
    let [batch, q, frames] = shape;
    if batch == 0 || q == 0 || frames == 0 {
        return Err(KernelError::Input(format!(
            "codes must not be empty, got shape [{batch}, {q}, {frames}]"
        )));
    }
    if q > num_codebooks {
        return Err(KernelError::Input(format!(
            "codes hold {q} codebooks, but the codec has only {num_codebooks}"
        )));
    }
    if codes.len() != batch * q * frames {
        return Err(KernelError::Input(format!(
            "{} codes for shape [{batch}, {q}, {frames}]",
            codes.len()
        )));
    }
    let size = codebook_size as i64;
    if let Some(bad) = codes.iter().find(|&&c| c < 0 || c >= size) {
        return Err(KernelError::Input(format!(
            "code {bad} is out of range: codes must lie in [0, {size}) (codebook_size {size})"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
