//! Loading the driver, compiling `kernels.cu` and `codec_kernels.cu` with NVRTC and looking up
//! their functions.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::KernelError;

const SOURCE: &str = include_str!("kernels.cu");
const CODEC_SOURCE: &str = include_str!("codec_kernels.cu");

/// Every `extern "C"` kernel of `codec_kernels.cu`.
pub const CODEC_KERNEL_NAMES: [&str; 4] = [
    "rvq_sum",
    "elu_copy",
    "conv1d_causal",
    "conv_transpose1d_causal",
];

/// Every `extern "C"` kernel of `kernels.cu`.
pub const KERNEL_NAMES: [&str; 9] = [
    "embed_sum",
    "rms_norm",
    "matmul_xwt",
    "rope_kv_write",
    "attend_one",
    "silu_mul",
    "advance_positions",
    "sample_tokens",
    "feed_back",
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

/// `kernels.cu` (the LM step) compiled to PTX for `arch` (e.g. `"compute_90"`; `None`: NVRTC's
/// default).
pub fn compile_kernels(arch: Option<&'static str>) -> Result<Ptx, KernelError> {
    compile(SOURCE, "speechinfer_kernels.cu", arch)
}

/// `codec_kernels.cu` (the codec decode) compiled to PTX for `arch`.
pub fn compile_codec_kernels(arch: Option<&'static str>) -> Result<Ptx, KernelError> {
    compile(CODEC_SOURCE, "speechinfer_codec_kernels.cu", arch)
}

fn compile(source: &str, name: &str, arch: Option<&'static str>) -> Result<Ptx, KernelError> {
    if !nvrtc_available() {
        return Err(KernelError::Cuda(
            "NVRTC (libnvrtc) was not found on the library path".into(),
        ));
    }
    let options = CompileOptions {
        arch,
        name: Some(name.into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source, options)
        .map_err(|e| KernelError::Cuda(format!("compiling {name}: {e:?}")))
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
    pub feed_back: CudaFunction,
}

impl Runtime {
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        let (stream, module) = open(ordinal, compile_kernels)?;
        let f = |name: &str| module.load_function(name).map_err(cuda_err);
        Ok(Self {
            embed_sum: f("embed_sum")?,
            rms_norm: f("rms_norm")?,
            matmul_xwt: f("matmul_xwt")?,
            rope_kv_write: f("rope_kv_write")?,
            attend_one: f("attend_one")?,
            silu_mul: f("silu_mul")?,
            advance_positions: f("advance_positions")?,
            sample_tokens: f("sample_tokens")?,
            feed_back: f("feed_back")?,
            stream,
        })
    }
}

/// A device's stream and the codec kernels.
pub(crate) struct CodecRuntime {
    pub stream: Arc<CudaStream>,
    pub rvq_sum: CudaFunction,
    pub elu_copy: CudaFunction,
    pub conv1d_causal: CudaFunction,
    pub conv_transpose1d_causal: CudaFunction,
}

impl CodecRuntime {
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        let (stream, module) = open(ordinal, compile_codec_kernels)?;
        let f = |name: &str| module.load_function(name).map_err(cuda_err);
        Ok(Self {
            rvq_sum: f("rvq_sum")?,
            elu_copy: f("elu_copy")?,
            conv1d_causal: f("conv1d_causal")?,
            conv_transpose1d_causal: f("conv_transpose1d_causal")?,
            stream,
        })
    }
}

/// A new stream on GPU `ordinal` and a module compiled for its architecture.
fn open(
    ordinal: usize,
    compile: fn(Option<&'static str>) -> Result<Ptx, KernelError>,
) -> Result<(Arc<CudaStream>, Arc<CudaModule>), KernelError> {
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
        .load_module(compile(arch_for(major, minor))?)
        .map_err(cuda_err)?;
    Ok((ctx.new_stream().map_err(cuda_err)?, module))
}

/// A kernel argument: a device pointer or a scalar.
pub(crate) enum Arg {
    Ptr(u64),
    Int(i32),
    Long(i64),
    Float(f32),
}

/// Launches `f` on `stream` with `args` in the order of the kernel's parameters.
pub(crate) fn launch(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    cfg: LaunchConfig,
    args: &[Arg],
) -> Result<(), KernelError> {
    let mut builder = stream.launch_builder(f);
    for arg in args {
        match arg {
            Arg::Ptr(p) => builder.arg(p),
            Arg::Int(i) => builder.arg(i),
            Arg::Long(i) => builder.arg(i),
            Arg::Float(x) => builder.arg(x),
        };
    }
    // SAFETY: callers pass live buffers sized for the launch, in the order and types of the
    // kernel signatures in kernels.cu / codec_kernels.cu.
    unsafe { builder.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// The device address of `s` (event tracking is off, so the guard records nothing).
pub(crate) fn raw_ptr<T>(stream: &Arc<CudaStream>, s: &CudaSlice<T>) -> u64 {
    let (ptr, _guard) = s.device_ptr(stream);
    ptr
}

pub(crate) fn grid(grid_dim: (u32, u32, u32), threads: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim,
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared,
    }
}
