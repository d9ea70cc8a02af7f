//! Codebook patterns: pure index maps between a token grid `[K streams × T frames]` and the
//! sequence of LM steps the model actually reads and writes.
//!
//! A [`PatternLayout`] is computed once (as gather indices) and shared by the engine and by
//! training so both sides lay tokens out identically. The conventions are audiocraft's
//! (`codebooks_patterns.py`), checked against the verified grids in `reference/patterns.md`:
//!
//! * step 0 is all-special (the first LM input); logits produced at step `s` predict step `s + 1`;
//! * a position that holds no frame holds the stream's special token (audiocraft uses one id,
//!   `card`, both as start token and for masked positions);
//! * every `(stream, frame)` of the grid is placed at exactly one step.
//!
//! The second, length-preserving delay formulation used by Dia and Moshi (BOS before, PAD after,
//! no all-special first column) is [`delay_shift`] / [`delay_unshift`].
//!
//! Layout data is row-major `[K, S]` (stream-major) like the grid `[K, T]`.

use std::fmt;

/// Upper bound on `K × S` cells of one layout or shifted buffer, so that absurd lengths or delays
/// give an error instead of an out-of-memory abort. 2^26 cells is e.g. 32 streams × 2M steps.
pub const MAX_LAYOUT_CELLS: usize = 1 << 26;

/// How a grid is turned into LM steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternKind {
    /// All K tokens of frame `t` at step `t + 1`. Same layout as `Delay` with all-zero delays.
    Parallel,
    /// Stream `k` shifted right by `delays[k]` steps (MusicGen `[0,1,2,3]`, Dia `[0,8,..,15]`).
    /// The first `flatten_first` frames are fully flattened (one stream per step) before the
    /// delayed part starts. Delays need not be sorted (Moshi's user streams restart at 0).
    Delay {
        delays: Vec<usize>,
        flatten_first: usize,
    },
    /// Per-frame flattening: frame `t` of stream `k` at step `1 + t·n + flattening[k]`, where
    /// `n = max(flattening) + 1` inner steps per frame. Streams with equal values share a step.
    /// Full flattening is `[0, 1, .., K-1]` ([`PatternKind::flatten`]).
    Unroll { flattening: Vec<usize> },
    /// All of stream 0 first (steps `1..=T`), then streams `1..K` in parallel (steps
    /// `T+1..=2T`), VALL-E-like. With K = 1 it degenerates to `T + 1` steps.
    CoarseFirst,
}

impl PatternKind {
    /// `Delay` with the given delays and no flattened prefix.
    pub fn delay(delays: Vec<usize>) -> Self {
        PatternKind::Delay {
            delays,
            flatten_first: 0,
        }
    }

    /// MusicGen's default delays `[0, 1, .., K-1]`.
    pub fn default_delay(num_streams: usize) -> Self {
        Self::delay((0..num_streams).collect())
    }

    /// Full per-frame flattening (`Unroll` with `[0, 1, .., K-1]`).
    pub fn flatten(num_streams: usize) -> Self {
        PatternKind::Unroll {
            flattening: (0..num_streams).collect(),
        }
    }
}

