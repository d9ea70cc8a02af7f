//! Frame-by-frame sessions: the caller forces some streams and lets the model pick the others
//! (full duplex: the user's audio streams forced, the system's picked). A guided session
//! (`cfg_scale` in its sampling) runs an unconditional twin beside every sequence, fed the
//! caller's unconditional frames and the conditional sequence's picks. `docs/lm.md`,
//! "Generation, sessions and EOS".

use speechinfer_core::{Error, Result};

use crate::config::Decoding;
use crate::decoder::{Decoder, UNKNOWN};
use crate::embed::SAMPLE;
use crate::model::{check_batch, GridShape, SpeechLm};
use crate::picker::{Picker, StreamSampling};

pub struct Session {
    decoder: Decoder,
    sampling: StreamSampling,
    seeds: Vec<u64>,
    /// Sequences (their unconditional twins, when guided, are not counted).
    batch: usize,
    guided: bool,
    /// Frames already returned.
    returned: usize,
}

impl SpeechLm {
    /// A session of `batch_size` sequences; `seeds` has one entry or one per sequence.
    pub fn session(
        &self,
        batch_size: usize,
        sampling: StreamSampling,
        seeds: Vec<u64>,
    ) -> Result<Session> {
        let guided = sampling.uses_cfg();
        check_batch(if guided { 2 * batch_size } else { batch_size })?;
        check_session_pattern(self, guided)?;
        let seeds = match seeds.len() {
            1 => vec![seeds[0]; batch_size],
            n if n == batch_size => seeds,
            n => {
                return Err(Error::input(format!(
                    "{n} seeds for {batch_size} sequences: give one seed or one per sequence"
                )))
            }
        };
        let pickers = make_pickers(&sampling, &seeds, self.num_streams());
        Ok(Session {
            decoder: Decoder::for_session(self, pickers, guided)?,
            sampling,
            seeds,
            batch: batch_size,
            guided,
            returned: 0,
        })
    }
}

/// Fails unless `lm`'s pattern can be stepped frame by frame (and guided, when `guided`).
pub(crate) fn check_session_pattern(lm: &SpeechLm, guided: bool) -> Result<()> {
    let decoding = lm.config().decoding()?;
    if decoding == Decoding::CoarseFirst {
        return Err(Error::input(
            "sessions need a frame-synchronous pattern; \"coarse_first\" fills streams 1.. \
             only after the whole of stream 0",
        ));
    }
    if guided && decoding == Decoding::Depth {
        return Err(Error::input(
            "classifier-free guidance (cfg_scale) is not supported with pattern \"depth\"",
        ));
    }
    Ok(())
}

/// Checks that `frame` is `[b, K]` tokens of the model or markers.
pub(crate) fn check_frame(lm: &SpeechLm, frame: &[i64], b: usize, what: &str) -> Result<()> {
    let k_n = lm.num_streams();
    if frame.len() != b * k_n {
        return Err(Error::input(format!(
            "{what} must be [{b}, {k_n}], got {} values",
            frame.len()
        )));
    }
    let given: Vec<i64> = frame
        .iter()
        .map(|&t| if t == SAMPLE { 0 } else { t })
        .collect();
    lm.check_tokens(&given, GridShape::new(b, k_n, 1), what)
        .map_err(|e| Error::input(format!("{} (-2 = sample here)", e.message())))
}

fn make_pickers(sampling: &StreamSampling, seeds: &[u64], streams: usize) -> Vec<Picker> {
    seeds
        .iter()
        .map(|&seed| Picker::new(sampling.clone(), seed, streams))
        .collect()
}

impl Session {
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Whether the session runs classifier-free guidance (then `step` needs `uncond`).
    pub fn guided(&self) -> bool {
        self.guided
    }

    /// Frames given so far.
    pub fn frames(&self) -> usize {
        self.decoder.frames()
    }

    /// Feeds frame t (`[B, K]`: ids forced, `-2` picked, `-1` no input) and returns the frames
    /// that became complete, row-major `[B, K, n]`, with n. A guided session also takes the
    /// unconditional twins' frame t (`[B, K]`; `-2`: the conditional sequence's pick).
    pub fn step(
        &mut self,
        lm: &SpeechLm,
        frame: &[i64],
        uncond: Option<&[i64]>,
    ) -> Result<(Vec<i64>, usize)> {
        let (b, k_n) = (self.batch_size(), lm.num_streams());
        check_frame(lm, frame, b, "frame")?;
        let mut frames = frame.to_vec();
        match (uncond, self.guided) {
            (Some(uncond), true) => {
                check_frame(lm, uncond, b, "uncond")?;
                frames.extend(
                    uncond
                        .iter()
                        .map(|&t| if t == SAMPLE { UNKNOWN } else { t }),
                );
            }
            (None, true) => return Err(Error::input(
                "a guided session (cfg_scale) needs the unconditional frame: step(frame, uncond)",
            )),
            (Some(_), false) => {
                return Err(Error::input(
                    "uncond is for guided sessions only (a cfg_scale in the session's sampling)",
                ))
            }
            (None, false) => {}
        }
        self.decoder.push_frames(&frames)?;
        self.decoder.run(lm)?;
        Ok(self.take_complete(k_n))
    }

    /// Completes every given frame (later positions hold specials) and returns the rest,
    /// `[B, K, n]`; the session then needs [`Session::reset`].
    pub fn flush(&mut self, lm: &SpeechLm) -> Result<(Vec<i64>, usize)> {
        self.decoder.flush();
        self.decoder.run(lm)?;
        self.decoder.finish_flush();
        Ok(self.take_complete(lm.num_streams()))
    }

    pub fn reset(&mut self, lm: &SpeechLm) {
        let pickers = make_pickers(&self.sampling, &self.seeds, lm.num_streams());
        self.decoder.reset(pickers);
        self.returned = 0;
    }

    /// Logits `[V_k]` per stream of each sequence's last fed column (empty before any); the
    /// conditional ones in a guided session.
    pub fn logits(&self) -> Vec<&[Vec<f32>]> {
        (0..self.batch_size())
            .map(|b| self.decoder.last_logits(b))
            .collect()
    }

    fn take_complete(&mut self, k_n: usize) -> (Vec<i64>, usize) {
        let ready = self
            .decoder
            .tracks()
            .iter()
            .take(self.batch)
            .map(|t| t.complete_frames())
            .min()
            .unwrap_or(0);
        let n = ready.saturating_sub(self.returned);
        let mut out = Vec::with_capacity(self.batch_size() * k_n * n);
        for b in 0..self.batch_size() {
            let frames: Vec<Vec<i64>> = (self.returned..ready)
                .map(|t| self.decoder.frame(b, t))
                .collect();
            for k in 0..k_n {
                out.extend(frames.iter().map(|f| f[k]));
            }
        }
        self.returned = ready;
        (out, n)
    }
}
