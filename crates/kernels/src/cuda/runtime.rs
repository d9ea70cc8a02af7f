//! Loading the driver, compiling `kernels.cu` with NVRTC and looking up its functions.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::KernelError;

const SOURCE: &str = include_str!("kernels.cu");

/// Every `extern "C"` kernel of `kernels.cu`.
pub const KERNEL_NAMES: [&str; 8] = [
    "embed_sum",
    "rms_norm",
    "matmul_xwt",
    "rope_kv_write",
    "attend_one",
    "silu_mul",
    "advance_positions",
    "sample_tokens",
];

pub(crate) fn cuda_err(e: DriverError) -> KernelError {
    KernelError::Cuda(e.to_string())
}

/// True when the CUDA driver library loads and reports at least one device. Never panics.
pub fn driver_available() -> bool {
    std::panic::catch_unwind(|| {
        // SAFETY: only probes whether the shared library can be opened.
        let present = unsafe { cudarc::driver::sys::is_culib_present() };
        present && CudaContext::device_count().is_ok_and(|n| n > 0)
    })
    .unwrap_or(false)
}

/// For GPU tests: true when a device is there; false (skip) when not, unless
/// `SPEECHINFER_REQUIRE_GPU` is set (GPU sessions set it: there a skip would hide a failure).
#[doc(hidden)]
pub fn gpu_for_test() -> bool {
    let found = driver_available();
    if !found {
        assert!(
            std::env::var_os("SPEECHINFER_REQUIRE_GPU").is_none(),
            "SPEECHINFER_REQUIRE_GPU is set but no CUDA device was found"
        );
        eprintln!("skipped: no CUDA device");
    }
    found
}

/// True when NVRTC (the run-time CUDA compiler) can be loaded; it needs no GPU.
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library can be opened.
    std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// `kernels.cu` compiled to PTX for `arch` (e.g. `"compute_90"`; `None`: NVRTC's default).
pub fn compile_kernels(arch: Option<&'static str>) -> Result<Ptx, KernelError> {
    if !nvrtc_available() {
        return Err(KernelError::Cuda(
            "NVRTC (libnvrtc) was not found on the library path".into(),
        ));
    }
    let options = CompileOptions {
        arch,
        name: Some("speechinfer_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options)
        .map_err(|e| KernelError::Cuda(format!("compiling kernels.cu: {e:?}")))
}

/// The virtual architecture NVRTC targets for a compute capability (the newest one listed
/// that the device can run).
fn arch_for(major: i32, minor: i32) -> Option<&'static str> {
    const ARCHES: [(i32, &str); 7] = [
        (75, "compute_75"),
        (80, "compute_80"),
        (86, "compute_86"),
        (89, "compute_89"),
        (90, "compute_90"),
        (100, "compute_100"),
        (120, "compute_120"),
    ];
    let cc = major * 10 + minor;
    ARCHES.iter().rev().find(|(c, _)| *c <= cc).map(|(_, a)| *a)
}

/// A device's stream and the loaded kernels.
pub(crate) struct Runtime {
    pub stream: Arc<CudaStream>,
    pub embed_sum: CudaFunction,
    pub rms_norm: CudaFunction,
    pub matmul_xwt: CudaFunction,
    pub rope_kv_write: CudaFunction,
    pub attend_one: CudaFunction,
    pub silu_mul: CudaFunction,
    pub advance_positions: CudaFunction,
    pub sample_tokens: CudaFunction,
}

impl Runtime {
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        if !driver_available() {
            return Err(KernelError::Cuda(
                "no CUDA driver or device found (libcuda did not load or lists no GPU)".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
        // One stream, and graphs captured on it: cross-stream event tracking is not needed
        // and would record events inside captures.
        // SAFETY: every buffer of a decoder is used on its one stream only.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(cuda_err)?;
        let module = ctx
            .load_module(compile_kernels(arch_for(major, minor))?)
            .map_err(cuda_err)?;
        let f = |name: &str| module.load_function(name).map_err(cuda_err);
        Ok(Self {
            stream: ctx.new_stream().map_err(cuda_err)?,
            embed_sum: f("embed_sum")?,
            rms_norm: f("rms_norm")?,
            matmul_xwt: f("matmul_xwt")?,
            rope_kv_write: f("rope_kv_write")?,
            attend_one: f("attend_one")?,
            silu_mul: f("silu_mul")?,
            advance_positions: f("advance_positions")?,
            sample_tokens: f("sample_tokens")?,
        })
    }
}
