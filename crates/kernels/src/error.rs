/// Why a decoder could not be built or stepped.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Weights or buffers whose lengths do not fit the sizes.
    #[error("decoder weights: {0}")]
    Shape(String),
    /// A caller's input the step cannot take (token id out of range, no room left, ...).
    #[error("{0}")]
    Input(String),
    /// Something this decoder does not do (e.g. a sampling option only the CPU sampler has).
    #[error("not supported by the CUDA decoder: {0}")]
    Unsupported(String),
    /// No usable CUDA driver or device, or a CUDA call that failed.
    #[error("CUDA: {0}")]
    Cuda(String),
}
