//! Tensor-level entry points to the CPU kernels of [`crate::kernels`], shared by the models.

use candle_core::{CpuStorage, Storage, Tensor};

use crate::Result;

/// Whether `t` is an f32 tensor on the CPU (the dtype and device the CPU kernels serve).
pub fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// Runs `f` on the elements of a CPU f32 tensor (made contiguous first); `None` for any other
/// device or dtype, which then take candle's ops.
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    if !is_cpu_f32(t) {
        return Ok(None);
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    Ok(Some(f(&values[start..end])))
}

/// `x [rows, in] · wᵀ`. A decoding step (`one_step`: one row per sequence) goes through the
/// weight-streaming kernel on the CPU, so that a sequence's numbers do not depend on how many
/// others share the step; longer inputs (prefill) use the GEMM.
pub fn linear_rows(x: &Tensor, w: &Tensor, one_step: bool) -> Result<Tensor> {
    if one_step {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        let y = with_cpu_f32(w, |ws| {
            with_cpu_f32(x, |xs| crate::kernels::matmul_xwt(xs, rows, ws, n, k))
        })?;
        if let Some(Some(y)) = y.transpose()? {
            return Ok(Tensor::from_vec(y, (rows, n), x.device())?);
        }
    }
    Ok(x.matmul(&w.t()?)?)
}
