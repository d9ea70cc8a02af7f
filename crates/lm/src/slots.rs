//! Continuous batching: a fixed number of sequence slots over one batched decoder. Each slot
//! starts, steps, flushes and is reset on its own; one [`SlotSession::run`] feeds every slot that
//! was given a frame in one batched forward. A sequence's tokens depend only on its own frames,
//! sampling and seed (the decoding step computes every row alone), so it gets the same tokens in
//! any slot, beside any other sequences, as in a one-sequence [`crate::Session`].

use speechinfer_core::{Error, Result};

use crate::decoder::{Decoder, UNKNOWN};
use crate::embed::SAMPLE;
use crate::model::{check_batch, SpeechLm};
use crate::picker::{Picker, StreamSampling};
use crate::session::{check_frame, check_session_pattern};

pub struct SlotSession {
    decoder: Decoder,
    slots: usize,
    guided: bool,
    /// Frames of each slot already handed out by [`SlotSession::take`].
    returned: Vec<usize>,
}

impl SpeechLm {
    /// `slots` independent sequence slots; `guided` gives each an unconditional twin (then
    /// every slot's sampling must use `cfg_scale`).
    pub fn slot_session(&self, slots: usize, guided: bool) -> Result<SlotSession> {
        check_batch(if guided { 2 * slots } else { slots })?;
        check_session_pattern(self, guided)?;
        let k_n = self.num_streams();
        let pickers = (0..slots)
            .map(|_| Picker::new(StreamSampling::greedy(k_n), 0, k_n))
            .collect();
        Ok(SlotSession {
            decoder: Decoder::for_session(self, pickers, guided)?,
            slots,
            guided,
            returned: vec![0; slots],
        })
    }
}

impl SlotSession {
    pub fn num_slots(&self) -> usize {
        self.slots
    }

    pub fn guided(&self) -> bool {
        self.guided
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.slots {
            return Err(Error::input(format!(
                "slot {slot} is out of range for a session of {} slots",
                self.slots
            )));
        }
        Ok(())
    }

    /// Starts a new sequence in `slot` with its own sampling and seed: empty grid, empty KV-cache
    /// slot (its twin's too), the RNG from `seed`. The other slots are untouched.
    pub fn start(
        &mut self,
        lm: &SpeechLm,
        slot: usize,
        sampling: StreamSampling,
        seed: u64,
    ) -> Result<()> {
        self.check_slot(slot)?;
        if sampling.uses_cfg() != self.guided {
            return Err(Error::input(if self.guided {
                "this slot session is guided: every sequence's sampling needs a cfg_scale"
            } else {
                "cfg_scale needs a guided slot session"
            }));
        }
        let picker = Picker::new(sampling, seed, lm.num_streams());
        self.decoder.reset_track(slot, picker);
        self.returned[slot] = 0;
        Ok(())
    }

    /// Gives `slot` its next frame (`[K]`: ids forced, `-2` picked, `-1` no input) and, when
    /// guided, its twin's (`-2`: mirror the pick). It is fed by the next [`SlotSession::run`].
    pub fn push(
        &mut self,
        lm: &SpeechLm,
        slot: usize,
        frame: &[i64],
        uncond: Option<&[i64]>,
    ) -> Result<()> {
        self.check_slot(slot)?;
        check_frame(lm, frame, 1, "frame")?;
        let twin = self.decoder.twin_of(slot);
        match (uncond, twin) {
            (Some(uncond), Some(twin)) => {
                check_frame(lm, uncond, 1, "uncond")?;
                let uncond: Vec<i64> = uncond
                    .iter()
                    .map(|&t| if t == SAMPLE { UNKNOWN } else { t })
                    .collect();
                self.decoder.push_frame_to(slot, frame)?;
                self.decoder.push_frame_to(twin, &uncond)
            }
            (None, Some(_)) => Err(Error::input(
                "a guided slot needs the unconditional frame too",
            )),
            (Some(_), None) => Err(Error::input("uncond is for guided slot sessions only")),
            (None, None) => self.decoder.push_frame_to(slot, frame),
        }
    }

    /// Ends `slot` after its given frames: the next [`SlotSession::run`] completes them, and the
    /// slot then needs [`SlotSession::start`].
    pub fn flush(&mut self, slot: usize) -> Result<()> {
        let rows = self.tracks_of(slot)?;
        self.decoder.flush_tracks(&rows);
        Ok(())
    }

    /// Resolves and feeds every slot as far as its given frames allow, in batched forwards.
    /// Flushed slots are completed and marked done.
    pub fn run(&mut self, lm: &SpeechLm) -> Result<()> {
        self.decoder.run(lm)
    }

    /// Marks a flushed slot done (after the [`SlotSession::run`] that completed it).
    pub fn finish_flush(&mut self, slot: usize) -> Result<()> {
        let rows = self.tracks_of(slot)?;
        self.decoder.finish_flush_tracks(&rows);
        Ok(())
    }

    /// The decoder tracks of `slot`: its own and, when guided, its twin's.
    fn tracks_of(&self, slot: usize) -> Result<Vec<usize>> {
        self.check_slot(slot)?;
        let mut rows = vec![slot];
        rows.extend(self.decoder.twin_of(slot));
        Ok(rows)
    }

    /// The frames of `slot` completed since the last call, row-major `[K, n]`, with n.
    pub fn take(&mut self, slot: usize) -> Result<(Vec<i64>, usize)> {
        self.check_slot(slot)?;
        let k_n = self.decoder.num_streams();
        let ready = self.decoder.tracks()[slot].complete_frames();
        let from = self.returned[slot];
        let n = ready.saturating_sub(from);
        let frames: Vec<Vec<i64>> = (from..ready).map(|t| self.decoder.frame(slot, t)).collect();
        let mut out = Vec::with_capacity(k_n * n);
        for k in 0..k_n {
            out.extend(frames.iter().map(|f| f[k]));
        }
        self.returned[slot] = ready.max(from);
        Ok((out, n))
    }

    /// Logits `[V_k]` per stream of `slot`'s last fed column (empty before any).
    pub fn logits(&self, slot: usize) -> &[Vec<f32>] {
        self.decoder.last_logits(slot)
    }
}
