//! Tests of `speechinfer_core::sampling` through its public API.

use speechinfer_core::rng::Rng;
use speechinfer_core::sampling::*;
const NEG: f32 = f32::NEG_INFINITY;

fn with(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams::default();
    f(&mut p);
    p
}

fn ln(xs: &[f64]) -> Vec<f32> {
    xs.iter().map(|&x| x.ln() as f32).collect()
}

fn close(a: &[f64], b: &[f64]) {
    let ok = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(ok, "{a:?} vs {b:?}");
}

fn dist(logits: &[f32], params: &SamplingParams, history: &[u32]) -> Vec<f64> {
    processed_distribution(logits, params, history).unwrap()
}

fn processed(proc: LogitsProcessor, row: &[f32]) -> Vec<f32> {
    let mut row = row.to_vec();
    proc.apply(&mut row).unwrap();
    row
}

#[test]
#[rustfmt::skip] // hand-computed cases, one per line
fn processors_on_hand_examples() {
    let l = ln(&[0.1, 0.2, 0.3, 0.4]);
    close(&dist(&l, &with(|_| ()), &[]), &[0.1, 0.2, 0.3, 0.4]);
    close(&dist(&l, &with(|p| p.temperature = 0.5), &[]), &[1.0 / 30.0, 4.0 / 30.0, 9.0 / 30.0, 16.0 / 30.0]);
    close(&dist(&l, &with(|p| p.top_k = Some(2)), &[]), &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0]);
    close(&dist(&l, &with(|p| p.top_p = Some(0.65)), &[]), &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0]);
    close(&dist(&l, &with(|p| p.top_p = Some(0.75)), &[]), &[0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0]);
    // The top token survives even a tiny nucleus.
    close(&dist(&l, &with(|p| p.top_p = Some(1e-6)), &[]), &[0.0, 0.0, 0.0, 1.0]);
    close(&dist(&l, &with(|p| p.min_p = Some(0.45)), &[]), &[0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0]);
    close(&dist(&l, &with(|p| p.min_p = Some(1.0)), &[]), &[0.0, 0.0, 0.0, 1.0]);
    let forbid3 = with(|p| p.mask = Some(TokenMask::forbid(4, &[3]).unwrap()));
    close(&dist(&l, &forbid3, &[]), &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0]);
    let force1 = with(|p| p.mask = Some(TokenMask::allow_only(4, &[1]).unwrap()));
    close(&dist(&l, &force1, &[]), &[0.0, 1.0, 0.0, 0.0]);
    // Repetition penalty: positive logits divided, negative multiplied, once per id; the
    // window sees only the last tokens; ids outside the row are ignored.
    let rep = |window, history| LogitsProcessor::RepetitionPenalty { penalty: 2.0, window, history };
    assert_eq!(processed(rep(0, &[0, 1, 1, 0]), &[2.0, -1.0, 0.5, 3.0]), [1.0, -2.0, 0.5, 3.0]);
    assert_eq!(processed(rep(2, &[0, 1, 9, 3]), &[2.0, -1.0, 0.5, 3.0]), [2.0, -1.0, 0.5, 1.5]);
    assert_eq!(processed(rep(0, &[0]), &[NEG, 1.0]), [NEG, 1.0]);
    // Top-k keeps exactly k, ties towards the lower id.
    assert_eq!(processed(LogitsProcessor::TopK(2), &[1.0, 2.0, 2.0, 2.0, 0.0]), [NEG, 2.0, 2.0, NEG, NEG]);
    // Temperature is a max-shift then a division.
    assert_eq!(processed(LogitsProcessor::Temperature(0.5), &[1.0, 3.0, NEG]), [-4.0, 0.0, NEG]);
    assert_eq!(processed(LogitsProcessor::MinP(0.5), &[0.0, 0.5, 1.0]), [NEG, 0.5, 1.0]);
    assert_eq!(TokenMask::allow_range(5, 1, 3), TokenMask::from_allowed(vec![false, true, true, false, false]));
}

