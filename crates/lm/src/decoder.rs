//! Column-by-column resolution of step grids for a batch of sequences (`docs/lm.md`,
//! "Generation, sessions and EOS").
//!
//! Every sequence is a [`Track`]: its step grid `[K, S]` where each position is a token, a
//! marker (`-1` no input, `-2` to pick) or [`UNKNOWN`] (a session frame not given yet). A column
//! is *resolved* once every position holds a token or `-1`: positions to pick get theirs, in
//! stream order, from the logits of the previous column (or from the depth transformer). Resolved
//! columns are then *fed*: a run of several columns alone (prefill), single columns of all tracks
//! together in one batched forward, each track in its own KV-cache slot.

use candle_core::Tensor;
use speechinfer_core::pattern::PatternLayout;
use speechinfer_core::{Error, Result};

use crate::attention::KvCache;
use crate::embed::SAMPLE;
use crate::model::{GridShape, SpeechLm};
use crate::picker::Picker;

/// Most sequences fed by one forward (bounds the activation memory of a long prefill).
const FEED_BATCH: usize = 64;

/// A position of a session frame that has not been given yet.
pub const UNKNOWN: i64 = -3;

/// How a track takes part in classifier-free guidance. `shift` = the conditional track's column
/// minus the unconditional track's column holding the same generated frame.
#[derive(Debug, Clone, Copy)]
pub enum Guidance {
    None,
    Cond { partner: usize, shift: isize },
    Uncond,
}

/// Per-stream ids the decoder forces (main streams of the model).
struct Specials {
    special: Vec<i64>,
    eos: Vec<Option<i64>>,
    /// The token other streams get at the EOS frame: eos, else pad (else it is generated).
    at_end: Vec<Option<i64>>,
    /// The token of positions after an EOS frame: pad, else eos, else the special id.
    fill: Vec<i64>,
    end_stream: usize,
}

impl Specials {
    fn of(lm: &SpeechLm, k_n: usize) -> Self {
        let streams = &lm.config().streams[..k_n];
        Self {
            special: streams.iter().map(|s| s.special_id()).collect(),
            eos: streams.iter().map(|s| s.eos_id.map(i64::from)).collect(),
            at_end: streams
                .iter()
                .map(|s| s.eos_id.or(s.pad_id).map(i64::from))
                .collect(),
            fill: streams
                .iter()
                .map(|s| s.pad_id.or(s.eos_id).map_or(s.special_id(), i64::from))
                .collect(),
            end_stream: lm.config().end_stream.min(k_n - 1),
        }
    }
}

pub struct Track {
    layout: PatternLayout,
    /// `[K, S]` row-major.
    steps: Vec<i64>,
    /// Frames placed so far.
    frames: usize,
    /// EOS of the end stream is looked for in frames `>= eos_from` (`usize::MAX`: never).
    eos_from: usize,
    resolved: usize,
    fed: usize,
    feed_limit: usize,
    /// Logits `[V_k]` per stream of column `fed − 1` (main heads).
    last_logits: Vec<Vec<f32>>,
    /// Final hidden state `[1, d]` of column `fed − 1` (depth pattern).
    last_hidden: Option<Tensor>,
    picker: Picker,
    end_frame: Option<usize>,
    done: bool,
    guidance: Guidance,
}

impl Track {
    fn blank(layout: PatternLayout, picker: Picker, specials: &[i64]) -> Self {
        let s_n = layout.num_steps();
        let mut steps = vec![UNKNOWN; layout.num_streams() * s_n];
        for (k, row) in steps.chunks_mut(s_n).enumerate() {
            for (s, cell) in row.iter_mut().enumerate() {
                if layout.frame_at(s, k).is_none() {
                    *cell = specials[k];
                }
            }
        }
        Self {
            layout,
            steps,
            frames: 0,
            eos_from: usize::MAX,
            resolved: 0,
            fed: 0,
            feed_limit: usize::MAX,
            last_logits: Vec::new(),
            last_hidden: None,
            picker,
            end_frame: None,
            done: false,
            guidance: Guidance::None,
        }
    }

    fn s_n(&self) -> usize {
        self.layout.num_steps()
    }

    fn k_n(&self) -> usize {
        self.layout.num_streams()
    }

    fn cell(&self, k: usize, s: usize) -> i64 {
        self.steps[k * self.s_n() + s]
    }

