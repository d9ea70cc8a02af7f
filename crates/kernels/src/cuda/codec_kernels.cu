// The codec decode on the GPU. Each kernel mirrors the function of the same name in
// src/codec/reference.rs (layouts, index arithmetic, summation order); compiled at run time by
// NVRTC. Activations are [B, C, T] row-major; one thread per output value, blockIdx.y the
// channel and blockIdx.z the batch item, so a block's threads share every weight they read
// (one broadcast load) and read the input coalesced.

// latent[b, d, f] = sum over i < q of codebooks[i, codes[b, i, f], d], in codebook order.
extern "C" __global__ void rvq_sum(float* latent, const float* codebooks, const long long* codes,
                                   int q, int size, int dim, int frames) {
    int f = blockIdx.x * blockDim.x + threadIdx.x, d = blockIdx.y, b = blockIdx.z;
    if (f >= frames) return;
    float acc = 0.0f;
    for (int i = 0; i < q; i++) {
        long long code = codes[((long long)b * q + i) * frames + f];
        acc += codebooks[((long long)i * size + code) * dim + d];
    }
    latent[((long long)b * dim + d) * frames + f] = acc;
}

extern "C" __global__ void elu_copy(float* out, const float* x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    out[i] = v > 0.0f ? v : expm1f(v);
}

// Causal conv: input index o * stride + j * dilation - context, zeros before 0; w [cout, cin, k].
// out must not alias x or residual.
extern "C" __global__ void conv1d_causal(float* out, const float* x, const float* w,
                                         const float* bias, const float* residual,
                                         int has_residual, int cin, int cout, int k, int stride,
                                         int dilation, int context, int t_in, int t_out) {
    int o = blockIdx.x * blockDim.x + threadIdx.x, co = blockIdx.y, b = blockIdx.z;
    if (o >= t_out) return;
    const float* xb = x + (long long)b * cin * t_in;
    const float* wc = w + (long long)co * cin * k;
    int first = o * stride - context;
    float acc = 0.0f;
    for (int ci = 0; ci < cin; ci++) {
        const float* xs = xb + (long long)ci * t_in;
        const float* ws = wc + ci * k;
        for (int j = 0; j < k; j++) {
            int i = first + j * dilation;
            if (i >= 0) acc += xs[i] * ws[j];
        }
    }
    long long at = ((long long)b * cout + co) * t_out + o;
    float y = acc + bias[co];
    out[at] = has_residual ? residual[at] + y : y;
}

// Causal transposed conv, the first t_in * stride outputs: taps j = o mod stride, + stride, ...
// up to min(k - 1, o), each reading input frame (o - j) / stride; w [cin, cout, k].
extern "C" __global__ void conv_transpose1d_causal(float* out, const float* x, const float* w,
                                                   const float* bias, int cin, int cout, int k,
                                                   int stride, int t_in) {
    int t_out = t_in * stride;
    int o = blockIdx.x * blockDim.x + threadIdx.x, co = blockIdx.y, b = blockIdx.z;
    if (o >= t_out) return;
    const float* xb = x + (long long)b * cin * t_in;
    int last = min(k - 1, o);
    float acc = 0.0f;
    for (int ci = 0; ci < cin; ci++) {
        const float* xs = xb + (long long)ci * t_in;
        const float* ws = w + ((long long)ci * cout + co) * k;
        for (int j = o % stride; j <= last; j += stride) acc += xs[(o - j) / stride] * ws[j];
    }
    out[((long long)b * cout + co) * t_out + o] = acc + bias[co];
}
