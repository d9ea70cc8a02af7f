//! Token sampling for one stream's logits row: a chain of logits processors, then a draw.
//!
//! Order (fixed, so a seed always means the same thing):
//! CFG combine (the `*_cfg` entry points only) → token mask → CFG top-k → repetition penalty →
//! temperature → top-k → top-p → min-p → softmax (f64, max-subtracted) → one inverse-CDF draw
//! with one [`Rng::next_f64`]. Repetition-aware sampling (VALL-E 2) may spend a second draw.
//! Temperature 0 is greedy: the argmax (first index on ties) after CFG, mask and repetition
//! penalty; the filters and RAS are skipped and no random number is consumed.
//!
//! Logits may hold `-inf` (impossible tokens); NaN and `+inf` are rejected. Masked-out or
//! filtered tokens become `-inf`. No function here panics on bad input.

use crate::rng::Rng;
use std::fmt;

/// Why sampling parameters or inputs were rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplingError {
    /// A parameter outside its domain; `expected` describes the domain.
    InvalidParam {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    /// A logits row with no entries.
    EmptyLogits,
    /// A NaN or `+inf` logit (`-inf` is allowed and means "impossible").
    NonFiniteLogit { index: usize, value: f32 },
    /// Two rows (cond/uncond, logits/mask) of different lengths.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A token id outside the vocabulary.
    TokenOutOfRange { token: u32, vocab_size: usize },
    /// Every token is impossible after masking (mask, `-inf` logits, CFG).
    AllMasked,
}

impl fmt::Display for SamplingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidParam {
                name,
                value,
                expected,
            } => write!(
                f,
                "sampling parameter {name} = {value}: expected {expected}"
            ),
            Self::EmptyLogits => write!(f, "logits row is empty"),
            Self::NonFiniteLogit { index, value } => {
                write!(f, "logit {index} is {value}: logits must be finite or -inf")
            }
            Self::LengthMismatch {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected length {expected}, got {got}"),
            Self::TokenOutOfRange { token, vocab_size } => {
                write!(f, "token id {token} out of range (vocabulary {vocab_size})")
            }
            Self::AllMasked => write!(f, "every token is masked: nothing to sample"),
        }
    }
}

impl std::error::Error for SamplingError {}

/// `Ok` when `ok`, else an [`SamplingError::InvalidParam`].
fn require(
    ok: bool,
    name: &'static str,
    value: f64,
    expected: &'static str,
) -> Result<(), SamplingError> {
    match ok {
        true => Ok(()),
        false => Err(SamplingError::InvalidParam {
            name,
            value,
            expected,
        }),
    }
}

/// How conditional (`c`) and unconditional (`u`) logits combine under classifier-free guidance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CfgFormula {
    /// `u + s·(c − u)` (audiocraft / MusicGen; s = 1 is plain conditional).
    #[default]
    UncondPlus,
    /// `c + s·(c − u)` (Dia; s = 0 is plain conditional), usually with `cfg_top_k`.
    CondPlus,
}

/// The set of token ids a stream may emit (e.g. its own vocabulary range, or everything except
/// its special ids). A single allowed id forces that token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    allowed: Vec<bool>,
}

impl TokenMask {
    /// A mask from one flag per token id.
    pub fn from_allowed(allowed: Vec<bool>) -> Self {
        TokenMask { allowed }
    }

    /// Only `ids` allowed.
    pub fn allow_only(vocab_size: usize, ids: &[u32]) -> Result<Self, SamplingError> {
        let mut allowed = vec![false; vocab_size];
        for &id in ids {
            *slot(&mut allowed, id)? = true;
        }
        Ok(TokenMask { allowed })
    }

    /// Everything except `ids` allowed.
    pub fn forbid(vocab_size: usize, ids: &[u32]) -> Result<Self, SamplingError> {
        let mut allowed = vec![true; vocab_size];
        for &id in ids {
            *slot(&mut allowed, id)? = false;
        }
        Ok(TokenMask { allowed })
    }

