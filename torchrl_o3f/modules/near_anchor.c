/*
 * Values of many candidate actions near an anchor action, for a ReLU Q ensemble.
 *
 * The CPU kernel behind QEnsemble.candidate_values (loaded by kernel.py; the maths is the
 * torch fallback's, QEnsemble._near_anchor_values). For one member i and one observation b,
 * with z0 the first layer's pre-activation at the anchor, s = -1 where z0 > 0 (else +1),
 * A the first layer's action weights and d_j = candidate_j - anchor:
 *
 *   p_j  = z0 + A^T d_j                     first-layer pre-activation of candidate j
 *   r_j  = relu(s * p_j)                    non-zero only on the units d_j flips
 *   z1_j = [b1 + W1^T relu(z0)] + G^T d_j + W1^T r_j,   G = W1^T diag(z0 > 0) A
 *
 * which is W1^T relu(p_j) + b1 exactly (no unit is dropped). The bracket and G are computed
 * once per (member, observation) over the active units; each candidate then costs the rank-a
 * product G^T d_j, p_j on the few units any candidate can flip (|z0_u| <= ||A_u|| max ||d||,
 * by Cauchy-Schwarz; 10-20% of them around a trained critic's policy action) and one row of
 * W1 per flipped unit, instead of a dense 256 x 256 product.
 * With `w_last` given (two hidden layers) it writes the values
 * b_last + w_last . relu(z1_j) to out[i, j, b] ([m, n, nb]); with w_last NULL it writes
 * z1_j to out[i, b, j, :] ([m, nb, n, h]) for the caller's remaining layers.
 *
 * Layouts (float32, contiguous): w0 [m, d + a, h], b0 [m, h], w1 [m, h, h], b1 [m, h],
 * w_last [m, h], b_last [m], obs [nb, d], anchor [nb, a], cand [n, nb, a]; the input
 * normalisation (x - loc) / scale is applied here. Requires h % 16 == 0, a <= MAX_ACTION,
 * d + a <= MAX_INPUT and `work` of threads * near_anchor_work_floats(a, h) floats. The
 * (member, observation) pairs are shared out over `threads` OpenMP threads (built with
 * -fopenmp; the loader links the OpenMP runtime torch already has loaded, so these are torch's
 * own intra-op threads), each pair computed whole by one thread: the split does not change a
 * bit of the result.
 */
#include <stddef.h>
#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define MAX_ACTION 64
#define MAX_INPUT 512
#define BLOCK 4 /* candidates per pass over the hidden units */

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4))); /* unaligned access */
#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, x) (*(v8u *)(p) = (x))

static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

static inline v8 relu8(v8 x) { return (v8)((v8i)x & (x > 0.f)); }

static inline float sum8(v8 x) {
    return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
}

/* bit l set where lane l is > 0 */
static inline int positive_lanes(v8 x) {
#if defined(__AVX__)
    return _mm256_movemask_ps((__m256)(x > 0.f));
#else
    v8i mask = x > 0.f;
    int bits = 0;
    for (int l = 0; l < 8; ++l) bits |= (mask[l] & 1) << l;
    return bits;
#endif
}

