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

#[cfg(test)]
mod tests {
    use super::PatternError::*;
    use super::*;

    /// Parses a grid of `patterns.md`: `S` = special, `n` = frame n − 1.
    fn parse(text: &str) -> Vec<Vec<Option<usize>>> {
        let cell = |c: &str| c.parse::<usize>().ok().map(|n| n - 1);
        text.lines()
            .map(|l| l.split_whitespace().map(cell).collect::<Vec<_>>())
            .filter(|r| !r.is_empty())
            .collect()
    }

    fn rows(layout: &PatternLayout) -> Vec<Vec<Option<usize>>> {
        let steps = 0..layout.num_steps();
        let row = |k| steps.clone().map(|s| layout.frame_at(s, k)).collect();
        (0..layout.num_streams()).map(row).collect()
    }

    fn delay_ff(delays: Vec<usize>, flatten_first: usize) -> PatternKind {
        PatternKind::Delay {
            delays,
            flatten_first,
        }
    }

    fn unroll(flattening: Vec<usize>) -> PatternKind {
        PatternKind::Unroll { flattening }
    }

    /// Every grid of `reference/patterns.md` (K = 3, T = 4), verbatim, in the order of `kinds`.
    const GRIDS: &str = "
        S  1  2  3  4  S  S
        S  S  1  2  3  4  S
        S  S  S  1  2  3  4

        S  1  2  3  4
        S  1  2  3  4
        S  1  2  3  4

        S  1  2  3  4  S  S  S
        S  S  S  1  2  3  4  S
        S  S  S  S  1  2  3  4

        S  1  S  S  2  3  4  S  S
        S  S  1  S  S  2  3  4  S
        S  S  S  1  S  S  2  3  4

        S  1  S  S  2  S  S  3  S  S  4  S  S
        S  S  1  S  S  2  S  S  3  S  S  4  S
        S  S  S  1  S  S  2  S  S  3  S  S  4

        S  1  S  2  S  3  S  4  S
        S  S  1  S  2  S  3  S  4
        S  S  1  S  2  S  3  S  4

        S  1  2  3  4  S  S  S  S
        S  S  S  S  S  1  2  3  4
        S  S  S  S  S  1  2  3  4";

    #[test]
    fn verified_grids() {
        let kinds = [
            PatternKind::delay(vec![0, 1, 2]),
            PatternKind::Parallel,
            PatternKind::delay(vec![0, 2, 3]),
            delay_ff(vec![0, 1, 2], 1),
            PatternKind::flatten(3),
            unroll(vec![0, 1, 1]),
            PatternKind::CoarseFirst,
        ];
        let grids: Vec<_> = parse(GRIDS).chunks(3).map(<[_]>::to_vec).collect();
        assert_eq!(grids.len(), kinds.len());
        for (kind, grid) in kinds.into_iter().zip(grids) {
            let layout = PatternLayout::build(kind.clone(), 3, 4).unwrap();
            assert_eq!(rows(&layout), grid, "{kind:?}");
            check_invariants(&layout);
        }
        // Parallel is delay with delays [0, 0, 0].
        let zero = PatternLayout::build(PatternKind::delay(vec![0; 3]), 3, 4).unwrap();
        assert_eq!(rows(&zero), parse(GRIDS)[3..6].to_vec());
        let single = PatternLayout::build(PatternKind::CoarseFirst, 1, 3).unwrap();
        assert_eq!(rows(&single), parse("S 1 2 3"));
    }