    /// Ids in `start..end` allowed (clamped to the vocabulary).
    pub fn allow_range(vocab_size: usize, start: u32, end: u32) -> Self {
        let allowed = (0..vocab_size)
            .map(|i| (start as usize..end as usize).contains(&i))
            .collect();
        TokenMask { allowed }
    }

    pub fn vocab_size(&self) -> usize {
        self.allowed.len()
    }

    /// False for ids outside the vocabulary.
    pub fn is_allowed(&self, id: u32) -> bool {
        self.allowed.get(id as usize).copied().unwrap_or(false)
    }
}

fn slot(allowed: &mut [bool], id: u32) -> Result<&mut bool, SamplingError> {
    let vocab_size = allowed.len();
    allowed
        .get_mut(id as usize)
        .ok_or(SamplingError::TokenOutOfRange {
            token: id,
            vocab_size,
        })
}

/// Everything the sampler needs for one stream. `Default` is plain sampling at temperature 1.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy; otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep the `k` largest logits (exactly `k`; ties broken towards the lower id).
    pub top_k: Option<usize>,
    /// Nucleus: keep the smallest most-likely set with cumulative probability `>= top_p`.
    pub top_p: Option<f32>,
    /// Drop tokens with probability `< min_p · max probability`.
    pub min_p: Option<f32>,
    /// CTRL penalty for tokens in the last `repetition_window` history tokens.
    pub repetition_penalty: Option<f32>,
    /// History tokens the repetition penalty looks at; 0 = the whole history.
    pub repetition_window: usize,
    /// Repetition-aware sampling window (VALL-E 2); 0 disables RAS.
    pub ras_window: usize,
    /// RAS: resample from the full distribution when `count / ras_window >= ras_threshold`.
    pub ras_threshold: f32,
    /// Guidance scale; used only by [`sample_cfg`] / [`processed_distribution_cfg`].
    pub cfg_scale: Option<f32>,
    pub cfg_formula: CfgFormula,
    /// After guidance (and the mask), keep only this many largest guided logits (Dia: 35).
    pub cfg_top_k: Option<usize>,
    /// Allowed token ids; must have the vocabulary's length.
    pub mask: Option<TokenMask>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: None,
            repetition_window: 0,
            ras_window: 0,
            ras_threshold: 0.1,
            cfg_scale: None,
            cfg_formula: CfgFormula::UncondPlus,
            cfg_top_k: None,
            mask: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every parameter's domain (the vocabulary-dependent mask length is checked when
    /// sampling).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        require(
            t.is_finite() && t >= 0.0,
            "temperature",
            t.into(),
            "finite, >= 0",
        )?;
        check_k("top_k", self.top_k)?;
        check_k("cfg_top_k", self.cfg_top_k)?;
        self.top_p.map_or(Ok(()), check_top_p)?;
        self.min_p.map_or(Ok(()), check_min_p)?;
        self.repetition_penalty.map_or(Ok(()), check_penalty)?;
        self.cfg_scale.map_or(Ok(()), check_cfg_scale)?;
        let r = self.ras_threshold;
        require(
            r.is_finite() && r >= 0.0,
            "ras_threshold",
            r.into(),
            "finite, >= 0",
        )?;
        let any = |m: &TokenMask| m.allowed.iter().any(|&a| a);
        let mask_ok = self.mask.as_ref().is_none_or(any);
        require(mask_ok, "mask", 0.0, "at least one allowed token")
    }

    /// The processors this configuration applies to one row, in order (CFG and RAS excluded:
    /// they need two rows or a second draw). Temperature 0 yields no temperature/filter steps.
    pub fn chain<'a>(&'a self, history: &'a [u32]) -> Vec<LogitsProcessor<'a>> {
        let mut chain = Vec::new();
        if let Some(mask) = &self.mask {
            chain.push(LogitsProcessor::Mask(mask));
        }
        if let Some(penalty) = self.repetition_penalty {
            chain.push(LogitsProcessor::RepetitionPenalty {
                penalty,
                window: self.repetition_window,
                history,
            });
        }
        if self.temperature > 0.0 {
            chain.push(LogitsProcessor::Temperature(self.temperature));
            chain.extend(self.top_k.map(LogitsProcessor::TopK));
            chain.extend(self.top_p.map(LogitsProcessor::TopP));
            chain.extend(self.min_p.map(LogitsProcessor::MinP));
        }
        chain
    }
}