/// Why a pattern could not be built or applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// K = 0.
    NoStreams,
    /// T = 0.
    NoFrames,
    /// A delay pattern with an empty delay list.
    EmptyDelays,
    /// A buffer or per-stream list (delays, flattening, special/bos/pad ids, grid) whose length
    /// is not the one needed.
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A buffer whose length is not a multiple of the number of streams.
    NotMultiple {
        what: &'static str,
        len: usize,
        streams: usize,
    },
    /// `flattening[index]` breaks the rule: start at 0, then each value equal to the previous
    /// one or one more (non-decreasing, no skipped inner step).
    InvalidFlattening { index: usize, value: usize },
    /// A step buffer with more columns than the layout has steps.
    TooManySteps { got: usize, max: usize },
    /// A delayed buffer with fewer columns than the largest delay.
    TooShort { columns: usize, min: usize },
    /// The layout would exceed [`MAX_LAYOUT_CELLS`] cells (or overflow `usize`).
    TooLarge { what: &'static str },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStreams => write!(f, "pattern needs at least one stream"),
            Self::NoFrames => write!(f, "pattern needs at least one frame"),
            Self::EmptyDelays => write!(f, "delay pattern needs at least one delay"),
            Self::Length {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected length {expected}, got {got}")
            }
            Self::NotMultiple { what, len, streams } => {
                write!(
                    f,
                    "{what}: length {len} is not a multiple of {streams} streams"
                )
            }
            Self::InvalidFlattening { index, value } => write!(
                f,
                "flattening[{index}] = {value}: flattening must start at 0 and grow by 0 or 1"
            ),
            Self::TooManySteps { got, max } => {
                write!(f, "step buffer has {got} steps, the layout only {max}")
            }
            Self::TooShort { columns, min } => {
                write!(
                    f,
                    "delayed buffer has {columns} columns, needs at least {min}"
                )
            }
            Self::TooLarge { what } => write!(
                f,
                "{what} is too large (limit {MAX_LAYOUT_CELLS} cells): check lengths and delays"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// Marker in the `first_step` table for a grid position placed nowhere (never happens for the
/// kinds defined here, but kept so that a future kind cannot cause a panic).
const UNPLACED: usize = usize::MAX;

/// A pattern instantiated for `K` streams and `T` frames: for every step `s < S` and stream `k`,
/// which frame of stream `k` sits there (or none: the special token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternLayout {
    kind: PatternKind,
    num_streams: usize,
    num_frames: usize,
    num_steps: usize,
    /// `[K, S]`: frame index or -1 (special).
    indices: Vec<i64>,
    /// `[K, T]`: step at which frame `t` of stream `k` is placed.
    first_step: Vec<usize>,
    /// `[T]`: number of leading steps needed to know frame `t` of every stream.
    complete_len: Vec<usize>,
}

/// `rows × cols` if it stays within [`MAX_LAYOUT_CELLS`] (u128, so nothing can overflow).
fn cells(rows: usize, cols: u128, what: &'static str) -> Result<usize, PatternError> {
    let cells = rows as u128 * cols;
    match usize::try_from(cells) {
        Ok(cells) if cells <= MAX_LAYOUT_CELLS => Ok(cells),
        _ => Err(PatternError::TooLarge { what }),
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), PatternError> {
    if expected != got {
        return Err(PatternError::Length {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// Columns of a `[K, n]` buffer of `len` values; errors when `len` is not a multiple of K.
fn columns(len: usize, streams: usize, what: &'static str) -> Result<usize, PatternError> {
    match len / streams * streams == len {
        true => Ok(len / streams),
        false => Err(PatternError::NotMultiple { what, len, streams }),
    }
}

fn validate_flattening(flattening: &[usize]) -> Result<(), PatternError> {
    let mut previous = 0;
    for (index, &value) in flattening.iter().enumerate() {
        let ok = if index == 0 {
            value == 0
        } else {
            value == previous || value == previous + 1
        };
        if !ok {
            return Err(PatternError::InvalidFlattening { index, value });
        }
        previous = value;
    }
    Ok(())
}

impl PatternLayout {
    /// Builds the layout of `kind` for `num_streams` streams and `num_frames` frames.
    pub fn build(
        kind: PatternKind,
        num_streams: usize,
        num_frames: usize,
    ) -> Result<Self, PatternError> {
        let (k_streams, t_frames) = (num_streams, num_frames);
        if let PatternKind::Delay { delays, .. } = &kind {
            if delays.is_empty() {
                return Err(PatternError::EmptyDelays);
            }
        }
        if k_streams == 0 {
            return Err(PatternError::NoStreams);
        }
        if t_frames == 0 {
            return Err(PatternError::NoFrames);
        }
        let t = t_frames as u128;
        let steps = match &kind {
            PatternKind::Parallel => t + 1,
            PatternKind::Delay {
                delays,
                flatten_first,
            } => {
                check_len("delays", k_streams, delays.len())?;
                let max_delay = delays.iter().copied().max().unwrap_or(0) as u128;
                let f = *flatten_first as u128;
                1 + k_streams as u128 * t.min(f) + (t + max_delay).saturating_sub(f)
            }
            PatternKind::Unroll { flattening } => {
                check_len("flattening", k_streams, flattening.len())?;
                validate_flattening(flattening)?;
                1 + t * (flattening.last().copied().unwrap_or(0) as u128 + 1)
            }
            PatternKind::CoarseFirst if k_streams == 1 => t + 1,
            PatternKind::CoarseFirst => 2 * t + 1,
        };
        let cells = cells(k_streams, steps, "pattern")?;
        // cells <= MAX_LAYOUT_CELLS and k_streams >= 1, so steps fits in usize.
        let num_steps = cells / k_streams;

        let mut layout = PatternLayout {
            kind,
            num_streams: k_streams,
            num_frames: t_frames,
            num_steps,
            indices: vec![-1; cells],
            first_step: vec![UNPLACED; k_streams * t_frames],
            complete_len: Vec::new(),
        };
        layout.fill();
        layout.complete_len = (0..t_frames)
            .map(|t| {
                (0..k_streams)
                    .map(|k| layout.first_step[k * t_frames + t].saturating_add(1))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        Ok(layout)
    }

    /// Puts frame `t` of stream `k` at step `s` (bounds already guaranteed by construction; the
    /// checks only make a bug harmless instead of a panic).
    fn place(&mut self, k: usize, t: usize, s: usize) {
        if k < self.num_streams && t < self.num_frames && s < self.num_steps {
            self.indices[k * self.num_steps + s] = t as i64;
            let first = &mut self.first_step[k * self.num_frames + t];
            *first = (*first).min(s);
        }
    }

    fn fill(&mut self) {
        let (k_streams, t_frames) = (self.num_streams, self.num_frames);
        match self.kind.clone() {
            PatternKind::Parallel => {
                for k in 0..k_streams {
                    for t in 0..t_frames {
                        self.place(k, t, t + 1);
                    }
                }
            }
            PatternKind::Delay {
                delays,
                flatten_first,
            } => {
                let flat_frames = t_frames.min(flatten_first);
                for t in 0..flat_frames {
                    for k in 0..k_streams {
                        self.place(k, t, 1 + t * k_streams + k);
                    }
                }
                // audiocraft: for t in flatten_first..T+max_delay, stream k holds t - delay_k
                // when that is >= flatten_first (and < T, else the special token).
                let base = 1 + flat_frames * k_streams;
                for s in base..self.num_steps {
                    let t = flatten_first + (s - base);
                    for (k, &d) in delays.iter().enumerate() {
                        if let Some(frame) = t.checked_sub(d) {
                            if frame >= flatten_first && frame < t_frames {
                                self.place(k, frame, s);
                            }
                        }
                    }
                }
            }
            PatternKind::Unroll { flattening } => {
                let inner = flattening.last().copied().unwrap_or(0) + 1;
                for (k, &f) in flattening.iter().enumerate() {
                    for t in 0..t_frames {
                        self.place(k, t, 1 + t * inner + f);
                    }
                }
            }
            PatternKind::CoarseFirst => {
                for t in 0..t_frames {
                    self.place(0, t, 1 + t);
                    for k in 1..k_streams {
                        self.place(k, t, 1 + t_frames + t);
                    }
                }
            }
        }
    }

    /// The pattern this layout was built from.
    pub fn kind(&self) -> &PatternKind {
        &self.kind
    }

    /// K.
    pub fn num_streams(&self) -> usize {
        self.num_streams
    }

    /// T.
    pub fn num_frames(&self) -> usize {
        self.num_frames
    }

    /// S, the number of LM steps (columns), step 0 included.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// Which frame of `stream` sits at `step`; `None` for the special token or out of range.
    pub fn frame_at(&self, step: usize, stream: usize) -> Option<usize> {
        if step >= self.num_steps || stream >= self.num_streams {
            return None;
        }
        usize::try_from(self.indices[stream * self.num_steps + step]).ok()
    }

    /// Gather indices `[K, S]` row-major: the frame index at each position, -1 for special.
    pub fn indices(&self) -> &[i64] {
        &self.indices
    }

    /// An owned copy of [`PatternLayout::indices`].
    pub fn build_indices(&self) -> Vec<i64> {
        self.indices.clone()
    }

    /// Validity mask `[K, S]`: true where a real frame (not the special token) sits.
    pub fn valid_mask(&self) -> Vec<bool> {
        self.indices.iter().map(|&i| i >= 0).collect()
    }

    /// Lays a grid out as LM steps: `grid` is `[K, T]` row-major, `special` one id per stream;
    /// returns `[K, S]` row-major.
    pub fn apply(&self, grid: &[i64], special: &[i64]) -> Result<Vec<i64>, PatternError> {
        let (k_streams, t_frames, s_steps) = (self.num_streams, self.num_frames, self.num_steps);
        check_len("grid [K, T]", k_streams * t_frames, grid.len())?;
        check_len("special ids", k_streams, special.len())?;
        let mut out = Vec::with_capacity(self.indices.len());
        for k in 0..k_streams {
            let row = &grid[k * t_frames..(k + 1) * t_frames];
            let idx = &self.indices[k * s_steps..(k + 1) * s_steps];
            out.extend(idx.iter().map(|&i| match usize::try_from(i) {
                Ok(t) => row.get(t).copied().unwrap_or(special[k]),
                Err(_) => special[k],
            }));
        }
        Ok(out)
    }

    /// Reads a grid back from LM steps. `steps` is `[K, n]` row-major with `n <= S` (a prefix of
    /// the step sequence is allowed, e.g. during generation). Returns the `[K, T]` grid and its
    /// validity mask: a position is valid when its step lies inside the given prefix; invalid
    /// positions hold -1.
    pub fn revert(&self, steps: &[i64]) -> Result<(Vec<i64>, Vec<bool>), PatternError> {
        let (k_streams, t_frames) = (self.num_streams, self.num_frames);
        let n = columns(steps.len(), k_streams, "step buffer")?;
        if n > self.num_steps {
            return Err(PatternError::TooManySteps {
                got: n,
                max: self.num_steps,
            });
        }
        let mut grid = vec![-1; k_streams * t_frames];
        let mut valid = vec![false; k_streams * t_frames];
        for k in 0..k_streams {
            for t in 0..t_frames {
                let s = self.first_step[k * t_frames + t];
                if s < n {
                    grid[k * t_frames + t] = steps[k * n + s];
                    valid[k * t_frames + t] = true;
                }
            }
        }
        Ok((grid, valid))
    }

    /// The `(stream, frame)` pairs placed at `step`, by increasing stream; empty for step 0, for
    /// all-special steps and for `step >= S`.
    pub fn step_positions(&self, step: usize) -> Vec<(usize, usize)> {
        (0..self.num_streams)
            .filter_map(|k| self.frame_at(step, k).map(|t| (k, t)))
            .collect()
    }

    /// The step at which frame `frame` of `stream` is placed (the LM input column that holds it;
    /// the logits predicting it come from step − 1). `None` when out of range.
    pub fn first_step(&self, stream: usize, frame: usize) -> Option<usize> {
        if stream >= self.num_streams || frame >= self.num_frames {
            return None;
        }
        match self.first_step[stream * self.num_frames + frame] {
            UNPLACED => None,
            s => Some(s),
        }
    }

    /// How many leading steps (columns, step 0 included) must exist for frame `frame` to be known
    /// in every stream: `1 + max_k first_step(k, frame)`. The number of LM forward passes that
    /// produce them is one less. `None` when `frame >= T`.
    pub fn steps_to_complete_frame(&self, frame: usize) -> Option<usize> {
        self.complete_len.get(frame).copied()
    }

    /// How many leading frames are complete in every stream once the first `num_steps` steps
    /// exist (the inverse of [`PatternLayout::steps_to_complete_frame`]).
    pub fn complete_frames(&self, num_steps: usize) -> usize {
        // Completion steps are non-decreasing in the frame index for every kind (tested).
        self.complete_len.partition_point(|&len| len <= num_steps)
    }
}

/// Length-preserving delay (Dia, Moshi): shifts stream `k` of `grid` (`[K, T]` row-major,
/// `K = delays.len()`) right by `delays[k]` inside a `[K, T + max_delay]` buffer. Position `p`
/// holds frame `p − delays[k]`: `bos[k]` where that is negative, `pad[k]` past the last frame.
///
/// Unlike [`PatternKind::Delay`] there is no all-special first column; Dia prepends a BOS frame
/// to the grid itself before shifting.
pub fn delay_shift(
    grid: &[i64],
    delays: &[usize],
    bos: &[i64],
    pad: &[i64],
) -> Result<Vec<i64>, PatternError> {
    let k_streams = delays.len();
    if k_streams == 0 {
        return Err(PatternError::EmptyDelays);
    }
    check_len("bos ids", k_streams, bos.len())?;
    check_len("pad ids", k_streams, pad.len())?;
    let t_frames = columns(grid.len(), k_streams, "grid [K, T]")?;
    if t_frames == 0 {
        return Err(PatternError::NoFrames);
    }
    let max_delay = delays.iter().copied().max().unwrap_or(0);
    let len = t_frames as u128 + max_delay as u128;
    let cells = cells(k_streams, len, "delayed buffer")?;
    let len = cells / k_streams;
    let mut out = Vec::with_capacity(cells);
    for (k, &d) in delays.iter().enumerate() {
        let row = &grid[k * t_frames..(k + 1) * t_frames];
        out.extend((0..len).map(|p| match p.checked_sub(d) {
            None => bos[k],
            Some(t) => row.get(t).copied().unwrap_or(pad[k]),
        }));
    }
    Ok(out)
}

/// Inverse of [`delay_shift`]: `shifted` is `[K, L]` row-major with `L >= max_delay`; returns the
/// `[K, L − max_delay]` grid of frames complete in every stream (empty when `L == max_delay`).
pub fn delay_unshift(shifted: &[i64], delays: &[usize]) -> Result<Vec<i64>, PatternError> {
    let k_streams = delays.len();
    if k_streams == 0 {
        return Err(PatternError::EmptyDelays);
    }
    let len = columns(shifted.len(), k_streams, "delayed buffer")?;
    let max_delay = delays.iter().copied().max().unwrap_or(0);
    if len < max_delay {
        return Err(PatternError::TooShort {
            columns: len,
            min: max_delay,
        });
    }
    let t_frames = len - max_delay;
    let mut out = Vec::with_capacity(k_streams * t_frames);
    for (k, &d) in delays.iter().enumerate() {
        // d <= max_delay, so d + t_frames <= len.
        out.extend_from_slice(&shifted[k * len + d..k * len + d + t_frames]);
    }
    Ok(out)
}