    #[test]
    fn apply_revert_and_queries() {
        let layout = PatternLayout::build(PatternKind::delay(vec![0, 1]), 2, 3).unwrap();
        let grid = [10, 11, 12, 20, 21, 22];
        let steps = layout.apply(&grid, &[-1, -2]).unwrap();
        assert_eq!(steps, vec![-1, 10, 11, 12, -1, -2, -2, 20, 21, 22]);
        let all_valid = (grid.to_vec(), vec![true; 6]);
        assert_eq!(layout.revert(&steps).unwrap(), all_valid);
        // A prefix of 3 steps knows frames 0..2 of stream 0 and frame 0 of stream 1.
        let prefix: Vec<i64> = [&steps[0..3], &steps[5..8]].concat();
        let (back, valid) = layout.revert(&prefix).unwrap();
        assert_eq!(back, vec![10, 11, -1, 20, -1, -1]);
        assert_eq!(valid, vec![true, true, false, true, false, false]);
        let indices = vec![-1, 0, 1, 2, -1, -1, -1, 0, 1, 2];
        assert_eq!(layout.build_indices(), indices);

        let layout = PatternLayout::build(PatternKind::default_delay(3), 3, 4).unwrap();
        assert_eq!(layout.step_positions(0), vec![]);
        assert_eq!(layout.step_positions(2), vec![(0, 1), (1, 0)]);
        assert_eq!(layout.step_positions(3), vec![(0, 2), (1, 1), (2, 0)]);
        assert_eq!(layout.step_positions(6), vec![(2, 3)]);
        assert_eq!(layout.step_positions(7), vec![]);
        assert_eq!(layout.first_step(2, 0), Some(3));
        assert_eq!(layout.first_step(3, 0).or(layout.first_step(0, 4)), None);
        assert_eq!(layout.steps_to_complete_frame(0), Some(4));
        assert_eq!(layout.steps_to_complete_frame(3), Some(7));
        assert_eq!(layout.steps_to_complete_frame(4), None);
        let complete = [0, 3, 4, 6, 7, 100].map(|n| layout.complete_frames(n));
        assert_eq!(complete, [0, 0, 1, 3, 4, 4]);
        assert_eq!(layout.frame_at(99, 0).or(layout.frame_at(0, 99)), None);
    }