fn check_k(name: &'static str, k: Option<usize>) -> Result<(), SamplingError> {
    require(k != Some(0), name, 0.0, "at least 1")
}

fn check_top_p(p: f32) -> Result<(), SamplingError> {
    require(p > 0.0 && p <= 1.0, "top_p", p.into(), "in (0, 1]")
}

fn check_min_p(p: f32) -> Result<(), SamplingError> {
    require((0.0..=1.0).contains(&p), "min_p", p.into(), "in [0, 1]")
}

fn check_penalty(p: f32) -> Result<(), SamplingError> {
    require(
        p.is_finite() && p > 0.0,
        "repetition_penalty",
        p.into(),
        "finite, > 0",
    )
}

fn check_cfg_scale(s: f32) -> Result<(), SamplingError> {
    require(
        s.is_finite() && s >= 0.0,
        "cfg_scale",
        s.into(),
        "finite, >= 0",
    )
}

/// One logits processor; [`LogitsProcessor::apply`] edits a row in place.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsProcessor<'a> {
    /// Disallowed ids → `-inf`.
    Mask(&'a TokenMask),
    /// CTRL: each distinct id in the last `window` history tokens (0 = all) has its logit divided
    /// by `penalty` when positive, multiplied when negative. Ids outside the row are ignored
    /// (histories may hold input-only specials).
    RepetitionPenalty {
        penalty: f32,
        window: usize,
        history: &'a [u32],
    },
    /// Divide by the temperature (> 0). Computed as `(l − max) / t`, a shift that leaves the
    /// distribution unchanged but cannot overflow for tiny temperatures.
    Temperature(f32),
    TopK(usize),
    TopP(f32),
    MinP(f32),
}

impl LogitsProcessor<'_> {
    pub fn apply(&self, logits: &mut [f32]) -> Result<(), SamplingError> {
        check_logits(logits)?;
        match *self {
            LogitsProcessor::Mask(mask) => apply_mask(logits, mask)?,
            LogitsProcessor::RepetitionPenalty {
                penalty,
                window,
                history,
            } => {
                check_penalty(penalty)?;
                apply_repetition_penalty(logits, history, penalty, window);
            }
            LogitsProcessor::Temperature(t) => {
                require(
                    t.is_finite() && t > 0.0,
                    "temperature",
                    t.into(),
                    "finite, > 0",
                )?;
                apply_temperature(logits, t);
            }
            LogitsProcessor::TopK(k) => {
                check_k("top_k", Some(k))?;
                apply_top_k(logits, k);
            }
            LogitsProcessor::TopP(p) => {
                check_top_p(p)?;
                apply_top_p(logits, p);
            }
            LogitsProcessor::MinP(p) => {
                check_min_p(p)?;
                apply_min_p(logits, p);
            }
        }
        Ok(())
    }
}

fn check_logits(logits: &[f32]) -> Result<(), SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    let bad = |x: &f32| x.is_nan() || *x == f32::INFINITY;
    match logits.iter().position(bad) {
        Some(index) => Err(SamplingError::NonFiniteLogit {
            index,
            value: logits[index],
        }),
        None => Ok(()),
    }
}

fn apply_mask(logits: &mut [f32], mask: &TokenMask) -> Result<(), SamplingError> {
    if mask.allowed.len() != logits.len() {
        return Err(SamplingError::LengthMismatch {
            what: "token mask",
            expected: logits.len(),
            got: mask.allowed.len(),
        });
    }
    for (x, &ok) in logits.iter_mut().zip(&mask.allowed) {
        if !ok {
            *x = f32::NEG_INFINITY;
        }
    }
    Ok(())
}

fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32, window: usize) {
    let recent = match window {
        0 => history,
        w => &history[history.len().saturating_sub(w)..],
    };
    let mut ids = recent.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        if let Some(x) = logits.get_mut(id as usize) {
            *x = if *x > 0.0 { *x / penalty } else { *x * penalty };
        }
    }
}

fn max_logit(logits: &[f32]) -> f32 {
    logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

fn apply_temperature(logits: &mut [f32], t: f32) {
    if t == 1.0 {
        return;
    }
    let m = max_logit(logits);
    if m == f32::NEG_INFINITY {
        return;
    }
    for x in logits.iter_mut() {
        // <= 0, so the cast can only round towards -inf (probability 0), never overflow upwards.
        *x = ((f64::from(*x) - f64::from(m)) / f64::from(t)) as f32;
    }
}

/// Keeps exactly `k` entries (the largest; ties towards lower ids), the rest → `-inf`.
fn apply_top_k(logits: &mut [f32], k: usize) {
    let k = k.max(1);
    if k >= logits.len() {
        return;
    }
    let mut sorted = logits.to_vec();
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    let greater = logits.iter().filter(|x| x.total_cmp(&kth).is_gt()).count();
    let mut ties = k - greater;
    for x in logits.iter_mut() {
        match x.total_cmp(&kth) {
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal if ties > 0 => ties -= 1,
            _ => *x = f32::NEG_INFINITY,
        }
    }
}

/// Unnormalised softmax weights `exp(l − max)` in f64 and their sum; `None` if all `-inf`.
pub fn softmax_weights(logits: &[f32]) -> Option<(Vec<f64>, f64)> {
    let m = max_logit(logits);
    if m == f32::NEG_INFINITY {
        return None;
    }
    let w: Vec<f64> = logits
        .iter()
        .map(|&x| (f64::from(x) - f64::from(m)).exp())
        .collect();
    let sum = w.iter().sum();
    Some((w, sum))
}

fn apply_top_p(logits: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let Some((w, sum)) = softmax_weights(logits) else {
        return;
    };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable sort: equal logits keep the lower id first.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let mut keep = vec![false; logits.len()];
    let mut cum = 0.0;
    for &i in &order {
        keep[i] = true;
        cum += w[i] / sum;
        if cum >= f64::from(p) {
            break;
        }
    }
    for (x, k) in logits.iter_mut().zip(keep) {
        if !k {
            *x = f32::NEG_INFINITY;
        }
    }
}

fn apply_min_p(logits: &mut [f32], p: f32) {
    if p <= 0.0 {
        return;
    }
    let m = f64::from(max_logit(logits));
    for x in logits.iter_mut() {
        // prob / max prob = exp(l − max).
        if (f64::from(*x) - m).exp() < f64::from(p) {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// First index of the maximum (greedy choice); `None` if every entry is `-inf`.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let m = max_logit(logits);
    if m == f32::NEG_INFINITY {
        return None;
    }
    logits.iter().position(|&x| x == m)
}

/// Combines conditional and unconditional logits (`scale` finite, >= 0), then, if `top_k` is
/// given, keeps only the `top_k` largest guided logits (others `-inf`). A token that is `-inf`
/// in either row is `-inf` in the result. The [`sample_cfg`] path applies the token mask between
/// the combination and the top-k (as Dia does); this standalone function has no mask.
pub fn apply_cfg(
    cond: &[f32],
    uncond: &[f32],
    scale: f32,
    formula: CfgFormula,
    top_k: Option<usize>,
) -> Result<Vec<f32>, SamplingError> {
    check_k("cfg_top_k", top_k)?;
    let mut out = cfg_combine(cond, uncond, scale, formula)?;
    if let Some(k) = top_k {
        apply_top_k(&mut out, k);
    }
    Ok(out)
}

fn cfg_combine(
    cond: &[f32],
    uncond: &[f32],
    scale: f32,
    formula: CfgFormula,
) -> Result<Vec<f32>, SamplingError> {
    check_cfg_scale(scale)?;
    if cond.len() != uncond.len() {
        return Err(SamplingError::LengthMismatch {
            what: "unconditional logits",
            expected: cond.len(),
            got: uncond.len(),
        });
    }
    check_logits(cond)?;
    check_logits(uncond)?;
    Ok(cond
        .iter()
        .zip(uncond)
        .map(|(&c, &u)| {
            if c == f32::NEG_INFINITY || u == f32::NEG_INFINITY {
                return f32::NEG_INFINITY;
            }
            let g = match formula {
                CfgFormula::UncondPlus => u + scale * (c - u),
                CfgFormula::CondPlus => c + scale * (c - u),
            };
            // Overflow of huge finite inputs saturates instead of producing ±inf.
            g.clamp(f32::MIN, f32::MAX)
        })
        .collect())
}

/// What the draw needs once the processors have run.
enum Prepared {
    Greedy(usize),
    Sample {
        /// Softmax weights after every filter, with their sum.
        nucleus: (Vec<f64>, f64),
        /// RAS only: weights after temperature, before the filters.
        full: Option<(Vec<f64>, f64)>,
    },
}

/// Runs the chain on `logits` (the already guided row on the CFG path).
fn prepare(
    logits: &mut [f32],
    params: &SamplingParams,
    history: &[u32],
    cfg_top_k: Option<usize>,
) -> Result<Prepared, SamplingError> {
    params.validate()?;
    check_logits(logits)?;
    if let Some(mask) = &params.mask {
        apply_mask(logits, mask)?;
    }
    if let Some(k) = cfg_top_k {
        apply_top_k(logits, k);
    }
    if let Some(penalty) = params.repetition_penalty {
        apply_repetition_penalty(logits, history, penalty, params.repetition_window);
    }
    if params.temperature == 0.0 {
        return argmax(logits)
            .map(Prepared::Greedy)
            .ok_or(SamplingError::AllMasked);
    }
    apply_temperature(logits, params.temperature);
    let full = if params.ras_window > 0 {
        Some(softmax_weights(logits).ok_or(SamplingError::AllMasked)?)
    } else {
        None
    };
    if let Some(k) = params.top_k {
        apply_top_k(logits, k);
    }
    if let Some(p) = params.top_p {
        apply_top_p(logits, p);
    }
    if let Some(p) = params.min_p {
        apply_min_p(logits, p);
    }
    let nucleus = softmax_weights(logits).ok_or(SamplingError::AllMasked)?;
    Ok(Prepared::Sample { nucleus, full })
}

/// Inverse-CDF draw from unnormalised weights with one `next_f64`.
fn draw(weights: &(Vec<f64>, f64), rng: &mut Rng) -> usize {
    let (w, sum) = weights;
    let target = rng.next_f64() * sum;
    let mut cum = 0.0;
    let mut last_positive = 0;
    for (i, &x) in w.iter().enumerate() {
        if x > 0.0 {
            cum += x;
            last_positive = i;
            if cum > target {
                return i;
            }
        }
    }
    // Only reachable through rounding (target within an ulp of the sum).
    last_positive
}

/// RAS trigger: `token`'s share of the last `window` history tokens reaches `threshold`
/// (the denominator is `window` even while the history is shorter, as in VALL-E 2).
fn ras_triggers(token: usize, history: &[u32], window: usize, threshold: f32) -> bool {
    let recent = &history[history.len().saturating_sub(window)..];
    let count = recent.iter().filter(|&&h| h as usize == token).count();
    count as f32 / window as f32 >= threshold
}

fn sample_prepared(
    prepared: Prepared,
    params: &SamplingParams,
    history: &[u32],
    rng: &mut Rng,
) -> u32 {
    let token = match prepared {
        Prepared::Greedy(i) => i,
        Prepared::Sample { nucleus, full } => {
            let token = draw(&nucleus, rng);
            match full {
                Some(full)
                    if ras_triggers(token, history, params.ras_window, params.ras_threshold) =>
                {
                    draw(&full, rng)
                }
                _ => token,
            }
        }
    };
    // Rows longer than u32::MAX entries cannot be built by any caller (vocabularies are u32).
    u32::try_from(token).unwrap_or(u32::MAX)
}

/// Samples one token from `logits` (one stream's row). On return `logits` holds the processed
/// logits (masked, penalised, shifted/scaled, filtered). CFG fields of `params` are ignored here;
/// see [`sample_cfg`].
pub fn sample(
    logits: &mut [f32],
    params: &SamplingParams,
    history: &[u32],
    rng: &mut Rng,
) -> Result<u32, SamplingError> {
    let prepared = prepare(logits, params, history, None)?;
    Ok(sample_prepared(prepared, params, history, rng))
}

/// Guided sampling: combines `cond` and `uncond` with `params.cfg_scale` / `cfg_formula`, masks,
/// keeps `cfg_top_k`, then continues like [`sample`]. With `cfg_scale: None` the unconditional
/// row is ignored and `cond` is sampled as is.
pub fn sample_cfg(
    cond: &[f32],
    uncond: &[f32],
    params: &SamplingParams,
    history: &[u32],
    rng: &mut Rng,
) -> Result<u32, SamplingError> {
    let (mut row, cfg_top_k) = guided_row(cond, uncond, params)?;
    let prepared = prepare(&mut row, params, history, cfg_top_k)?;
    Ok(sample_prepared(prepared, params, history, rng))
}

fn guided_row(
    cond: &[f32],
    uncond: &[f32],
    params: &SamplingParams,
) -> Result<(Vec<f32>, Option<usize>), SamplingError> {
    match params.cfg_scale {
        Some(scale) => Ok((
            cfg_combine(cond, uncond, scale, params.cfg_formula)?,
            params.cfg_top_k,
        )),
        None => Ok((cond.to_vec(), None)),
    }
}

/// The exact distribution [`sample`] draws from (RAS mixture included; one-hot when greedy).
pub fn processed_distribution(
    logits: &[f32],
    params: &SamplingParams,
    history: &[u32],
) -> Result<Vec<f64>, SamplingError> {
    let mut row = logits.to_vec();
    let prepared = prepare(&mut row, params, history, None)?;
    Ok(distribution(prepared, params, history, row.len()))
}

/// The exact distribution [`sample_cfg`] draws from.
pub fn processed_distribution_cfg(
    cond: &[f32],
    uncond: &[f32],
    params: &SamplingParams,
    history: &[u32],
) -> Result<Vec<f64>, SamplingError> {
    let (mut row, cfg_top_k) = guided_row(cond, uncond, params)?;
    let prepared = prepare(&mut row, params, history, cfg_top_k)?;
    Ok(distribution(prepared, params, history, row.len()))
}

fn distribution(
    prepared: Prepared,
    params: &SamplingParams,
    history: &[u32],
    n: usize,
) -> Vec<f64> {
    match prepared {
        Prepared::Greedy(i) => {
            let mut p = vec![0.0; n];
            p[i] = 1.0;
            p
        }
        Prepared::Sample { nucleus, full } => {
            let (w, sum) = nucleus;
            let mut p: Vec<f64> = w.iter().map(|x| x / sum).collect();
            if let Some((fw, fsum)) = full {
                // P(x) = p_n(x)·[x does not trigger] + P(trigger)·p_full(x).
                let mut resample = 0.0;
                for (i, pi) in p.iter_mut().enumerate() {
                    if *pi > 0.0
                        && ras_triggers(i, history, params.ras_window, params.ras_threshold)
                    {
                        resample += *pi;
                        *pi = 0.0;
                    }
                }
                for (pi, f) in p.iter_mut().zip(fw) {
                    *pi += resample * f / fsum;
                }
            }
            p
        }
    }
}