static inline int thread_index(void) {
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int near_anchor_max_action(void) { return MAX_ACTION; }
int near_anchor_max_input(void) { return MAX_INPUT; }

long near_anchor_work_floats(int a, int h) {
    long rows = (a + 1 + 3) & ~3;
    /* z0, s, A, G/base, coefficients, BLOCK z rows, BLOCK flip values, BLOCK + 1 int rows,
       and the live units: z0, s, A (a rows) and their indices, each padded by 8 */
    return (long)h * (2 + a + 2 * rows + 2 * BLOCK + BLOCK + 1) + (long)(h + 8) * (a + 3);
}

static void score_pair(int i, int b, int nb, int n, int d, int a, int h, const float *w0,
                       const float *b0, const float *w1, const float *b1, const float *w_last,
                       const float *b_last, const float *obs_loc, const float *obs_scale,
                       const float *act_loc, const float *act_scale, const float *obs,
                       const float *anchor, const float *cand, float *out, float *work) {
    const int rows = (a + 1 + 3) & ~3; /* base + a rows of G, padded to a multiple of 4 */
    float *z0 = work;                          /* [h] */
    float *s = z0 + h;                         /* [h] */
    float *A = s + h;                          /* [a, h], per unit of the raw action */
    float *G = A + (size_t)a * h;              /* [rows, h]: row 0 the base, rows 1.. G */
    float *coef = G + (size_t)rows * h;        /* [active, rows] */
    float *z = coef + (size_t)rows * h;        /* [BLOCK, h] */
    float *flip_r = z + (size_t)BLOCK * h;     /* [BLOCK, h] */
    int *flip_u = (int *)(flip_r + (size_t)BLOCK * h); /* [BLOCK, h] */
    int *active = flip_u + (size_t)BLOCK * h;  /* [h] */
    const int hp = h + 8;
    float *live_z0 = (float *)(active + h);    /* [hp] */
    float *live_s = live_z0 + hp;              /* [hp] */
    float *live_A = live_s + hp;               /* [a, hp] */
    int *live_u = (int *)(live_A + (size_t)a * hp); /* [hp] */
    float x[MAX_INPUT];
    v8 dv[MAX_ACTION * BLOCK];

    const float *W0 = w0 + (size_t)i * (d + a) * h;
    const float *W1 = w1 + (size_t)i * h * h;
    const float *anc = anchor + (size_t)b * a;

    /* first layer at the anchor, and A scaled to raw action units */
    for (int k = 0; k < d; ++k) x[k] = (obs[(size_t)b * d + k] - obs_loc[k]) / obs_scale[k];
    for (int c = 0; c < a; ++c) x[d + c] = (anc[c] - act_loc[c]) / act_scale[c];
    for (int v = 0; v < h; v += 8) {
        v8 acc = LOAD(b0 + (size_t)i * h + v);
        for (int k = 0; k < d + a; ++k) acc += splat(x[k]) * LOAD(W0 + (size_t)k * h + v);
        STORE(z0 + v, acc);
    }
    for (int c = 0; c < a; ++c) {
        const v8 inv = splat(1.0f / act_scale[c]);
        for (int v = 0; v < h; v += 8)
            STORE(A + (size_t)c * h + v, LOAD(W0 + (size_t)(d + c) * h + v) * inv);
    }

    /* base = b1 + W1^T relu(z0) and G = W1^T diag(z0 > 0) A, over the active units */
    int num_active = 0;
    for (int u = 0; u < h; ++u) {
        const int on = z0[u] > 0.f;
        s[u] = on ? -1.f : 1.f;
        if (!on) continue;
        float *cf = coef + (size_t)num_active * rows;
        cf[0] = z0[u];
        for (int c = 0; c < a; ++c) cf[1 + c] = A[(size_t)c * h + u];
        for (int r = a + 1; r < rows; ++r) cf[r] = 0.f;
        active[num_active++] = u;
    }
    /* 8 independent accumulators (4 rows x 2 blocks of 8 units) hide the FMA latency */
    for (int r = 0; r < rows; r += 4) {
        for (int v = 0; v < h; v += 16) {
            v8 g[8];
            for (int e = 0; e < 8; ++e) g[e] = splat(0.f);
            if (r == 0) {
                g[0] = LOAD(b1 + (size_t)i * h + v);
                g[4] = LOAD(b1 + (size_t)i * h + v + 8);
            }
            for (int t = 0; t < num_active; ++t) {
                const float *row = W1 + (size_t)active[t] * h + v;
                const v8 wa = LOAD(row), wb = LOAD(row + 8);
                const float *cf = coef + (size_t)t * rows + r;
                for (int e = 0; e < 4; ++e) {
                    const v8 c = splat(cf[e]);
                    g[e] += c * wa;
                    g[4 + e] += c * wb;
                }
            }
            for (int e = 0; e < 4; ++e) {
                STORE(G + (size_t)(r + e) * h + v, g[e]);
                STORE(G + (size_t)(r + e) * h + v + 8, g[4 + e]);
            }
        }
    }

    /* the units any candidate can flip: |A_u . d| <= ||A_u|| ||d||, so a unit with
       |z0_u| > ||A_u|| max_j ||d_j|| keeps its sign for every candidate (a relative margin of
       1e-4 covers the rounding of p); the others ("live"), in unit order, padded to 8 with
       units that never flip */
    float dmax2 = 0.f;
    for (int j = 0; j < n; ++j) {
        const float *cj = cand + ((size_t)j * nb + b) * a;
        float d2 = 0.f;
        for (int c = 0; c < a; ++c) d2 += (cj[c] - anc[c]) * (cj[c] - anc[c]);
        dmax2 = d2 > dmax2 ? d2 : dmax2;
    }
    const float reach2 = dmax2 * (1.0f + 1e-4f) * (1.0f + 1e-4f);
    int num_live = 0;
    for (int u = 0; u < h; ++u) {
        float a2 = 0.f;
        for (int c = 0; c < a; ++c) a2 += A[(size_t)c * h + u] * A[(size_t)c * h + u];
        if (z0[u] * z0[u] > a2 * reach2) continue;
        live_z0[num_live] = z0[u];
        live_s[num_live] = s[u];
        for (int c = 0; c < a; ++c) live_A[(size_t)c * hp + num_live] = A[(size_t)c * h + u];
        live_u[num_live++] = u;
    }
    const int live_blocks = (num_live + 7) & ~7;
    for (int l = num_live; l < live_blocks; ++l) {
        live_z0[l] = 1.f;
        live_s[l] = -1.f;
        for (int c = 0; c < a; ++c) live_A[(size_t)c * hp + l] = 0.f;
        live_u[l] = 0;
    }

    /* candidates, BLOCK at a time: the rank-a parts and the flipped units */
    for (int j0 = 0; j0 < n; j0 += BLOCK) {
        const int count = n - j0 < BLOCK ? n - j0 : BLOCK;
        for (int k = 0; k < BLOCK; ++k) {
            const float *cj = cand + ((size_t)(j0 + (k < count ? k : 0)) * nb + b) * a;
            for (int c = 0; c < a; ++c) dv[c * BLOCK + k] = splat(cj[c] - anc[c]);
        }
        for (int v = 0; v < h; v += 16) { /* two blocks of 8: 8 independent accumulators */
            const v8 base = LOAD(G + v), base2 = LOAD(G + v + 8);
            v8 q[BLOCK] = {base, base, base, base}, q2[BLOCK] = {base2, base2, base2, base2};
            for (int c = 0; c < a; ++c) {
                const v8 gv = LOAD(G + (size_t)(c + 1) * h + v);
                const v8 gv2 = LOAD(G + (size_t)(c + 1) * h + v + 8);
                const v8 *dc = dv + c * BLOCK;
                for (int k = 0; k < BLOCK; ++k) {
                    q[k] += dc[k] * gv;
                    q2[k] += dc[k] * gv2;
                }
            }
            for (int k = 0; k < BLOCK; ++k) {
                STORE(z + (size_t)k * h + v, q[k]);
                STORE(z + (size_t)k * h + v + 8, q2[k]);
            }
        }
        int flips[BLOCK] = {0};
        for (int v = 0; v < live_blocks; v += 8) {
            const v8 zv = LOAD(live_z0 + v);
            v8 p[BLOCK] = {zv, zv, zv, zv};
            for (int c = 0; c < a; ++c) {
                const v8 av = LOAD(live_A + (size_t)c * hp + v);
                const v8 *dc = dv + c * BLOCK;
                for (int k = 0; k < BLOCK; ++k) p[k] += dc[k] * av;
            }
            const v8 sv = LOAD(live_s + v);
            for (int k = 0; k < BLOCK; ++k) {
                const v8 r = p[k] * sv;
                for (int bits = positive_lanes(r); bits; bits &= bits - 1) {
                    const int l = __builtin_ctz(bits);
                    flip_u[k * h + flips[k]] = live_u[v + l];
                    flip_r[k * h + flips[k]++] = r[l];
                }
            }
        }
        for (int k = 0; k < count; ++k) {
            float *zk = z + (size_t)k * h;
            const int *fu = flip_u + k * h;
            const float *fr = flip_r + k * h;
            const int j = j0 + k;
            for (int t = 0; t < flips[k]; ++t) {
                const float *row = W1 + (size_t)fu[t] * h;
                const v8 rt = splat(fr[t]);
                for (int v = 0; v < h; v += 8) STORE(zk + v, LOAD(zk + v) + rt * LOAD(row + v));
            }
            if (w_last) {
                const float *wl = w_last + (size_t)i * h;
                v8 acc0 = splat(0.f), acc1 = splat(0.f);
                for (int v = 0; v < h; v += 16) {
                    acc0 += relu8(LOAD(zk + v)) * LOAD(wl + v);
                    acc1 += relu8(LOAD(zk + v + 8)) * LOAD(wl + v + 8);
                }
                out[((size_t)i * n + j) * nb + b] = sum8(acc0 + acc1) + b_last[i];
            } else {
                float *dst = out + (((size_t)i * nb + b) * n + j) * h;
                for (int v = 0; v < h; v += 8) STORE(dst + v, LOAD(zk + v));
            }
        }
    }
}

void near_anchor(int m, int nb, int n, int d, int a, int h, int threads, const float *w0,
                 const float *b0, const float *w1, const float *b1, const float *w_last,
                 const float *b_last, const float *obs_loc, const float *obs_scale,
                 const float *act_loc, const float *act_scale, const float *obs,
                 const float *anchor, const float *cand, float *out, float *work) {
    const long work_floats = near_anchor_work_floats(a, h);
    const int pairs = m * nb;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (int pair = 0; pair < pairs; ++pair) {
        float *own = work + (size_t)thread_index() * work_floats;
        score_pair(pair / nb, pair % nb, nb, n, d, a, h, w0, b0, w1, b1, w_last, b_last, obs_loc,
                   obs_scale, act_loc, act_scale, obs, anchor, cand, out, own);
    }
    (void)threads;
}

int near_anchor_parallel(void) {
#if defined(_OPENMP)
    return 1;
#else
    return 0;
#endif
}
