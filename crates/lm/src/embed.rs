//! Summed token embeddings, honouring the `-1` "no input" marker (a zero vector).

use candle_core::{Device, Tensor};
use speechinfer_core::{Error, Result};

/// The "no input" marker: the position contributes nothing to the summed embedding.
pub const NO_INPUT: i64 = -1;
/// The "sample here" marker of `session.step` frames.
pub const SAMPLE: i64 = -2;

/// Rows `ids` (`-1` = zero row) of `table [V, d]` → `[n, d]`.
pub fn lookup(table: &Tensor, ids: &[i64], device: &Device) -> Result<Tensor> {
    let gather: Vec<u32> = ids.iter().map(|&t| t.max(0) as u32).collect();
    let rows = table.index_select(&Tensor::from_vec(gather, ids.len(), device)?, 0)?;
    if !ids.contains(&NO_INPUT) {
        return Ok(rows);
    }
    let keep: Vec<f32> = ids.iter().map(|&t| f32::from(t != NO_INPUT)).collect();
    let keep = Tensor::from_vec(keep, (ids.len(), 1), device)?;
    Ok(rows.broadcast_mul(&keep)?)
}

/// `Σ_k tables[k][tokens[:, k, :]]` for a row-major `[B, K, S]` buffer → `[B, S, d]`.
/// `tables` may be shorter than K: only the first `tables.len()` streams are read.
pub fn embed_sum(
    tables: &[Tensor],
    tokens: &[i64],
    (b, k_n, s): (usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for (k, table) in tables.iter().enumerate().take(k_n) {
        let ids: Vec<i64> = (0..b)
            .flat_map(|bi| tokens[(bi * k_n + k) * s..][..s].iter().copied())
            .collect();
        let e = lookup(table, &ids, device)?;
        sum = Some(match sum {
            None => e,
            Some(acc) => (acc + e)?,
        });
    }
    let sum = sum.ok_or_else(|| Error::internal("embedding sum over no streams"))?;
    let d = sum.dim(1)?;
    Ok(sum.reshape((b, s, d))?)
}
