//! Tests of `speechinfer_core::pattern` through its public API.

use speechinfer_core::pattern::PatternError::*;
use speechinfer_core::pattern::*;
use std::fmt;
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
        let layout = PatternLayout::build(PatternKind::delay(delays.clone()), k_n, t_n).unwrap();
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