    fn set(&mut self, k: usize, s: usize, value: i64) {
        let s_n = self.s_n();
        self.steps[k * s_n + s] = value;
    }

    fn column(&self, s: usize) -> Vec<i64> {
        (0..self.k_n()).map(|k| self.cell(k, s)).collect()
    }

    /// Places frame `frames` (values: ids, `-1`, `-2`).
    fn push_frame(&mut self, frame: &[i64]) -> Result<()> {
        let t = self.frames;
        for (k, &value) in frame.iter().enumerate() {
            let s = self
                .layout
                .first_step(k, t)
                .ok_or_else(|| Error::internal(format!("frame {t} is outside the layout")))?;
            self.set(k, s, value);
        }
        self.frames += 1;
        Ok(())
    }

    /// Frames whose every position is resolved.
    pub fn complete_frames(&self) -> usize {
        self.layout.complete_frames(self.resolved).min(self.frames)
    }

    /// Stream `k`'s token of frame `t` as it stands (fill token after an EOS frame).
    fn token(&self, k: usize, t: usize, specials: &Specials) -> i64 {
        if self.end_frame.is_some_and(|e| t > e) {
            return specials.fill[k];
        }
        match self.layout.first_step(k, t) {
            Some(s) => self.cell(k, s),
            None => specials.fill[k],
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// A batch of tracks and their KV cache.
pub struct Decoder {
    tracks: Vec<Track>,
    cache: KvCache,
    specials: Specials,
    k_n: usize,
}

impl Decoder {
    /// A decoder for `tracks.len()` sequences over the first `k_n` streams of `lm`.
    fn new(lm: &SpeechLm, tracks: Vec<Track>, k_n: usize) -> Result<Self> {
        Ok(Self {
            cache: lm.new_cache(tracks.len())?,
            specials: Specials::of(lm, k_n),
            tracks,
            k_n,
        })
    }

    /// Tracks that continue `prompts` (each `[K, T_b]` row-major with its length) by
    /// `max_frames` frames to pick; `eos` enables stopping at the end stream's EOS.
    /// `uncond` gives the unconditional prompts of a guided run (one per prompt).
    pub fn for_generation(
        lm: &SpeechLm,
        prompts: &[(&[i64], usize)],
        max_frames: usize,
        pickers: Vec<Picker>,
        eos: bool,
        uncond: Option<&[(&[i64], usize)]>,
    ) -> Result<Self> {
        let k_n = lm.config().main_streams();
        let specials = lm.config().special_ids();
        let mut tracks = Vec::with_capacity(prompts.len() * 2);
        for (&(prompt, t_n), picker) in prompts.iter().zip(pickers) {
            let layout = lm.layout_of(k_n, t_n + max_frames)?;
            let mut track = Track::blank(layout, picker, &specials);
            for t in 0..t_n {
                let frame: Vec<i64> = (0..k_n).map(|k| prompt[k * t_n + t]).collect();
                track.push_frame(&frame)?;
            }
            for _ in 0..max_frames {
                track.push_frame(&vec![SAMPLE; k_n])?;
            }
            track.eos_from = if eos { t_n } else { usize::MAX };
            track.feed_limit = track.s_n() - 1;
            tracks.push(track);
        }
        if let Some(uncond) = uncond {
            let b = prompts.len();
            for (i, &(prompt, t_n)) in uncond.iter().enumerate() {
                let layout = lm.layout_of(k_n, t_n + max_frames)?;
                let picker = Picker::new(crate::picker::StreamSampling::greedy(k_n), 0, k_n);
                let mut track = Track::blank(layout, picker, &specials);
                for t in 0..t_n {
                    let frame: Vec<i64> = (0..k_n).map(|k| prompt[k * t_n + t]).collect();
                    track.push_frame(&frame)?;
                }
                track.frames = t_n + max_frames;
                let cond_t = prompts[i].1;
                let shift = guidance_shift(&tracks[i].layout, &track.layout, cond_t, t_n)?;
                track.feed_limit = (tracks[i].feed_limit as isize - shift).max(0) as usize;
                track.guidance = Guidance::Uncond;
                tracks[i].guidance = Guidance::Cond {
                    partner: b + i,
                    shift,
                };
                tracks.push(track);
            }
        }
        Self::new(lm, tracks, k_n)
    }

    /// One empty session track per picker, laid out for the most frames `max_context` allows;
    /// `guided` adds an unconditional twin after them for each (same layout, so shift 0).
    pub fn for_session(lm: &SpeechLm, pickers: Vec<Picker>, guided: bool) -> Result<Self> {
        let k_n = lm.config().main_streams();
        let specials = lm.config().special_ids();
        let layout = lm.layout_of(k_n, lm.config().max_context)?;
        let b = pickers.len();
        let mut tracks: Vec<Track> = pickers
            .into_iter()
            .map(|p| Track::blank(layout.clone(), p, &specials))
            .collect();
        if guided {
            for i in 0..b {
                tracks[i].guidance = Guidance::Cond {
                    partner: b + i,
                    shift: 0,
                };
                let mut twin = Track::blank(layout.clone(), Self::twin_picker(k_n), &specials);
                twin.guidance = Guidance::Uncond;
                tracks.push(twin);
            }
        }
        Self::new(lm, tracks, k_n)
    }

    /// The picker of an unconditional twin: never used (its picks are mirrored).
    fn twin_picker(k_n: usize) -> Picker {
        Picker::new(crate::picker::StreamSampling::greedy(k_n), 0, k_n)
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn num_streams(&self) -> usize {
        self.k_n
    }

    /// Forgets everything: empty grids, empty cache (pickers restart from `pickers`, one per
    /// track that is not an unconditional twin); guidance pairs stay.
    pub fn reset(&mut self, pickers: Vec<Picker>) {
        let mut pickers = pickers.into_iter();
        for i in 0..self.tracks.len() {
            let picker = match self.tracks[i].guidance {
                Guidance::Uncond => Self::twin_picker(self.k_n),
                _ => pickers
                    .next()
                    .unwrap_or_else(|| Self::twin_picker(self.k_n)),
            };
            self.blank_track(i, picker);
        }
        self.cache.reset();
    }

    /// Forgets track `i` and, when it is guided, its unconditional twin: empty grids, empty
    /// cache slots, `picker` from now on. The other tracks are untouched.
    pub fn reset_track(&mut self, i: usize, picker: Picker) {
        self.blank_track(i, picker);
        self.cache.reset_slot(i);
        if let Guidance::Cond { partner, .. } = self.tracks[i].guidance {
            self.blank_track(partner, Self::twin_picker(self.k_n));
            self.cache.reset_slot(partner);
        }
    }

    fn blank_track(&mut self, i: usize, picker: Picker) {
        let track = &mut self.tracks[i];
        let guidance = track.guidance;
        *track = Track::blank(track.layout.clone(), picker, &self.specials.special);
        track.guidance = guidance;
    }

    /// Frames placed so far (sessions: equal for every track).
    pub fn frames(&self) -> usize {
        self.tracks.first().map_or(0, |t| t.frames)
    }

    /// Places the next frame of every track (`frames` row-major `[B, K]`) after checking that the
    /// columns it makes ready fit in the cache; nothing changes on error.
    pub fn push_frames(&mut self, frames: &[i64]) -> Result<()> {
        for b in 0..self.tracks.len() {
            self.check_push(b)?;
        }
        for (track, frame) in self.tracks.iter_mut().zip(frames.chunks(self.k_n)) {
            track.push_frame(frame)?;
        }
        Ok(())
    }

    /// Places the next frame (`[K]`) of track `b` alone; nothing changes on error.
    pub fn push_frame_to(&mut self, b: usize, frame: &[i64]) -> Result<()> {
        self.check_push(b)?;
        self.tracks[b].push_frame(frame)
    }

    fn check_push(&self, b: usize) -> Result<()> {
        let track = &self.tracks[b];
        if track.done {
            return Err(Error::input(
                "the session was flushed; call reset() before stepping again",
            ));
        }
        let t = track.frames;
        let ready_columns = (0..self.k_n)
            .filter_map(|k| track.layout.first_step(k, t + 1))
            .min()
            .unwrap_or(track.s_n());
        let capacity = self.cache.capacity();
        if t + 1 >= track.layout.num_frames() || ready_columns > capacity {
            return Err(Error::input(format!(
                "sequence {b}: frame {t} does not fit: max_context is {capacity} positions"
            )));
        }
        Ok(())
    }

    /// Ends every track after its placed frames: positions of later frames hold specials, and the
    /// columns that complete the placed frames are resolved (the last one is not fed).
    pub fn flush(&mut self) {
        let all: Vec<usize> = (0..self.tracks.len()).collect();
        self.flush_tracks(&all);
    }

    /// [`Decoder::flush`] for the tracks `rows` only (give a guided track's twin too).
    pub fn flush_tracks(&mut self, rows: &[usize]) {
        // An unconditional twin keeps the positions its partner picks: they are mirrored later.
        let mut picked_by_partner = vec![None; self.tracks.len()];
        for track in &self.tracks {
            if let Guidance::Cond { partner, shift } = track.guidance {
                if rows.contains(&partner) {
                    picked_by_partner[partner] = Some((track.steps.clone(), shift));
                }
            }
        }
        for &i in rows {
            let partner = picked_by_partner[i].take();
            let track = &mut self.tracks[i];
            if track.frames == 0 {
                track.done = true;
                continue;
            }
            let last = track.layout.steps_to_complete_frame(track.frames - 1);
            let end = last.unwrap_or(track.s_n()).min(track.s_n());
            let s_n = track.s_n();
            for k in 0..track.k_n() {
                for s in 0..end {
                    let mirrored = partner.as_ref().is_some_and(|(steps, shift)| {
                        let theirs = s as isize + shift;
                        theirs >= 0
                            && (theirs as usize) < s_n
                            && steps[k * s_n + theirs as usize] == SAMPLE
                    });
                    if track.cell(k, s) == UNKNOWN && !mirrored {
                        let special = self.specials.special[k];
                        track.set(k, s, special);
                    }
                }
            }
            track.feed_limit = end.saturating_sub(1).max(track.fed);
        }
    }

    /// Marks flushed tracks done once their placed frames are complete.
    pub fn finish_flush(&mut self) {
        for track in &mut self.tracks {
            track.done = true;
        }
    }

    /// [`Decoder::finish_flush`] for the tracks `rows` only.
    pub fn finish_flush_tracks(&mut self, rows: &[usize]) {
        for &i in rows {
            self.tracks[i].done = true;
        }
    }

    /// Track `b`'s unconditional twin, when it is guided.
    pub fn twin_of(&self, b: usize) -> Option<usize> {
        match self.tracks[b].guidance {
            Guidance::Cond { partner, .. } => Some(partner),
            _ => None,
        }
    }

    /// Frame `t` of track `b` (`[K]`).
    pub fn frame(&self, b: usize, t: usize) -> Vec<i64> {
        let track = &self.tracks[b];
        (0..self.k_n)
            .map(|k| track.token(k, t, &self.specials))
            .collect()
    }

    /// The frame at which track `b` generated its end stream's EOS.
    pub fn end_frame(&self, b: usize) -> Option<usize> {
        self.tracks[b].end_frame
    }

    /// Track `b`'s picker (its RNG continues where the decoder left it).
    pub fn picker_mut(&mut self, b: usize) -> &mut Picker {
        &mut self.tracks[b].picker
    }

    /// Logits `[V_k]` per stream of track `b`'s last fed column.
    pub fn last_logits(&self, b: usize) -> &[Vec<f32>] {
        &self.tracks[b].last_logits
    }

    /// Resolves and feeds until no track can move.
    pub fn run(&mut self, lm: &SpeechLm) -> Result<()> {
        while self.round(lm)? {}
        Ok(())
    }

    /// One pass of resolving then feeding; false when nothing could move.
    pub fn round(&mut self, lm: &SpeechLm) -> Result<bool> {
        let resolved = self.resolve_ready(lm)?;
        let fed = self.feed(lm)?;
        Ok(resolved || fed)
    }

    /// Whether column `s` of track `i` can be resolved now, and whether it needs picks.
    fn readiness(&self, i: usize) -> Option<bool> {
        let t = &self.tracks[i];
        if t.done || t.resolved >= t.s_n() {
            return None;
        }
        let c = t.resolved;
        let column = t.column(c);
        if column.contains(&UNKNOWN) {
            return None;
        }
        if !column.contains(&SAMPLE) {
            return Some(false);
        }
        if t.fed != c {
            return None;
        }
        if let Guidance::Cond { partner, shift } = t.guidance {
            if self.tracks[partner].fed as isize != c as isize - shift {
                return None;
            }
        }
        Some(true)
    }

    fn resolve_ready(&mut self, lm: &SpeechLm) -> Result<bool> {
        let mut any = false;
        let mut depth_rows = Vec::new();
        for i in 0..self.tracks.len() {
            while let Some(needs_pick) = self.readiness(i) {
                if needs_pick {
                    if lm.depth().is_some() {
                        depth_rows.push(i);
                        break;
                    }
                    self.pick_from_logits(i)?;
                }
                self.finish_column(i);
                any = true;
            }
        }
        if !depth_rows.is_empty() {
            self.pick_with_depth(lm, &depth_rows)?;
            for &i in &depth_rows {
                self.finish_column(i);
            }
            any = true;
        }
        Ok(any)
    }

    /// Decides stream `k`'s token at frame `f` of track `i`: forced after an EOS, else drawn.
    fn choose(
        tracks: &mut [Track],
        specials: &Specials,
        i: usize,
        k: usize,
        f: usize,
        draw: impl FnOnce(&mut Picker) -> Result<u32>,
    ) -> Result<i64> {
        let track = &mut tracks[i];
        if let Some(end) = track.end_frame {
            if f > end {
                return Ok(specials.fill[k]);
            }
            if let Some(token) = specials.at_end[k].filter(|_| f == end) {
                return Ok(token);
            }
        }
        let token = i64::from(draw(&mut track.picker)?);
        if k == specials.end_stream
            && f >= track.eos_from
            && track.end_frame.is_none()
            && specials.eos[k] == Some(token)
        {
            track.end_frame = Some(f);
        }
        Ok(token)
    }

    fn pick_from_logits(&mut self, i: usize) -> Result<()> {
        let c = self.tracks[i].resolved;
        for k in 0..self.k_n {
            if self.tracks[i].cell(k, c) != SAMPLE {
                continue;
            }
            let f = frame_of(&self.tracks[i], c, k)?;
            let cond = self.tracks[i].last_logits[k].clone();
            let uncond = match self.tracks[i].guidance {
                Guidance::Cond { partner, .. } => Some(self.tracks[partner].last_logits[k].clone()),
                _ => None,
            };
            let token = Self::choose(&mut self.tracks, &self.specials, i, k, f, |p| {
                p.pick(k, &cond, uncond.as_deref())
            })?;
            // EOS may force the pad/eos of a later stream in this very column.
            self.tracks[i].set(k, c, token);
        }
        Ok(())
    }

    fn pick_with_depth(&mut self, lm: &SpeechLm, rows: &[usize]) -> Result<()> {
        let depth = lm
            .depth()
            .ok_or_else(|| Error::internal("depth pick without a depth transformer"))?;
        let hidden = rows
            .iter()
            .map(|&i| {
                self.tracks[i]
                    .last_hidden
                    .clone()
                    .ok_or_else(|| Error::internal("depth pick before any fed column"))
            })
            .collect::<Result<Vec<_>>>()?;
        let hidden = Tensor::cat(&hidden, 0)?;
        let mut column: Vec<i64> = rows
            .iter()
            .flat_map(|&i| self.tracks[i].column(self.tracks[i].resolved))
            .collect();
        let (tracks, specials) = (&mut self.tracks, &self.specials);
        let mut pick = |a: usize, k: usize, logits: &[f32]| -> Result<u32> {
            let i = rows[a];
            let f = frame_of(&tracks[i], tracks[i].resolved, k)?;
            let token = Self::choose(tracks, specials, i, k, f, |p| p.pick(k, logits, None))?;
            u32::try_from(token).map_err(|_| Error::internal("negative fill token"))
        };
        depth.fill_column(&hidden, &mut column, &mut pick)?;
        for (a, &i) in rows.iter().enumerate() {
            let c = self.tracks[i].resolved;
            for k in 0..self.k_n {
                self.tracks[i].set(k, c, column[a * self.k_n + k]);
            }
        }
        Ok(())
    }

    /// Records the resolved column of track `i`, mirrors it to a guidance partner and checks
    /// whether the track is complete.
    fn finish_column(&mut self, i: usize) {
        let c = self.tracks[i].resolved;
        for k in 0..self.k_n {
            if self.tracks[i].layout.frame_at(c, k).is_some() {
                let token = self.tracks[i].cell(k, c);
                self.tracks[i].picker.record(k, token);
            }
        }
        let track = &mut self.tracks[i];
        track.resolved += 1;
        let complete = match track.end_frame {
            Some(end) => track
                .layout
                .steps_to_complete_frame(end)
                .is_some_and(|n| track.resolved >= n),
            None => false,
        };
        if complete || (track.resolved >= track.s_n() && track.feed_limit < usize::MAX) {
            track.done = true;
        }
        let done = track.done;
        if let Guidance::Cond { partner, shift } = track.guidance {
            let column = track.column(c);
            let theirs = c as isize - shift;
            let p = &mut self.tracks[partner];
            if theirs >= 0 && (theirs as usize) < p.s_n() {
                for (k, &token) in column.iter().enumerate() {
                    if p.cell(k, theirs as usize) == UNKNOWN {
                        p.set(k, theirs as usize, token);
                    }
                }
            }
            p.done |= done;
        }
    }

    /// Feeds every track's resolved columns; tracks with the same number of columns to feed go
    /// through one batched forward (each at its own positions).
    fn feed(&mut self, lm: &SpeechLm) -> Result<bool> {
        let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, t) in self.tracks.iter().enumerate() {
            let upto = t.resolved.min(t.feed_limit);
            if !t.done && t.fed < upto {
                groups.entry(upto - t.fed).or_default().push(i);
            }
        }
        for (&width, rows) in &groups {
            for rows in rows.chunks(FEED_BATCH) {
                self.feed_rows(lm, rows, width)?;
            }
        }
        Ok(!groups.is_empty())
    }

    /// Feeds `width` columns of each track in `rows` (all at their own positions).
    fn feed_rows(&mut self, lm: &SpeechLm, rows: &[usize], width: usize) -> Result<()> {
        let mut steps = Vec::with_capacity(rows.len() * self.k_n * width);
        for &i in rows {
            let t = &self.tracks[i];
            for k in 0..self.k_n {
                let start = k * t.s_n() + t.fed;
                steps.extend_from_slice(&t.steps[start..start + width]);
            }
        }
        let shape = GridShape::new(rows.len(), self.k_n, width);
        let h = lm.hidden(&steps, shape, &mut self.cache, rows)?;
        let last = h.narrow(1, width - 1, 1)?;
        if lm.depth().is_some() {
            for (a, &i) in rows.iter().enumerate() {
                self.tracks[i].last_hidden = Some(last.narrow(0, a, 1)?.squeeze(1)?);
            }
        } else {
            let logits = lm.head_logits(&last)?;
            let host = logits
                .iter()
                .map(|l| Ok(l.flatten_all()?.to_vec1::<f32>()?))
                .collect::<Result<Vec<_>>>()?;
            for (a, &i) in rows.iter().enumerate() {
                self.tracks[i].last_logits = host
                    .iter()
                    .map(|values| {
                        let v = values.len() / rows.len();
                        values[a * v..(a + 1) * v].to_vec()
                    })
                    .collect();
            }
        }
        for &i in rows {
            self.tracks[i].fed += width;
        }
        Ok(())
    }
}

fn frame_of(track: &Track, s: usize, k: usize) -> Result<usize> {
    track
        .layout
        .frame_at(s, k)
        .ok_or_else(|| Error::internal(format!("no frame at step {s} of stream {k}")))
}

/// The constant column offset between a conditional layout (prompt `t_c` frames) and its
/// unconditional twin (prompt `t_u`): generated frame g sits at `first_step(k, t_c + g)` and
/// `first_step(k, t_u + g)` respectively.
fn guidance_shift(
    cond: &PatternLayout,
    uncond: &PatternLayout,
    t_c: usize,
    t_u: usize,
) -> Result<isize> {
    let mut shift = None;
    for k in 0..cond.num_streams() {
        let (Some(a), Some(b)) = (cond.first_step(k, t_c), uncond.first_step(k, t_u)) else {
            return Err(Error::internal(
                "guidance: generated frame outside the layout",
            ));
        };
        let d = a as isize - b as isize;
        if shift.is_some_and(|s| s != d) {
            return Err(Error::input(
                "classifier-free guidance needs a pattern whose steps shift uniformly with the prompt",
            ));
        }
        shift = Some(d);
    }
    shift.ok_or_else(|| Error::internal("guidance without streams"))
}
