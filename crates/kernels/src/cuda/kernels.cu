// The decoding step on the GPU. Each kernel mirrors the function of the same name in
// src/reference.rs (layouts, index arithmetic, summation order where it matters); compiled at
// run time by NVRTC, so the build needs no CUDA toolkit.
//
// Layouts (row-major): x, normed [B, d]; qkv [B, (h + 2 hkv) hd]; attn [B, h hd];
// gate_up [B, 2f]; act [B, f]; logits [B, ΣV]; caches [B, hkv, capacity, hd]; pos [B].

#define MAX_ROWS 8
#define NEG_INF __int_as_float(0xff800000)

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Block-wide sum / max through shared memory; every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < warps; i++) total += scratch[i];
    return total;
}

__device__ float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = NEG_INF;
    for (int i = 0; i < warps; i++) m = fmaxf(m, scratch[i]);
    return m;
}

extern "C" __global__ void embed_sum(float* x, const float* emb, const long long* ids,
                                     const int* offsets, int k_n, int d) {
    int b = blockIdx.x;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < k_n; k++) {
            long long id = ids[b * k_n + k];
            if (id >= 0) acc += emb[((long long)offsets[k] + id) * d + i];
        }
        x[(long long)b * d + i] = acc;
    }
}

extern "C" __global__ void rms_norm(float* out, const float* x, const float* w, int d, float eps) {
    __shared__ float scratch[32];
    const float* row = x + (long long)blockIdx.x * d;
    float sum2 = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum2 += row[i] * row[i];
    float m = sqrtf(block_sum(sum2, scratch) / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        out[(long long)blockIdx.x * d + i] = row[i] / m * w[i];
}

// out[r, j] = residual[r, j] (if has_residual) + Σ_i x[r, i] w[j, i], rows <= MAX_ROWS.
// One warp per output j streams weight row j once for all rows. out may alias residual.
extern "C" __global__ void matmul_xwt(float* out, const float* x, const float* w,
                                      const float* residual, int has_residual, int rows, int n,
                                      int k) {
    int warps = blockDim.x >> 5;
    int j = blockIdx.x * warps + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (j >= n) return;
    float acc[MAX_ROWS];
    for (int r = 0; r < MAX_ROWS; r++) acc[r] = 0.0f;
    const float* wj = w + (long long)j * k;
    for (int i = lane; i < k; i += 32) {
        float wv = wj[i];
        for (int r = 0; r < MAX_ROWS; r++)
            if (r < rows) acc[r] += x[(long long)r * k + i] * wv;
    }
    for (int r = 0; r < rows; r++) {
        float s = warp_sum(acc[r]);
        if (lane == 0) {
            long long at = (long long)r * n + j;
            out[at] = has_residual ? residual[at] + s : s;
        }
    }
}

// Rotate-half RoPE of the q and k heads of row b at pos[b], then k and v into the caches.
extern "C" __global__ void rope_kv_write(float* qkv, float* k_cache, float* v_cache,
                                         const int* pos, const float* cos_table,
                                         const float* sin_table, int h, int hkv, int hd,
                                         int capacity) {
    int b = blockIdx.x, half = hd / 2, p = pos[b];
    int qkv_dim = (h + 2 * hkv) * hd;
    float* row = qkv + (long long)b * qkv_dim;
    const float* c = cos_table + (long long)p * half;
    const float* s = sin_table + (long long)p * half;
    for (int t = threadIdx.x; t < (h + hkv) * half; t += blockDim.x) {
        int head = t / half, j = t % half;
        float* v = row + head * hd;
        float a = v[j], bb = v[j + half];
        v[j] = a * c[j] - bb * s[j];
        v[j + half] = bb * c[j] + a * s[j];
    }
    __syncthreads();
    for (int t = threadIdx.x; t < hkv * hd; t += blockDim.x) {
        int kv_head = t / hd, i = t % hd;
        long long at = (((long long)b * hkv + kv_head) * capacity + p) * hd + i;
        k_cache[at] = row[h * hd + t];
        v_cache[at] = row[(h + hkv) * hd + t];
    }
}

// One query head (blockIdx.x) of row b (blockIdx.y) over positions 0..=pos[b]; dynamic shared
// memory holds the capacity's scores.
extern "C" __global__ void attend_one(float* out, const float* qkv, const float* k_cache,
                                      const float* v_cache, const int* pos, int h, int hkv,
                                      int hd, int capacity, float scale) {
    extern __shared__ float scores[];
    __shared__ float scratch[32];
    int head = blockIdx.x, b = blockIdx.y, len = pos[b] + 1;
    int kv_head = head / (h / hkv);
    const float* q = qkv + (long long)b * (h + 2 * hkv) * hd + head * hd;
    long long base = ((long long)b * hkv + kv_head) * capacity * hd;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float* kj = k_cache + base + (long long)j * hd;
        float dot = 0.0f;
        for (int i = 0; i < hd; i++) dot += q[i] * kj[i];
        scores[j] = dot * scale;
    }
    __syncthreads();
    float m = NEG_INF;
    for (int j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, scores[j]);
    m = block_max(m, scratch);
    float part = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float e = expf(scores[j] - m);
        scores[j] = e;
        part += e;
    }
    float sum = block_sum(part, scratch);
    __syncthreads();
    float* o = out + (long long)b * h * hd + head * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < len; j++) acc += scores[j] / sum * v_cache[base + (long long)j * hd + i];
        o[i] = acc;
    }
}