#[test]
#[rustfmt::skip]
fn cfg_formulas() {
    let (c, u) = ([1.0, 2.0, 0.0, NEG], [0.0, 1.0, 1.0, 0.0]);
    let cfg = |s, f, k| apply_cfg(&c, &u, s, f, k);
    assert_eq!(cfg(3.0, CfgFormula::UncondPlus, None), Ok(vec![3.0, 4.0, -2.0, NEG]));
    assert_eq!(cfg(3.0, CfgFormula::CondPlus, None), Ok(vec![4.0, 5.0, -3.0, NEG]));
    assert_eq!(cfg(3.0, CfgFormula::CondPlus, Some(1)), Ok(vec![NEG, 5.0, NEG, NEG]));
    // Scale 1 (UncondPlus) and 0 (CondPlus) give the conditional row.
    assert_eq!(cfg(1.0, CfgFormula::UncondPlus, None), Ok(c.to_vec()));
    assert_eq!(cfg(0.0, CfgFormula::CondPlus, None), Ok(c.to_vec()));
    assert!(matches!(apply_cfg(&c, &u[..3], 3.0, CfgFormula::CondPlus, None), Err(SamplingError::LengthMismatch { .. })));
    assert!(cfg(f32::NAN, CfgFormula::CondPlus, None).is_err());
    assert!(cfg(-1.0, CfgFormula::CondPlus, None).is_err());
    assert!(cfg(1.0, CfgFormula::CondPlus, Some(0)).is_err());
    // Huge finite inputs saturate instead of overflowing to inf.
    assert_eq!(apply_cfg(&[3e38], &[-3e38], 10.0, CfgFormula::CondPlus, None), Ok(vec![f32::MAX]));
    // Dia order: the mask runs before the CFG top-k, so masked ids do not use up slots.
    let p = with(|p| {
        p.cfg_scale = Some(3.0);
        p.cfg_formula = CfgFormula::CondPlus;
        p.cfg_top_k = Some(1);
        p.mask = Some(TokenMask::forbid(4, &[1]).unwrap());
    });
    close(&processed_distribution_cfg(&c, &u, &p, &[]).unwrap(), &[1.0, 0.0, 0.0, 0.0]);
    // Without a scale the unconditional row is ignored.
    close(&processed_distribution_cfg(&[0.0, 0.0], &[5.0, 0.0], &with(|_| ()), &[]).unwrap(), &[0.5, 0.5]);
}

#[test]
#[rustfmt::skip]
fn greedy() {
    let mut rng = Rng::new(0);
    let g = SamplingParams { top_k: Some(1), top_p: Some(0.1), ras_window: 2, ..SamplingParams::greedy() };
    assert_eq!(sample(&mut [0.0, 3.0, 3.0, 1.0], &g, &[1, 1], &mut rng), Ok(1));
    assert_eq!(rng, Rng::new(0), "greedy consumes no randomness");
    let masked = SamplingParams { mask: Some(TokenMask::allow_only(4, &[0, 3]).unwrap()), ..g.clone() };
    assert_eq!(sample(&mut [0.0, 3.0, 3.0, 1.0], &masked, &[], &mut rng), Ok(3));
    let penalised = SamplingParams { repetition_penalty: Some(4.0), ..g.clone() };
    assert_eq!(sample(&mut [0.0, 3.0, 2.0], &penalised, &[1], &mut rng), Ok(2));
    let guided = SamplingParams { cfg_scale: Some(3.0), ..g.clone() };
    assert_eq!(processed_distribution_cfg(&[1.0, 0.9], &[0.0, 1.0], &guided, &[]), Ok(vec![1.0, 0.0]));
    assert_eq!(sample_cfg(&[0.9, 1.0], &[0.0, 1.0], &guided, &[], &mut rng), Ok(0));
    assert_eq!(sample(&mut [NEG, -5.0, NEG], &g, &[], &mut rng), Ok(1));
    assert_eq!(sample(&mut [NEG, NEG], &g, &[], &mut rng), Err(SamplingError::AllMasked));
}

