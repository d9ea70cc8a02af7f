//! Streaming decoders for a fixed set of slots (continuous batching): each slot is its own
//! utterance, reset on its own, and every call decodes the next frames of any subset of the
//! slots in batched steps.

use candle_core::{Device, Tensor};
use speechinfer_core::{Error, Result};

use crate::model::Codec;
use crate::state::StreamState;

/// The next frames of one slot: codes `[q, n]` row-major.
pub struct SlotFrames<'a> {
    pub slot: usize,
    pub codes: &'a [i64],
    pub frames: usize,
}

/// The shapes of a slot's carried tensors (`None`: not made yet).
type StateShapes = Vec<Option<Vec<usize>>>;

/// One streaming decoder state per slot. A slot's frames are always decoded one frame per step,
/// stacked with the other slots that have a frame and a state of the same shapes, so what a slot
/// hears depends only on its own codes: the same alone as beside others.
pub struct SlotDecoders {
    states: Vec<StreamState>,
}

impl SlotDecoders {
    pub fn new(slots: usize) -> Self {
        Self {
            states: (0..slots).map(|_| StreamState::new(1)).collect(),
        }
    }

    pub fn num_slots(&self) -> usize {
        self.states.len()
    }

    /// A new utterance in `slot`: every carried tensor (conv context, transformer keys, values
    /// and positions) is dropped, as in a decoder made now.
    pub fn reset(&mut self, slot: usize) -> Result<()> {
        let slots = self.states.len();
        let state = self.states.get_mut(slot).ok_or_else(|| {
            Error::input(format!("slot {slot} is out of range for {slots} slots"))
        })?;
        *state = StreamState::new(1);
        Ok(())
    }

    /// Decodes each job's frames as the continuation of its slot's stream; returns the audio
    /// of each job, `[channels, n · hop]` row-major, in job order.
    pub fn decode(&mut self, codec: &Codec, jobs: &[SlotFrames]) -> Result<Vec<Vec<f32>>> {
        let slots = self.states.len();
        let mut out: Vec<Vec<f32>> = jobs.iter().map(|_| Vec::new()).collect();
        let mut q = None;
        for (j, job) in jobs.iter().enumerate() {
            if job.slot >= slots || jobs[..j].iter().any(|o| o.slot == job.slot) {
                return Err(Error::input(format!(
                    "slot {} is out of range for {slots} slots or given twice",
                    job.slot
                )));
            }
            let codebooks = job.codes.len() / job.frames.max(1);
            if job.frames == 0 || codebooks * job.frames != job.codes.len() {
                return Err(Error::input(
                    "slot frames must be [codebooks, frames], frames >= 1",
                ));
            }
            if q.is_some_and(|q| q != codebooks) {
                return Err(Error::input(
                    "every slot must give the same number of codebooks",
                ));
            }
            q = Some(codebooks);
        }
        let Some(q) = q else {
            return Ok(out);
        };
        let longest = jobs.iter().map(|j| j.frames).max().unwrap_or(0);
        for f in 0..longest {
            let active: Vec<usize> = (0..jobs.len()).filter(|&j| jobs[j].frames > f).collect();
            for group in self.groups(jobs, &active) {
                let codes: Vec<i64> = group
                    .iter()
                    .flat_map(|&j| {
                        let job = &jobs[j];
                        (0..q).map(move |k| job.codes[k * job.frames + f])
                    })
                    .collect();
                let codes = Tensor::from_vec(codes, (group.len(), q, 1), &Device::Cpu)?
                    .to_device(codec.device())?;
                let states: Vec<&StreamState> =
                    group.iter().map(|&j| &self.states[jobs[j].slot]).collect();
                let mut stacked = StreamState::stack(&states)?;
                let audio = codec.decode_step(&mut stacked, &codes)?;
                let audio = audio
                    .flatten_all()?
                    .to_device(&Device::Cpu)?
                    .to_vec1::<f32>()?;
                let per_item = audio.len() / group.len();
                for ((&j, state), samples) in group
                    .iter()
                    .zip(stacked.unstack()?)
                    .zip(audio.chunks(per_item))
                {
                    self.states[jobs[j].slot] = state;
                    out[j].extend_from_slice(samples);
                }
            }
        }
        if codec.channels() > 1 {
            // Frames came one at a time: regroup `[n][C, hop]` into `[C, n · hop]`.
            let (c, hop) = (codec.channels(), codec.hop_length());
            for (audio, job) in out.iter_mut().zip(jobs) {
                let mut planar = vec![0f32; audio.len()];
                for (f, frame) in audio.chunks(c * hop).enumerate() {
                    for (ch, samples) in frame.chunks(hop).enumerate() {
                        let at = ch * job.frames * hop + f * hop;
                        planar[at..at + hop].copy_from_slice(samples);
                    }
                }
                *audio = planar;
            }
        }
        Ok(out)
    }

    /// `active` jobs split into runs whose slot states have the same shapes.
    fn groups(&self, jobs: &[SlotFrames], active: &[usize]) -> Vec<Vec<usize>> {
        let mut groups: Vec<(StateShapes, Vec<usize>)> = Vec::new();
        for &j in active {
            let shapes = self.states[jobs[j].slot].shapes();
            match groups.iter_mut().find(|(s, _)| *s == shapes) {
                Some((_, members)) => members.push(j),
                None => groups.push((shapes, vec![j])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }
}
