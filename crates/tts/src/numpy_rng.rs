//! NumPy's default generator, `numpy.random.default_rng(seed).random()`: `SeedSequence` entropy
//! mixing, then PCG64 (XSL-RR 128/64), then doubles from the top 53 bits. The aligned layout
//! draws its text timing and the end of speech from it, so a sentence synthesized here gets the
//! same draws as the pipeline's documented reference (`numpy`'s algorithms, re-implemented from
//! their published description: O'Neill 2014 for PCG, NumPy NEP 19 for `SeedSequence`).

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;
const PCG_MULTIPLIER: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341;

/// `SeedSequence(seed)` for a non-negative integer seed: its entropy pool.
fn seed_pool(seed: u64) -> [u32; POOL_SIZE] {
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![seed as u32, (seed >> 32) as u32]
    };
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| -> u32 {
        let mut value = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        value = value.wrapping_mul(hash_const);
        value ^ (value >> XSHIFT)
    };
    let mix = |x: u32, y: u32| -> u32 {
        let r = MIX_MULT_L
            .wrapping_mul(x)
            .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        r ^ (r >> XSHIFT)
    };
    let mut pool = [0u32; POOL_SIZE];
    for (i, cell) in pool.iter_mut().enumerate() {
        *cell = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let hashed = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], hashed);
            }
        }
    }
    pool
}

/// `SeedSequence.generate_state(n, uint64)`.
fn generate_state(pool: &[u32; POOL_SIZE], n: usize) -> Vec<u64> {
    let mut hash_const = INIT_B;
    let words: Vec<u32> = (0..2 * n)
        .map(|i| {
            let mut value = pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        })
        .collect();
    words
        .chunks(2)
        .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
        .collect()
}

/// PCG64 as `numpy.random.PCG64(seed)` seeds it.
#[derive(Debug, Clone)]
pub struct NumpyRng {
    state: u128,
    inc: u128,
}

impl NumpyRng {
    pub fn new(seed: u64) -> Self {
        let words = generate_state(&seed_pool(seed), 4);
        let initstate = (u128::from(words[0]) << 64) | u128::from(words[1]);
        let initseq = (u128::from(words[2]) << 64) | u128::from(words[3]);
        let mut rng = Self {
            state: 0,
            inc: (initseq << 1) | 1,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.inc);
    }

    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let xored = ((self.state >> 64) as u64) ^ (self.state as u64);
        xored.rotate_right((self.state >> 122) as u32)
    }

    /// `Generator.random()`: uniform in [0, 1).
    pub fn random(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}

#[cfg(test)]
mod tests {
    use super::NumpyRng;

    /// `numpy.random.default_rng(seed).random(3)` and `PCG64(seed).random_raw()`, NumPy 2.x.
    #[test]
    fn equals_numpy_default_rng() {
        let cases: [(u64, [f64; 3], u64); 6] = [
            (
                0,
                [0.6369616873214543, 0.2697867137638703, 0.04097352393619469],
                0xa30febcfd9c2825f,
            ),
            (
                1,
                [0.5118216247002567, 0.9504636963259353, 0.14415961271963373],
                0x8306bdf37922e4ff,
            ),
            (
                7,
                [0.625095466604667, 0.8972138009695755, 0.7756856902451935],
                0xa00641a9f1e54a8b,
            ),
            (
                12345,
                [0.22733602246716966, 0.31675833970975287, 0.7973654573327341],
                0x3a32b18db2ffc19d,
            ),
            (
                (1 << 32) + 5,
                [0.7742041803738812, 0.47072268318809307, 0.6958803443421149],
                0xc6323ec321deb8d1,
            ),
            (
                (1 << 63) + 11,
                [0.16991639149909477, 0.8076749552117773, 0.2637029316124607],
                0x2b7fa4008afe6810,
            ),
        ];
        for (seed, doubles, raw) in cases {
            let mut rng = NumpyRng::new(seed);
            for want in doubles {
                assert_eq!(rng.random(), want, "seed {seed}");
            }
            assert_eq!(NumpyRng::new(seed).next_u64(), raw, "seed {seed}");
        }
    }
}
