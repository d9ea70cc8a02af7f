//! Generation under `pattern: "coarse_first"` (VALL-E): the AR model continues stream 0, then
//! the NAR model fills streams 1..K−1 stage by stage (`docs/lm.md`, "Coarse-first").

use speechinfer_core::{Error, Result};

use crate::decoder::Decoder;
use crate::generate::{GenerateRequest, Prompt};
use crate::model::SpeechLm;
use crate::picker::Picker;

impl SpeechLm {
    pub(crate) fn generate_coarse_first(&self, request: &GenerateRequest) -> Result<Vec<Vec<i64>>> {
        let nar = self
            .nar()
            .ok_or_else(|| Error::internal("coarse_first model without its NAR stage model"))?;
        // Validates prompts, sampling and lengths exactly like the other patterns.
        let generation = self.start_generation(request)?;
        drop(generation);
        let n = request.max_frames;
        if n == 0 {
            return Ok(request.prompts.iter().map(|p| p.tokens.clone()).collect());
        }
        let k_n = self.num_streams();
        let first_rows: Vec<Prompt> = request
            .prompts
            .iter()
            .map(|p| Prompt {
                tokens: p.tokens[..p.frames].to_vec(),
                frames: p.frames,
            })
            .collect();
        let pickers = self.pickers_for(request)?;
        let prompts: Vec<(&[i64], usize)> = first_rows
            .iter()
            .map(|p| (p.tokens.as_slice(), p.frames))
            .collect();
        let mut ar =
            Decoder::for_generation(self, &prompts, n, pickers, request.stop_on_eos, None)?;
        ar.run(self)?;

        let streams = &self.config().streams;
        let mut grids = Vec::with_capacity(request.prompts.len());
        for (b, prompt) in request.prompts.iter().enumerate() {
            let (t_n, total) = (prompt.frames, prompt.frames + n);
            let end = ar.end_frame(b);
            let mut grid = vec![-1i64; k_n * total];
            for k in 0..k_n {
                grid[k * total..][..t_n].copy_from_slice(&prompt.tokens[k * t_n..][..t_n]);
            }
            for (t, cell) in grid[..total].iter_mut().enumerate() {
                *cell = ar.frame(b, t)[0];
            }
            let picker = ar.picker_mut(b);
            for stage in 1..k_n {
                let s = &streams[stage];
                let fill = s.pad_id.or(s.eos_id).map_or(s.special_id(), i64::from);
                let at_end = s.eos_id.or(s.pad_id).map(i64::from);
                for t in 0..t_n {
                    picker.record(stage, grid[stage * total + t]);
                }
                let logits = nar.logits(&grid, 1, total, stage, t_n)?;
                let values = logits.flatten_all()?.to_vec1::<f32>()?;
                let v = s.vocab_size;
                for t in t_n..total {
                    let token = match end {
                        Some(e) if t > e => fill,
                        Some(e) if t == e && at_end.is_some() => at_end.unwrap_or(fill),
                        _ => i64::from(pick(picker, stage, &values[t * v..][..v])?),
                    };
                    grid[stage * total + t] = token;
                    picker.record(stage, token);
                }
            }
            grids.push(grid);
        }
        Ok(grids)
    }
}

fn pick(picker: &mut Picker, stage: usize, row: &[f32]) -> Result<u32> {
    picker.pick(stage, row, None)
}
