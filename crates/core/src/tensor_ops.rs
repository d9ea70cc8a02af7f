//! Tensor-level entry points to the CPU kernels of [`crate::kernels`], shared by the models.

use candle_core::{DType, Device, Tensor};

use crate::Result;

/// `x [rows, in] · wᵀ`. A decoding step (`one_step`: one row per sequence) goes through the
/// weight-streaming kernel on the CPU, so that a sequence's numbers do not depend on how many
/// others share the step; longer inputs (prefill) use the GEMM.
pub fn linear_rows(x: &Tensor, w: &Tensor, one_step: bool) -> Result<Tensor> {
    if one_step {
        if let Some(y) = cpu_xwt(x, w)? {
            return Ok(y);
        }
    }
    Ok(x.matmul(&w.t()?)?)
}

/// [`crate::kernels::matmul_xwt`] on CPU f32 tensors; `None` elsewhere.
fn cpu_xwt(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let (rows, k) = x.dims2()?;
    let n = w.dim(0)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let y = {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (candle_core::Storage::Cpu(xs), candle_core::Storage::Cpu(ws)) = (&*xs, &*ws) else {
            return Ok(None);
        };
        let xv = &xs.as_slice::<f32>()?[xl.start_offset()..][..rows * k];
        let wv = &ws.as_slice::<f32>()?[wl.start_offset()..][..n * k];
        crate::kernels::matmul_xwt(xv, rows, wv, n, k)
    };
    Ok(Some(Tensor::from_vec(y, (rows, n), x.device())?))
}
