//! The decoding step on a CUDA GPU through cudarc: the driver and NVRTC are loaded at run time
//! (nothing from the CUDA toolkit is needed to build), `kernels.cu` is compiled once per
//! process for the device's architecture, and a [`CudaDecoder`] runs the step of
//! [`crate::reference::ReferenceDecoder`] on the device, optionally replayed as a CUDA graph,
//! with sampling on the device. [`CudaCodecDecoder`] runs the codec decode of
//! [`crate::codec::reference::decode`] from `codec_kernels.cu`.

mod codec_decoder;
mod decoder;
mod runtime;

pub use codec_decoder::CudaCodecDecoder;
pub use decoder::{CudaDecoder, StreamSampling};
pub use runtime::{
    compile_codec_kernels, compile_kernels, driver_available, gpu_for_test, nvrtc_available,
    CODEC_KERNEL_NAMES, KERNEL_NAMES,
};

#[cfg(test)]
mod tests;