    #[test]
    fn dia_example() {
        const B: i64 = -10;
        const P: i64 = -20;
        let grid = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4];
        let delays = [0, 2, 3];
        let shifted = delay_shift(&grid, &delays, &[B; 3], &[P; 3]).unwrap();
        #[rustfmt::skip]
        let expected = vec![
            1, 2, 3, 4, P, P, P,
            B, B, 1, 2, 3, 4, P,
            B, B, B, 1, 2, 3, 4,
        ];
        assert_eq!(shifted, expected);
        assert_eq!(delay_unshift(&shifted, &delays).unwrap(), grid);
        // A buffer of max_delay columns holds no complete frame.
        assert_eq!(delay_unshift(&[0; 9], &delays).unwrap(), Vec::<i64>::new());
    }

    fn err<T: fmt::Debug>(result: Result<T, PatternError>) -> PatternError {
        result.unwrap_err()
    }

    #[test]
    #[rustfmt::skip] // a table of cases: one line each
    fn validation_errors() {
        let b = PatternLayout::build;
        let len = |what, expected, got| Length { what, expected, got };
        let flat = |index, value| InvalidFlattening { index, value };
        let large = |what| TooLarge { what };
        let multiple = |what, len| NotMultiple { what, len, streams: 2 };
        let huge = vec![0, usize::MAX];
        assert_eq!(err(b(PatternKind::delay(vec![]), 3, 4)), EmptyDelays);
        assert_eq!(err(b(PatternKind::Parallel, 0, 4)), NoStreams);
        assert_eq!(err(b(PatternKind::Parallel, 3, 0)), NoFrames);
        assert_eq!(err(b(PatternKind::delay(vec![0, 1]), 3, 4)), len("delays", 3, 2));
        assert_eq!(err(b(unroll(vec![0, 1]), 3, 4)), len("flattening", 3, 2));
        assert_eq!(err(b(unroll(vec![1, 1, 2]), 3, 4)), flat(0, 1));
        assert_eq!(err(b(unroll(vec![0, 1, 0]), 3, 4)), flat(2, 0));
        assert_eq!(err(b(unroll(vec![0, 2, 2]), 3, 4)), flat(1, 2));
        assert_eq!(err(b(PatternKind::delay(huge.clone()), 2, 4)), large("pattern"));
        assert_eq!(err(b(PatternKind::CoarseFirst, 2, usize::MAX)), large("pattern"));
        assert_eq!(err(b(PatternKind::Parallel, usize::MAX, usize::MAX)), large("pattern"));
        assert_eq!(err(b(PatternKind::Parallel, 1 << 20, 1 << 20)), large("pattern"));

        let layout = b(PatternKind::delay(vec![0, 1]), 2, 3).unwrap();
        assert_eq!(err(layout.apply(&[0; 5], &[0, 0])), len("grid [K, T]", 6, 5));
        assert_eq!(err(layout.apply(&[0; 6], &[0])), len("special ids", 2, 1));
        assert_eq!(err(layout.revert(&[0; 7])), multiple("step buffer", 7));
        assert_eq!(err(layout.revert(&[0; 12])), TooManySteps { got: 6, max: 5 });

        let (d, z) = ([0, 1], [0, 0]);
        assert_eq!(err(delay_shift(&[1], &[], &[], &[])), EmptyDelays);
        assert_eq!(err(delay_shift(&[1, 2, 3], &d, &z, &z)), multiple("grid [K, T]", 3));
        assert_eq!(err(delay_shift(&[1, 2], &d, &[0], &z)), len("bos ids", 2, 1));
        assert_eq!(err(delay_shift(&[1, 2], &d, &z, &[0])), len("pad ids", 2, 1));
        assert_eq!(err(delay_shift(&[], &d, &z, &z)), NoFrames);
        assert_eq!(err(delay_shift(&[1, 2], &huge, &z, &z)), large("delayed buffer"));
        assert_eq!(err(delay_unshift(&[1, 2], &[0, 2])), TooShort { columns: 1, min: 2 });
        assert_eq!(err(delay_unshift(&[1, 2, 3], &d)), multiple("delayed buffer", 3));
        assert_eq!(err(delay_unshift(&[1], &[])), EmptyDelays);
        assert!(EmptyDelays.to_string().contains("delay"));
        assert!(large("x").to_string().contains("too large"));
    }

    /// Structural invariants every layout must satisfy.
    fn check_invariants(layout: &PatternLayout) {
        let (k_n, t_n) = (layout.num_streams(), layout.num_frames());
        let s_n = layout.num_steps();
        assert_eq!(layout.indices().len(), k_n * s_n);
        // Column 0 is all-special.
        assert!((0..k_n).all(|k| layout.frame_at(0, k).is_none()));
        for k in 0..k_n {
            // Each frame exactly once, in increasing step order, consistent tables.
            let placed: Vec<(usize, usize)> = (0..s_n)
                .filter_map(|s| layout.frame_at(s, k).map(|t| (s, t)))
                .collect();
            assert_eq!(placed.len(), t_n);
            for (i, &(s, t)) in placed.iter().enumerate() {
                assert_eq!(t, i);
                assert_eq!(layout.first_step(k, t), Some(s));
                assert!(layout.step_positions(s).contains(&(k, t)));
            }
        }
        let mut prev = 0;
        for t in 0..t_n {
            let c = layout.steps_to_complete_frame(t).unwrap();
            let last = (0..k_n).map(|k| layout.first_step(k, t).unwrap()).max();
            assert_eq!(Some(c - 1), last);
            assert!(c > prev && c <= s_n);
            prev = c;
            assert_eq!(layout.complete_frames(c), t + 1);
            assert_eq!(layout.complete_frames(c - 1), t);
        }
        let valid = layout.valid_mask().iter().filter(|&&v| v).count();
        assert_eq!(valid, k_n * t_n);
    }

    /// Tiny xorshift64 for deterministic property loops.
    struct XorShift(u64);
    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn random_kind(rng: &mut XorShift, k_n: usize) -> PatternKind {
        match rng.below(5) {
            0 => PatternKind::Parallel,
            1 => PatternKind::CoarseFirst,
            2 => unroll(
                (0..k_n)
                    .scan(0, |f, k| {
                        *f += usize::from(k > 0) * rng.below(2);
                        Some(*f)
                    })
                    .collect(),
            ),
            _ => {
                let ff = if rng.below(3) == 0 { rng.below(4) } else { 0 };
                delay_ff((0..k_n).map(|_| rng.below(6)).collect(), ff)
            }
        }
    }

    #[test]
    fn property_apply_revert_roundtrip() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let (k_n, t_n) = (1 + rng.below(6), 1 + rng.below(12));
            let kind = random_kind(&mut rng, k_n);
            let layout = PatternLayout::build(kind.clone(), k_n, t_n).unwrap();
            let s_n = layout.num_steps();
            check_invariants(&layout);
            let grid: Vec<i64> = (0..k_n * t_n).map(|_| rng.below(1000) as i64).collect();
            let special: Vec<i64> = (0..k_n).map(|k| 5000 + k as i64).collect();
            let steps = layout.apply(&grid, &special).unwrap();
            assert_eq!(steps.len(), k_n * s_n);
            let (back, valid) = layout.revert(&steps).unwrap();
            assert_eq!(back, grid, "{kind:?}");
            assert!(valid.iter().all(|&v| v));
            for (i, &idx) in layout.indices().iter().enumerate() {
                if idx < 0 {
                    assert_eq!(steps[i], special[i / s_n]);
                }
            }
            // Prefixes: valid exactly where the frame's step is inside the prefix.
            let n = rng.below(s_n + 1);
            let prefix: Vec<i64> = (0..k_n)
                .flat_map(|k| steps[k * s_n..][..n].to_vec())
                .collect();
            let (part, valid) = layout.revert(&prefix).unwrap();
            for k in 0..k_n {
                for t in 0..t_n {
                    let inside = layout.first_step(k, t).unwrap() < n;
                    assert_eq!(valid[k * t_n + t], inside);
                    let want = if inside { grid[k * t_n + t] } else { -1 };
                    assert_eq!(part[k * t_n + t], want);
                }
            }
            for t in 0..layout.complete_frames(n) {
                assert!((0..k_n).all(|k| valid[k * t_n + t]));
            }
        }
    }

    #[test]
    fn property_delay_lengths_and_positions() {
        let mut rng = XorShift(12345);
        for _ in 0..2000 {
            let (k_n, t_n) = (1 + rng.below(8), 1 + rng.below(20));
            let delays: Vec<usize> = (0..k_n).map(|_| rng.below(10)).collect();
            let max_delay = *delays.iter().max().unwrap();
            let layout =
                PatternLayout::build(PatternKind::delay(delays.clone()), k_n, t_n).unwrap();
            assert_eq!(layout.num_steps(), t_n + max_delay + 1);
            for s in 0..layout.num_steps() {
                for (k, &d) in delays.iter().enumerate() {
                    let want = s.checked_sub(d + 1).filter(|&t| t < t_n);
                    assert_eq!(layout.frame_at(s, k), want);
                }
            }
            // With flatten_first f: 1 + K·min(T, f) + max(0, T + max_delay − f) steps.
            let f = rng.below(t_n + 3);
            let layout = PatternLayout::build(delay_ff(delays, f), k_n, t_n).unwrap();
            let want = 1 + k_n * t_n.min(f) + (t_n + max_delay).saturating_sub(f);
            assert_eq!(layout.num_steps(), want);
            check_invariants(&layout);
            // Default delays: stream q at step s holds frame max(0, s − q − 1) where valid.
            let layout = PatternLayout::build(PatternKind::default_delay(k_n), k_n, t_n).unwrap();
            for s in 0..layout.num_steps() {
                for q in 0..k_n {
                    if let Some(t) = layout.frame_at(s, q) {
                        assert_eq!(t, s.saturating_sub(q + 1));
                    }
                }
            }
        }
    }

    #[test]
    fn property_delay_shift_roundtrip() {
        let mut rng = XorShift(777);
        for _ in 0..2000 {
            let (k_n, t_n) = (1 + rng.below(9), 1 + rng.below(20));
            let delays: Vec<usize> = (0..k_n).map(|_| rng.below(16)).collect();
            let len = t_n + delays.iter().max().unwrap();
            let grid: Vec<i64> = (0..k_n * t_n).map(|_| rng.below(1024) as i64).collect();
            let bos: Vec<i64> = (0..k_n).map(|k| 2000 + k as i64).collect();
            let pad: Vec<i64> = (0..k_n).map(|k| 3000 + k as i64).collect();
            let shifted = delay_shift(&grid, &delays, &bos, &pad).unwrap();
            assert_eq!(shifted.len(), k_n * len);
            for (k, &d) in delays.iter().enumerate() {
                for p in 0..len {
                    let want = match p.checked_sub(d) {
                        None => bos[k],
                        Some(t) if t < t_n => grid[k * t_n + t],
                        Some(_) => pad[k],
                    };
                    assert_eq!(shifted[k * len + p], want);
                }
            }
            assert_eq!(delay_unshift(&shifted, &delays).unwrap(), grid);
        }
    }
}
