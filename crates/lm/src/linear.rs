//! A projection `x · wᵀ` whose weight may be stored as int8 for decoding steps.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use speechinfer_core::kernels::Q8Matrix;
use speechinfer_core::Result;

use crate::attention::linear_rows;

/// Weight `[out, in]`, f32; after [`Linear::quantize_int8`] also an int8 copy that decoding
/// steps on the CPU stream instead (a quarter of the bytes), while longer inputs (prefill) use
/// the GEMM on the dequantized f32 weight: one int8 model either way.
#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    q8: Option<Arc<Q8Matrix>>,
}

impl Linear {
    pub fn new(weight: Tensor) -> Self {
        Self { weight, q8: None }
    }

    /// The f32 weight `[out, in]` row-major (after int8 quantization: its dequantized values).
    pub fn host_weight(&self) -> Result<Vec<f32>> {
        host_values(&self.weight)
    }

    pub fn out_dim(&self) -> Result<usize> {
        Ok(self.weight.dim(0)?)
    }

    /// Store the weight as int8 with one scale per output row (symmetric, round to nearest).
    pub fn quantize_int8(&mut self) -> Result<()> {
        if self.q8.is_some() {
            return Ok(());
        }
        let (n, k) = self.weight.dims2()?;
        let values = self
            .weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let q8 = Q8Matrix::quantize(&values, n, k);
        let device = self.weight.device().clone();
        self.weight =
            Tensor::from_vec(q8.dequantize(), (n, k), &device)?.to_dtype(self.weight.dtype())?;
        self.q8 = Some(Arc::new(q8));
        Ok(())
    }

    /// `x [B, S, in]` → `[B, S, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let out = self.out_dim()?;
        Ok(self
            .forward_rows(&x.reshape((b * s, d))?, s == 1)?
            .reshape((b, s, out))?)
    }

    /// `x [rows, in]` → `[rows, out]`; `one_step`: one row per sequence (a decoding step).
    pub fn forward_rows(&self, x: &Tensor, one_step: bool) -> Result<Tensor> {
        if let (true, Some(q8)) = (one_step, &self.q8) {
            if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
                let rows = x.dim(0)?;
                let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let y = q8.matmul_xwt(&xs, rows);
                return Ok(Tensor::from_vec(y, (rows, q8.rows()), x.device())?);
            }
        }
        linear_rows(x, &self.weight, one_step)
    }
}

/// Every value of `t` as f32, row-major.
pub(crate) fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}
