//! Synthesis in the `aligned` text layout of `docs/tts.md`, one piece of text in one LM slot.
//!
//! The text stream runs `lead` frames ahead of the audio. At every frame the text token is `pad`
//! (keep speaking) or the next text token (the text `eos` after the last one): the next one comes
//! with the probability the LM gives to anything but `pad` (the model decides the timing, the
//! text the words), drawn from NumPy's default generator seeded with the piece's seed. The audio
//! streams are sampled by the engine (EOS excluded); the end of speech is drawn here from
//! `audio0`'s EOS probability once the audio has reached the text's `eos`, at the latest
//! `max_tail_frames` after it. A guided slot's twin hears the voice and then `pad` only.

use speechinfer_core::{Error, Result};
use speechinfer_lm::{SlotSession, SpeechLm, StreamSampling, NO_INPUT, SAMPLE};

use crate::numpy_rng::NumpyRng;

/// Text-stream specials of `docs/tts.md`.
pub const TEXT_PAD: i64 = 0;
pub const TEXT_EOS: i64 = 2;
/// The longest pause (1 s at 50 Hz) before the next text token is forced.
pub const MAX_HOLD_FRAMES: usize = 50;

/// One piece of text to speak.
#[derive(Debug, Clone)]
pub struct PieceSpec {
    pub voice_token: i64,
    /// Text-stream ids (offset included), without the final `eos`.
    pub text: Vec<i64>,
    pub seed: u64,
    pub max_frames: usize,
    pub max_tail_frames: usize,
}

/// The frame-by-frame decisions of one piece (the LM work is the slot session's).
#[derive(Debug, Clone)]
pub struct AlignedPiece {
    spec: PieceSpec,
    rng: NumpyRng,
    lead: usize,
    k_n: usize,
    guided: bool,
    codebook_size: usize,
    /// Text tokens placed so far (the queue is `text` then `eos`).
    position: usize,
    held: usize,
    /// Frames given to the LM so far.
    pushed: usize,
    text_end: Option<usize>,
    end: Option<usize>,
}

/// Audio delay of an `aligned` LM: the text leads the audio by the smallest audio delay.
pub fn text_lead(lm: &SpeechLm) -> Result<usize> {
    let delays: Vec<usize> = lm.config().streams.iter().map(|s| s.delay).collect();
    match delays.split_first() {
        Some((0, audio)) if !audio.is_empty() && audio.iter().all(|&d| d >= 1) => {
            Ok(*audio.iter().min().unwrap_or(&1))
        }
        _ => Err(Error::config(format!(
            "the aligned layout needs text delay 0 and audio delays >= 1, the LM has {delays:?}"
        ))),
    }
}

impl AlignedPiece {
    pub fn new(lm: &SpeechLm, spec: PieceSpec, guided: bool, codebook_size: usize) -> Result<Self> {
        if spec.max_frames == 0 || spec.max_tail_frames == 0 {
            return Err(Error::input(
                "max_frames and max_tail_frames must be at least 1",
            ));
        }
        Ok(Self {
            rng: NumpyRng::new(spec.seed),
            lead: text_lead(lm)?,
            k_n: lm.num_streams(),
            guided,
            codebook_size,
            position: 0,
            held: 0,
            pushed: 0,
            text_end: None,
            end: None,
            spec,
        })
    }

    pub fn spec(&self) -> &PieceSpec {
        &self.spec
    }

    /// Whether the piece needs no more frames (its end was drawn or `max_frames` were given).
    pub fn finished(&self) -> bool {
        self.end.is_some() || self.pushed > self.spec.max_frames
    }

    /// Grid frames `1..limit` are the piece's audio; known once [`Self::finished`]. Before, every
    /// completed frame is audio.
    pub fn audio_limit(&self) -> usize {
        self.end.unwrap_or(self.spec.max_frames + 1)
    }

    /// The grid frame that holds the audio `eos`, when speech ended within `max_frames`.
    pub fn end_frame(&self) -> Option<usize> {
        self.end
    }

    /// The next frame to give the LM (and its twin's, when guided), from the slot's logits of the
    /// last fed column (`text_logits`: stream 0's, unused for the first frame).
    pub fn next_frame(&mut self, text_logits: &[f32]) -> Result<(Vec<i64>, Option<Vec<i64>>)> {
        if self.finished() {
            return Err(Error::internal("a finished piece was stepped"));
        }
        let t = self.pushed;
        self.pushed += 1;
        if t == 0 {
            let mut first = vec![NO_INPUT; self.k_n];
            first[0] = self.spec.voice_token;
            let twin = self.guided.then(|| first.clone());
            return Ok((first, twin));
        }
        let mut token = TEXT_PAD;
        let queue_len = self.spec.text.len() + 1;
        if self.position < queue_len {
            let candidate = self
                .spec
                .text
                .get(self.position)
                .copied()
                .unwrap_or(TEXT_EOS);
            let pad = usize::try_from(TEXT_PAD).unwrap_or(0);
            let advance = 1.0 - probability(text_logits, pad)?;
            if self.held >= MAX_HOLD_FRAMES || self.rng.random() < advance {
                token = candidate;
                self.position += 1;
                self.held = 0;
                self.text_end = (token == TEXT_EOS).then_some(t);
            } else {
                self.held += 1;
            }
        }
        let mut frame = vec![SAMPLE; self.k_n];
        frame[0] = token;
        let twin = self.guided.then(|| {
            let mut text_less = vec![SAMPLE; self.k_n];
            text_less[0] = TEXT_PAD;
            text_less
        });
        Ok((frame, twin))
    }

