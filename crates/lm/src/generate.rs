//! Greedy continuation of a prompt frame grid (`docs/lm.md`, "Greedy generation").

use speechinfer_core::sampling::argmax;
use speechinfer_core::{Error, Result};

use crate::model::{GridShape, SpeechLm};

/// Marks a step position whose token is still to be generated.
const TO_GENERATE: i64 = -1;

impl SpeechLm {
    /// Continues each prompt `[B, K, T]` (frames) by `max_frames` greedy frames; returns the
    /// frame grid `[B, K, T + max_frames]` row-major, delays reverted.
    pub fn generate_greedy(
        &self,
        prompt: &[i64],
        shape: GridShape,
        max_frames: usize,
    ) -> Result<Vec<i64>> {
        self.check_tokens(prompt, shape, "prompt")?;
        let (b, k_n, t_n) = (shape.batch, shape.streams, shape.len);
        let max_context = self.config().max_context;
        let total = t_n.saturating_add(max_frames);
        if total > max_context {
            return Err(Error::input(format!(
                "prompt of {t_n} frames + max_frames {max_frames} exceeds max_context {max_context}"
            )));
        }
        let out = GridShape::new(b, k_n, total);
        if max_frames == 0 {
            return Ok(prompt.to_vec());
        }
        let layout = self.layout(total)?;
        let s_n = layout.num_steps();
        self.check_context(
            s_n - 1,
            &format!("prompt of {t_n} frames + max_frames {max_frames}"),
        )?;

        // Step buffer [B, K, S]: specials, forced prompt tokens, and positions to generate.
        let specials = self.config().special_ids();
        let mut steps = vec![TO_GENERATE; b * k_n * s_n];
        for bi in 0..b {
            for k in 0..k_n {
                for s in 0..s_n {
                    steps[(bi * k_n + k) * s_n + s] = match layout.frame_at(s, k) {
                        None => specials[k],
                        Some(t) if t < t_n => prompt[(bi * k_n + k) * t_n + t],
                        Some(_) => TO_GENERATE,
                    };
                }
            }
        }
        let first = (0..s_n)
            .find(|&s| (0..k_n).any(|k| steps[k * s_n + s] == TO_GENERATE))
            .ok_or_else(|| Error::internal("nothing to generate"))?;

        let mut cache = self.new_cache(b)?;
        // Prefill columns [0, first), then one column at a time; the logits of the last fed
        // column fill the generated positions of the next one.
        let mut fed = 0;
        let mut next = first;
        while next < s_n {
            let width = next - fed;
            let mut chunk = Vec::with_capacity(b * k_n * width);
            for row in steps.chunks(s_n) {
                chunk.extend_from_slice(&row[fed..next]);
            }
            let logits = self.forward(&chunk, GridShape::new(b, k_n, width), &mut cache)?;
            for (k, logits) in logits.iter().enumerate() {
                let last = logits
                    .narrow(1, width - 1, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let v = self.config().streams[k].vocab_size;
                for bi in 0..b {
                    let pos = (bi * k_n + k) * s_n + next;
                    if steps[pos] == TO_GENERATE {
                        let row = &last[bi * v..][..v];
                        let token = argmax(row).ok_or_else(|| {
                            Error::internal(format!("stream {k}: every logit is -inf"))
                        })?;
                        steps[pos] = token as i64;
                    }
                }
            }
            fed = next;
            next += 1;
        }

        let mut grid = Vec::with_capacity(out.numel());
        for item in steps.chunks(k_n * s_n) {
            let (frames, valid) = layout
                .revert(item)
                .map_err(|e| Error::internal(e.to_string()))?;
            if !valid.iter().all(|&v| v) {
                return Err(Error::internal("generation left a frame unfilled"));
            }
            grid.extend(frames);
        }
        Ok(grid)
    }
}
