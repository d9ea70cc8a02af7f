//! Streaming state of a causal conv stack: one optional left-context / overlap-tail tensor per
//! layer, visited in the same order on every call.

use candle_core::Tensor;
use speechinfer_core::{Error, Result};

/// The carried state of a streaming encoder or decoder for a batch of `batch_size` streams.
#[derive(Debug, Clone)]
pub struct StreamState {
    batch_size: usize,
    slots: Vec<Option<Tensor>>,
    /// Samples received by a streaming encoder that do not yet fill a frame: `[B, C, n < hop]`.
    pub(crate) pending: Option<Tensor>,
}

impl StreamState {
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            slots: Vec::new(),
            pending: None,
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Forget everything: the next call starts a new utterance for every stream.
    pub fn reset(&mut self) {
        self.slots.clear();
        self.pending = None;
    }

    /// Start a new utterance in one stream of the batch, leaving the others untouched.
    pub fn reset_item(&mut self, index: usize) -> Result<()> {
        if index >= self.batch_size {
            return Err(Error::input(format!(
                "batch index {index} is out of range for a stream of batch size {}",
                self.batch_size
            )));
        }
        if self.pending.is_some() {
            return Err(Error::input(
                "cannot reset one stream while the encoder holds a partial frame for the batch",
            ));
        }
        let mut keep = vec![1f32; self.batch_size];
        keep[index] = 0.0;
        for slot in self.slots.iter_mut().flatten() {
            // Batch first, whatever the slot's rank.
            let mut shape = vec![1; slot.rank()];
            shape[0] = self.batch_size;
            let mask = Tensor::from_slice(&keep, shape, slot.device())?.to_dtype(slot.dtype())?;
            *slot = slot.broadcast_mul(&mask)?;
        }
        Ok(())
    }

    /// Shapes of the carried tensors in visiting order (`None`: not made yet). Streams whose
    /// states have the same shapes can be stacked into one batch.
    pub(crate) fn shapes(&self) -> Vec<Option<Vec<usize>>> {
        self.slots
            .iter()
            .map(|slot| slot.as_ref().map(|t| t.dims().to_vec()))
            .collect()
    }

    /// One state for the streams of `states` side by side (all with equal [`Self::shapes`] and
    /// no partial encoder frame), in their order.
    pub(crate) fn stack(states: &[&StreamState]) -> Result<StreamState> {
        let batch_size = states.iter().map(|s| s.batch_size).sum();
        let first = states
            .first()
            .ok_or_else(|| Error::internal("stacking no stream states"))?;
        let mut slots = Vec::with_capacity(first.slots.len());
        for i in 0..first.slots.len() {
            let parts: Vec<&Tensor> = states.iter().filter_map(|s| s.slots[i].as_ref()).collect();
            slots.push(match parts.len() {
                0 => None,
                n if n == states.len() => Some(Tensor::cat(&parts, 0)?),
                _ => {
                    return Err(Error::internal(
                        "stacking stream states of different shapes",
                    ))
                }
            });
        }
        if states.iter().any(|s| s.pending.is_some()) {
            return Err(Error::internal(
                "stacking encoder states with partial frames",
            ));
        }
        Ok(StreamState {
            batch_size,
            slots,
            pending: None,
        })
    }

    /// The inverse of [`Self::stack`]: one state per stream, batch size 1 each.
    pub(crate) fn unstack(self) -> Result<Vec<StreamState>> {
        let mut out: Vec<StreamState> = (0..self.batch_size).map(|_| StreamState::new(1)).collect();
        for slot in self.slots {
            for (b, state) in out.iter_mut().enumerate() {
                state
                    .slots
                    .push(slot.as_ref().map(|t| t.narrow(0, b, 1)).transpose()?);
            }
        }
        Ok(out)
    }

    pub(crate) fn cursor(&mut self) -> Cursor<'_> {
        Cursor {
            slots: &mut self.slots,
            pos: 0,
        }
    }

    pub(crate) fn check_batch(&self, batch: usize, what: &str) -> Result<()> {
        if batch != self.batch_size {
            return Err(Error::input(format!(
                "{what} has batch size {batch}, but the stream was created for batch size {}",
                self.batch_size
            )));
        }
        Ok(())
    }
}

/// Hands out the state slots layer by layer.
pub(crate) struct Cursor<'a> {
    slots: &'a mut Vec<Option<Tensor>>,
    pos: usize,
}

impl Cursor<'_> {
    /// `stage(x)` over `x` `[B, C, T]` as a stream of chunks of `step` time steps, each chunk
    /// visiting the stage's own slots: the same result as one call on a causal stage with
    /// carried state, with buffers small enough to stay in cache.
    pub(crate) fn in_chunks(
        &mut self,
        x: &Tensor,
        step: usize,
        mut stage: impl FnMut(&Tensor, &mut Self) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let len = x.dim(2)?;
        if len <= step {
            return stage(x, self);
        }
        let first = self.pos;
        let mut outputs = Vec::with_capacity(len.div_ceil(step));
        for start in (0..len).step_by(step) {
            self.pos = first;
            outputs.push(stage(&x.narrow(2, start, step.min(len - start))?, self)?);
        }
        Ok(Tensor::cat(&outputs, 2)?)
    }

    pub(crate) fn next_slot(&mut self) -> &mut Option<Tensor> {
        if self.pos == self.slots.len() {
            self.slots.push(None);
        }
        self.pos += 1;
        &mut self.slots[self.pos - 1]
    }

    /// The next two slots at once (a layer whose state is two tensors).
    pub(crate) fn next_pair(&mut self) -> (&mut Option<Tensor>, &mut Option<Tensor>) {
        while self.slots.len() < self.pos + 2 {
            self.slots.push(None);
        }
        self.pos += 2;
        let (first, second) = self.slots[self.pos - 2..self.pos].split_at_mut(1);
        (&mut first[0], &mut second[0])
    }
}

pub(crate) fn zeros_like_context(x: &Tensor, len: usize) -> Result<Tensor> {
    let (b, c, _) = x.dims3()?;
    Ok(Tensor::zeros((b, c, len), x.dtype(), x.device())?)
}