    /// After the run that fed the last frame: draws the end of speech from `audio0_logits`
    /// (the slot's stream-1 logits); true when speech ended here.
    pub fn after_step(&mut self, audio0_logits: &[f32]) -> Result<bool> {
        let t = self.pushed.saturating_sub(1);
        let (Some(text_end), true) = (self.text_end, t >= 1) else {
            return Ok(false);
        };
        let audio_frame = (t + 1).saturating_sub(self.lead);
        if t + 1 < self.lead || audio_frame < text_end {
            return Ok(false);
        }
        let stop = probability(audio0_logits, self.codebook_size)?;
        if audio_frame - text_end >= self.spec.max_tail_frames || self.rng.random() < stop {
            self.end = Some(audio_frame);
            return Ok(true);
        }
        Ok(false)
    }
}

/// Softmax probability of `token` in float64 (NumPy's pairwise summation order).
fn probability(logits: &[f32], token: usize) -> Result<f64> {
    let chosen = logits
        .get(token)
        .ok_or_else(|| Error::internal(format!("no logit for token {token}")))?;
    let top = logits
        .iter()
        .map(|&l| f64::from(l))
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - top).exp()).collect();
    Ok((f64::from(*chosen) - top).exp() / pairwise_sum(&exps))
}

/// `numpy.sum` of a float64 array: 8 accumulators up to 128 values, halves above.
fn pairwise_sum(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 8 {
        return values.iter().fold(0.0, |acc, &v| acc + v);
    }
    if n <= 128 {
        let mut r = [0f64; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        for block in values[8..whole].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[whole..] {
            res += v;
        }
        return res;
    }
    let mut half = n / 2;
    half -= half % 8;
    pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
}

/// The whole grid of one piece on a one-slot session: `[K, n]` row-major with n — frame 0 the
/// voice, the audio frames and, when speech ended within `max_frames`, the EOS frame (audio
/// `eos` in every audio stream). `on_frame(frames)` hears the count of complete audio frames
/// after every step that completed some (an error from it ends the generation).
pub fn generate_piece(
    lm: &SpeechLm,
    sampling: StreamSampling,
    spec: PieceSpec,
    codebook_size: usize,
    on_frame: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<(Vec<i64>, usize)> {
    let guided = sampling.uses_cfg();
    let mut session = lm.slot_session(1, guided)?;
    session.start(lm, 0, sampling, spec.seed)?;
    let mut piece = AlignedPiece::new(lm, spec, guided, codebook_size)?;
    let k_n = lm.num_streams();
    let mut columns: Vec<Vec<i64>> = vec![Vec::new(); k_n];
    while !piece.finished() {
        step_slot(lm, &mut session, 0, &mut piece)?;
        session.run(lm)?;
        piece.after_step(logits_of(&session, 0, 1)?)?;
        let (frames, n) = session.take(0)?;
        for (k, column) in columns.iter_mut().enumerate() {
            column.extend_from_slice(&frames[k * n..(k + 1) * n]);
        }
        if n > 0 && !piece.finished() {
            on_frame(columns[0].len().saturating_sub(1))?;
        }
        if piece.finished() {
            session.flush(0)?;
            session.run(lm)?;
            session.finish_flush(0)?;
            let (frames, n) = session.take(0)?;
            for (k, column) in columns.iter_mut().enumerate() {
                column.extend_from_slice(&frames[k * n..(k + 1) * n]);
            }
        }
    }
    let n = columns[0]
        .len()
        .min(piece.audio_limit() + usize::from(piece.end.is_some()));
    let mut grid = Vec::with_capacity(k_n * n);
    for (k, column) in columns.iter().enumerate() {
        grid.extend_from_slice(&column[..n]);
        if let (Some(end), true) = (piece.end, k >= 1) {
            let at = grid.len() - n + end;
            grid[at] = codebook_size as i64;
        }
    }
    Ok((grid, n))
}

/// Gives `slot` the piece's next frame.
pub(crate) fn step_slot(
    lm: &SpeechLm,
    session: &mut SlotSession,
    slot: usize,
    piece: &mut AlignedPiece,
) -> Result<()> {
    let text_logits = session
        .logits(slot)
        .first()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let (frame, twin) = piece.next_frame(text_logits)?;
    session.push(lm, slot, &frame, twin.as_deref())
}

/// Stream `k`'s logits of `slot`'s last fed column.
pub(crate) fn logits_of(session: &SlotSession, slot: usize, k: usize) -> Result<&[f32]> {
    session
        .logits(slot)
        .get(k)
        .map(Vec::as_slice)
        .ok_or_else(|| Error::internal("the slot has no logits yet"))
}