#[test]
#[rustfmt::skip]
fn errors() {
    let bad = |f: fn(&mut SamplingParams)| with(f).validate().is_err();
    assert!(bad(|p| p.temperature = -1.0));
    assert!(bad(|p| p.temperature = f32::NAN));
    assert!(bad(|p| p.temperature = f32::INFINITY));
    assert!(bad(|p| p.top_k = Some(0)));
    assert!(bad(|p| p.cfg_top_k = Some(0)));
    for x in [0.0, -0.1, 1.5, f32::NAN] {
        assert!(with(|p| p.top_p = Some(x)).validate().is_err());
    }
    for x in [-0.1, 1.5, f32::NAN] {
        assert!(with(|p| p.min_p = Some(x)).validate().is_err());
    }
    for x in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(with(|p| p.repetition_penalty = Some(x)).validate().is_err());
    }
    assert!(bad(|p| p.cfg_scale = Some(f32::NAN)));
    assert!(bad(|p| p.cfg_scale = Some(-1.0)));
    assert!(bad(|p| p.ras_threshold = f32::NAN));
    assert!(bad(|p| p.mask = Some(TokenMask::from_allowed(vec![false; 3]))));
    assert!(!bad(|p| { p.top_p = Some(1.0); p.min_p = Some(0.0); p.temperature = 0.0 }));
    let msg = with(|p| p.top_p = Some(2.0)).validate().unwrap_err().to_string();
    assert!(msg.contains("top_p") && msg.contains('2'), "{msg}");

    let (mut rng, p) = (Rng::new(0), with(|_| ()));
    assert_eq!(sample(&mut [], &p, &[], &mut rng), Err(SamplingError::EmptyLogits));
    assert!(matches!(sample(&mut [0.0, f32::NAN], &p, &[], &mut rng), Err(SamplingError::NonFiniteLogit { index: 1, .. })));
    assert!(sample(&mut [0.0, f32::INFINITY], &p, &[], &mut rng).is_err());
    assert_eq!(sample(&mut [NEG, NEG], &p, &[], &mut rng), Err(SamplingError::AllMasked));
    let only2 = with(|p| p.mask = Some(TokenMask::allow_only(3, &[2]).unwrap()));
    assert_eq!(sample(&mut [0.0, 1.0, NEG], &only2, &[], &mut rng), Err(SamplingError::AllMasked));
    assert!(matches!(sample(&mut [0.0, 1.0], &only2, &[], &mut rng), Err(SamplingError::LengthMismatch { .. })));
    assert!(matches!(sample_cfg(&[0.0], &[f32::NAN], &with(|p| p.cfg_scale = Some(1.0)), &[], &mut rng), Err(SamplingError::NonFiniteLogit { .. })));
    assert_eq!(TokenMask::allow_only(3, &[3]), Err(SamplingError::TokenOutOfRange { token: 3, vocab_size: 3 }));
    assert!(TokenMask::forbid(3, &[7]).is_err());
    assert!(LogitsProcessor::Temperature(0.0).apply(&mut [0.0]).is_err());
    assert!(LogitsProcessor::TopP(0.0).apply(&mut [0.0]).is_err());
    assert!(LogitsProcessor::TopK(1).apply(&mut [f32::NAN]).is_err());
}

#[test]
fn numerics() {
    // Tiny temperature: no overflow, effectively greedy.
    let cold = with(|p| p.temperature = 1e-30);
    close(
        &dist(&[1.0, 1.5, NEG, -3e38], &cold, &[]),
        &[0.0, 1.0, 0.0, 0.0],
    );
    close(&dist(&[3e38, -3e38], &with(|_| ()), &[]), &[1.0, 0.0]);
    close(&dist(&[7.0], &with(|_| ()), &[]), &[1.0]);
    let mut rng = Rng::new(1);
    for _ in 0..100 {
        let t = sample(&mut [NEG, NEG, 0.0], &with(|_| ()), &[], &mut rng);
        assert_eq!(t, Ok(2));
    }
}

