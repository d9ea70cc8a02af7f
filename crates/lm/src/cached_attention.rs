//! Attention of a few new positions over a slot's KV cache, read straight from the cache
//! buffer (decoding steps). Candle's path copies the keys and values of the attended length
//! into GEMM panels once per step and pays a GEMM set-up per (sequence, head) for one query
//! row; here every (sequence, kv head) is one task that reads its keys and values once for all
//! the query heads sharing them.

use rayon::prelude::*;
use speechinfer_core::kernels::dot;

/// Shapes of one call: `n` sequences (consecutive cache slots from `first_slot`, all holding
/// `offset` positions before this step) with `s` new positions each.
pub(crate) struct CachedShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub capacity: usize,
    pub first_slot: usize,
    pub n: usize,
    pub s: usize,
    pub offset: usize,
}

/// `q [n, H, s, hd]` (RoPE applied) against the caches `[slots, Hkv, capacity, hd]` whose
/// positions `..offset + s` are written; query `i` sees positions `..=offset + i`. Returns
/// `[n, H, s, hd]`.
pub(crate) fn attend_cached(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    sh: &CachedShape,
) -> Vec<f32> {
    let (hd, hkv, s) = (sh.head_dim, sh.n_kv_heads, sh.s);
    let rep = sh.n_heads / hkv;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let group = rep * s * hd;
    let mut out = vec![0f32; sh.n * sh.n_heads * s * hd];
    out.par_chunks_mut(group)
        .enumerate()
        .for_each(|(task, out)| {
            let (seq, kv_head) = (task / hkv, task % hkv);
            let base = ((sh.first_slot + seq) * hkv + kv_head) * sh.capacity * hd;
            let keys = &k_cache[base..base + (sh.offset + s) * hd];
            let values = &v_cache[base..base + (sh.offset + s) * hd];
            let queries = &q[(seq * sh.n_heads + kv_head * rep) * s * hd..][..group];
            let mut scores = vec![0f32; sh.offset + s];
            for (row, (query, out)) in queries
                .chunks_exact(hd)
                .zip(out.chunks_exact_mut(hd))
                .enumerate()
            {
                let seen = sh.offset + row % s + 1;
                let scores = &mut scores[..seen];
                for (score, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
                    *score = dot(query, key) * scale;
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for score in scores.iter_mut() {
                    *score = (*score - max).exp();
                    sum += *score;
                }
                for (&p, value) in scores.iter().zip(values.chunks_exact(hd)) {
                    let p = p / sum;
                    out.iter_mut().zip(value).for_each(|(o, &v)| *o += p * v);
                }
            }
        });
    out
}