extern "C" __global__ void silu_mul(float* out, const float* gate_up, int f, int rows) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)f * rows) return;
    long long r = t / f, j = t % f;
    float g = gate_up[r * 2 * f + j];
    out[t] = g / (1.0f + expf(-g)) * gate_up[r * 2 * f + f + j];
}

extern "C" __global__ void advance_positions(int* pos, int rows) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < rows) pos[b] += 1;
}

// After a sampled step (one block): the tokens become the next step's ids and row *count of the
// history [steps, n]; then *count advances, so replays of a captured graph fill the next row.
extern "C" __global__ void feed_back(long long* ids, const long long* tokens, long long* history,
                                     int* count, int n) {
    int c = *count;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        long long t = tokens[i];
        ids[i] = t;
        history[(long long)c * n + i] = t;
    }
    __syncthreads();
    if (threadIdx.x == 0) *count = c + 1;
}

// ---- sampling (mirrors speechinfer_core::sampling for mask, temperature, top-k) ----

__device__ unsigned long long rotl(unsigned long long x, int k) { return (x << k) | (x >> (64 - k)); }

// xoshiro256** (speechinfer_core::rng::Rng::next_u64).
__device__ unsigned long long xoshiro_next(unsigned long long* s) {
    unsigned long long result = rotl(s[1] * 5ull, 7) * 9ull;
    unsigned long long t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

// f32::total_cmp's order as a signed integer.
__device__ int total_order(float x) {
    int bits = __float_as_int(x);
    return bits ^ (int)(((unsigned int)(bits >> 31)) >> 1);
}

#define SAMPLE_THREADS 1024

// One block per sequence; streams in order, each: mask -> greedy argmax (temperature 0, no
// random number) or temperature -> top-k (exactly k, ties to the lower id) -> f64 softmax
// weights -> one inverse-CDF draw. Processed logits are left in place; token -1 = all masked.
// Dynamic shared memory: the largest vocabulary's floats.
// __launch_bounds__: 1024 threads leave 64 registers each; without the bound the f64 code may
// take more and the launch would fail.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_tokens(long long* tokens, float* logits, const int* vocab,
                                         const int* offsets, int k_n, int total,
                                         unsigned long long* rng_state,
                                         const float* temperature, const int* top_k,
                                         const unsigned char* allowed) {
    extern __shared__ float row_s[];
    __shared__ float scratch[32];
    __shared__ double chunk_sum[SAMPLE_THREADS];
    __shared__ double target_s;
    __shared__ int found_s;
    int b = blockIdx.x, tid = threadIdx.x;
    for (int k = 0; k < k_n; k++) {
        int v = vocab[k];
        float* row = logits + (long long)b * total + offsets[k];
        for (int i = tid; i < v; i += blockDim.x) {
            float x = row[i];
            if (!allowed[offsets[k] + i]) x = NEG_INF;
            row_s[i] = x;
        }
        __syncthreads();
        float t = temperature[k];
        float m = NEG_INF;
        for (int i = tid; i < v; i += blockDim.x) m = fmaxf(m, row_s[i]);
        m = block_max(m, scratch);
        if (m == NEG_INF) {
            if (tid == 0) tokens[b * k_n + k] = -1;
            __syncthreads();
            continue;
        }
        if (t == 0.0f) {
            if (tid == 0) found_s = v;
            __syncthreads();
            for (int i = tid; i < v; i += blockDim.x)
                if (row_s[i] == m) atomicMin(&found_s, i);
            __syncthreads();
            if (tid == 0) tokens[b * k_n + k] = found_s;
        } else {
            if (t != 1.0f)
                for (int i = tid; i < v; i += blockDim.x)
                    row_s[i] = (float)(((double)row_s[i] - (double)m) / (double)t);
            __syncthreads();
            int kk = top_k[k];
            if (kk > 0 && kk < v) {
                // rank = larger entries + equal entries at lower ids; keep rank < k.
                for (int i = tid; i < v; i += blockDim.x) {
                    int oi = total_order(row_s[i]), rank = 0;
                    for (int j = 0; j < v; j++) {
                        int oj = total_order(row_s[j]);
                        rank += (oj > oi) || (oj == oi && j < i);
                    }
                    // Into the global row: every thread still reads row_s.
                    row[i] = rank >= kk ? NEG_INF : row_s[i];
                }
                __syncthreads();
                for (int i = tid; i < v; i += blockDim.x) row_s[i] = row[i];
                __syncthreads();
            }
            float m2 = NEG_INF;
            for (int i = tid; i < v; i += blockDim.x) m2 = fmaxf(m2, row_s[i]);
            m2 = block_max(m2, scratch);
            int chunk = (v + blockDim.x - 1) / blockDim.x;
            int lo = min(tid * chunk, v), hi = min(lo + chunk, v);
            double part = 0.0;
            for (int i = lo; i < hi; i++) part += exp((double)row_s[i] - (double)m2);
            chunk_sum[tid] = part;
            __syncthreads();
            if (tid == 0) {
                double acc = 0.0;
                for (int i = 0; i < blockDim.x; i++) {
                    double c = chunk_sum[i];
                    chunk_sum[i] = acc;
                    acc += c;
                }
                unsigned long long bits = xoshiro_next(rng_state + 4 * b);
                target_s = (double)(bits >> 11) * (1.0 / 9007199254740992.0) * acc;
                found_s = v;
            }
            __syncthreads();
            double cum = chunk_sum[tid];
            int last_positive = -1;
            for (int i = lo; i < hi; i++) {
                double w = exp((double)row_s[i] - (double)m2);
                if (w > 0.0) {
                    cum += w;
                    last_positive = i;
                    if (cum > target_s) {
                        atomicMin(&found_s, i);
                        break;
                    }
                }
            }
            __syncthreads();
            // Only through rounding (target within an ulp of the sum): the last positive id.
            bool none = found_s == v;
            __syncthreads();
            if (none) {
                if (tid == 0) found_s = -1;
                __syncthreads();
                if (last_positive >= 0) atomicMax(&found_s, last_positive);
                __syncthreads();
            }
            if (tid == 0) tokens[b * k_n + k] = found_s;
        }
        for (int i = tid; i < v; i += blockDim.x) row[i] = row_s[i];
        __syncthreads();
    }
}