#[test]
fn chain_matches_processed_distribution() {
    let (logits, p, history) = (test_logits(), all_processors(), [0, 3, 3, 12]);
    let mut row = logits.clone();
    for proc in p.chain(&history) {
        proc.apply(&mut row).unwrap();
    }
    let (w, sum) = softmax_weights(&row).unwrap();
    let manual: Vec<f64> = w.iter().map(|x| x / sum).collect();
    assert_eq!(manual, dist(&logits, &p, &history));
    // `sample` leaves the processed row behind.
    let mut sampled_row = logits.clone();
    sample(&mut sampled_row, &p, &history, &mut Rng::new(0)).unwrap();
    assert_eq!(sampled_row, row);
    assert_eq!(SamplingParams::greedy().chain(&history), vec![]);
}

#[test]
fn same_seed_same_tokens() {
    let (logits, p) = (test_logits(), all_processors());
    let run = |seed| {
        let mut rng = Rng::new(seed);
        let mut draw = || sample(&mut logits.clone(), &p, &[1, 2], &mut rng).unwrap();
        (0..200).map(|_| draw()).collect::<Vec<u32>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn ras_hand_example() {
    let l = ln(&[0.5, 0.3, 0.2]);
    let p = with(|p| {
        p.top_k = Some(1);
        p.ras_window = 4;
        p.ras_threshold = 0.5;
    });
    // Token 0 fills half the window: always resampled from the full distribution.
    close(&dist(&l, &p, &[0, 0, 1, 2]), &[0.5, 0.3, 0.2]);
    // Only a quarter: the nucleus (token 0) stands.
    close(&dist(&l, &p, &[0, 1, 2, 1]), &[1.0, 0.0, 0.0]);
    // A short history still divides by the window (1/4 < 0.5).
    close(&dist(&l, &p, &[0]), &[1.0, 0.0, 0.0]);
    // VALL-E 2 defaults: window 10, threshold 0.1 -> one occurrence triggers.
    let p = with(|p| {
        p.top_k = Some(1);
        p.ras_window = 10;
    });
    close(&dist(&l, &p, &[0]), &[0.5, 0.3, 0.2]);
}

// ---- chi-square goodness of fit ----

fn test_logits() -> Vec<f32> {
    let l = [
        2.0, 1.5, 1.2, 1.0, 0.8, 0.5, 0.3, 0.0, -0.2, -0.5, -0.8, -1.0, -1.5, -2.0, -3.0,
    ];
    [&l[..], &[-4.0]].concat()
}

fn uncond_logits() -> Vec<f32> {
    let u = [
        1.0, 1.6, 0.2, 1.4, 0.0, 0.9, -0.3, 0.5, 0.1, -1.0, 0.2, -0.4, -1.0, -2.5, -2.0,
    ];
    [&u[..], &[-3.0]].concat()
}

fn all_processors() -> SamplingParams {
    with(|p| {
        p.temperature = 0.8;
        p.top_k = Some(12);
        p.top_p = Some(0.95);
        p.min_p = Some(0.02);
        p.repetition_penalty = Some(1.3);
        p.repetition_window = 3;
        p.mask = Some(TokenMask::forbid(16, &[4]).unwrap());
    })
}

/// Upper 1e-6 quantile of the chi-square distribution (Wilson–Hilferty).
fn critical_value(df: usize) -> f64 {
    const Z: f64 = 4.753_424_308_822_899; // Φ⁻¹(1 − 1e-6)
    let (df, a) = (df as f64, 2.0 / (9.0 * df as f64));
    df * (1.0 - a + Z * a.sqrt()).powi(3)
}

/// Pearson statistic, degrees of freedom, and whether a zero-probability token was drawn.
/// Bins with expected count < 5 are pooled (the pool joins the smallest bin if still < 5).
fn chi_square(counts: &[u64], probs: &[f64]) -> (f64, usize, bool) {
    let n = counts.iter().sum::<u64>() as f64;
    let impossible = counts.iter().zip(probs).any(|(&c, &p)| c > 0 && p == 0.0);
    let (mut bins, mut pool) = (Vec::new(), (0.0, 0.0));
    for (&c, &p) in counts.iter().zip(probs) {
        match p * n {
            e if e >= 5.0 => bins.push((c as f64, e)),
            e => pool = (pool.0 + c as f64, pool.1 + e),
        }
    }
    if pool.1 >= 5.0 {
        bins.push(pool);
    } else if let Some(smallest) = bins.iter_mut().min_by(|a, b| a.1.total_cmp(&b.1)) {
        *smallest = (smallest.0 + pool.0, smallest.1 + pool.1);
    }
    let stat = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    (stat, bins.len().saturating_sub(1), impossible)
}

fn draw_counts(cond: &[f32], uncond: Option<&[f32]>, p: &SamplingParams, seed: u64) -> Vec<u64> {
    let (mut rng, mut counts) = (Rng::new(seed), vec![0u64; cond.len()]);
    for _ in 0..20_000 {
        let t = match uncond {
            Some(u) => sample_cfg(cond, u, p, &HISTORY, &mut rng),
            None => sample(&mut cond.to_vec(), p, &HISTORY, &mut rng),
        };
        counts[t.unwrap() as usize] += 1;
    }
    counts
}

const HISTORY: [u32; 6] = [0, 3, 3, 12, 7, 1];

#[test]
fn critical_values_are_sane() {
    // Exact upper-1e-6 quantiles: df 1 → 23.93, df 10 → 46.86, df 15 → 56.49.
    assert!((critical_value(10) - 46.86).abs() < 1.5);
    assert!((critical_value(15) - 56.49).abs() < 1.5);
    assert!(critical_value(1) > 23.93);
}

#[test]
#[rustfmt::skip] // one configuration per line
fn chi_square_every_configuration() {
    let (cond, uncond) = (test_logits(), uncond_logits());
    let configs: Vec<(&str, SamplingParams)> = vec![
        ("temperature 1", with(|_| ())),
        ("temperature 0.5", with(|p| p.temperature = 0.5)),
        ("temperature 1.7", with(|p| p.temperature = 1.7)),
        ("top-k 5", with(|p| p.top_k = Some(5))),
        ("top-p 0.8", with(|p| p.top_p = Some(0.8))),
        ("min-p 0.1", with(|p| p.min_p = Some(0.1))),
        ("repetition penalty", with(|p| { p.repetition_penalty = Some(1.8); p.repetition_window = 4 })),
        ("mask", with(|p| p.mask = Some(TokenMask::allow_range(16, 2, 14)))),
        ("RAS", with(|p| { p.top_k = Some(3); p.ras_window = 4; p.ras_threshold = 0.25 })),
        ("CFG u + s(c - u)", with(|p| p.cfg_scale = Some(3.0))),
        ("CFG c + s(c - u), top-k", with(|p| {
            p.cfg_scale = Some(3.0); p.cfg_formula = CfgFormula::CondPlus; p.cfg_top_k = Some(6); p.temperature = 1.3;
        })),
        ("everything", all_processors()),
    ];
    for (seed, (what, p)) in configs.into_iter().enumerate() {
        let uncond = p.cfg_scale.map(|_| uncond.as_slice());
        let probs = match uncond {
            Some(u) => processed_distribution_cfg(&cond, u, &p, &HISTORY).unwrap(),
            None => processed_distribution(&cond, &p, &HISTORY).unwrap(),
        };
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{what}");
        let counts = draw_counts(&cond, uncond, &p, seed as u64);
        let (stat, df, impossible) = chi_square(&counts, &probs);
        assert!(!impossible, "{what}: drew a zero-probability token");
        assert!(df >= 2, "{what}: degenerate test");
        let crit = critical_value(df);
        assert!(stat < crit, "{what}: chi2 {stat:.1} >= {crit:.1} (df {df})");
    }
}

#[test]
fn chi_square_rejects_wrong_distribution() {
    let logits = test_logits();
    let counts = draw_counts(&logits, None, &with(|_| ()), 99);
    let wrong = dist(&logits, &with(|p| p.temperature = 0.5), &HISTORY);
    let (stat, df, _) = chi_square(&counts, &wrong);
    assert!(
        stat > critical_value(df),
        "negative control accepted: {stat}"
    );
    // A drawn zero-probability token is caught too.
    let narrow = dist(&logits, &with(|p| p.top_k = Some(2)), &HISTORY);
    assert!(chi_square(&counts, &narrow).2);
}
