//! Tensor-level entry points to the CPU kernels of [`crate::kernels`], shared by the models.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use half::bf16;

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

/// `t` with every value rounded to the nearest bfloat16 (kept in `t`'s dtype).
pub fn round_to_bf16(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::BF16)?.to_dtype(t.dtype())?)
}

/// A linear weight `[out, in]` for [`linear_rows`]. Rounded to bfloat16
/// ([`LinearWeight::round_to_bf16`]), it keeps a bf16 copy that decoding steps stream (half the
/// bytes) while longer inputs multiply the same rounded values in f32 through the GEMM.
#[derive(Debug, Clone)]
pub struct LinearWeight {
    weight: Tensor,
    bf16: Option<Vec<bf16>>,
}

impl LinearWeight {
    pub fn new(weight: Tensor) -> Self {
        Self { weight, bf16: None }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn round_to_bf16(&mut self) -> Result<()> {
        let rounded = self.weight.to_dtype(DType::BF16)?;
        self.bf16 = Some(rounded.flatten_all()?.to_vec1::<bf16>()?);
        self.weight = rounded.to_dtype(self.weight.dtype())?;
        Ok(())
    }

    /// `x [rows, in] · wᵀ` as [`linear_rows`] computes it.
    pub fn forward(&self, x: &Tensor, one_step: bool) -> Result<Tensor> {
        if let (true, Some(w)) = (one_step, &self.bf16) {
            let (rows, k) = x.dims2()?;
            let n = self.weight.dim(0)?;
            let y = with_cpu_f32(x, |xs| crate::kernels::matmul_xwt_bf16(xs, rows, w, n, k))?;
            if let Some(y) = y {
                return Ok(Tensor::from_vec(y, (rows, n), x.device())?);
            }
        }
        linear_rows(x, &self.weight, one_step)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// A rounded weight gives the same rows through the bf16 kernel (a step) and the GEMM
    /// (prefill), and they differ from the unrounded weight's.
    #[test]
    fn bf16_linear_weight_is_one_model_on_both_paths() {
        let (n, k, rows) = (48, 64, 3);
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.377).sin() * 0.3).collect();
        let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.731).cos()).collect();
        let dev = Device::Cpu;
        let weight = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let x = Tensor::from_vec(x, (rows, k), &dev).unwrap();
        let exact = LinearWeight::new(weight.clone());
        let mut rounded = LinearWeight::new(weight);
        rounded.round_to_bf16().unwrap();
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let step = values(rounded.forward(&x, true).unwrap());
        let gemm = values(rounded.forward(&x, false).unwrap());
        let f32_step = values(exact.forward(&x, true).unwrap());
        let mut drift = 0f32;
        for ((s, g), e) in step.iter().zip(&gemm).zip(&f32_step) {
            assert!(
                (s - g).abs() <= 1e-5 * g.abs().max(1.0),
                "step {s} vs gemm {g}"
            );
            drift = drift.max((s - e).abs());
        }
        assert!(drift > 1e-4, "rounding changed nothing ({drift})");
    }
}
