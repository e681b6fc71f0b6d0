/* remed_planner native decode: weight-only block-quantised Llama forward pass for AVX2 CPUs
 * (with VNNI's integer dot where the CPU has it).
 *
 * Why: fp32 decode of SmolLM2-135M reads 540 MB of weights per token and this host streams
 * ~10 GB/s, so it tops out near 20 tok/s. Reading 4-bit weights (about 0.6 byte per weight)
 * instead moves the limit past 100 tok/s. torch's int8/int4 CPU kernels were slower than fp32
 * here, so this is a small plain-C kernel in the style of ggml's Q4_1 x Q8 and Q8_0 x Q8 dots.
 *
 * Formats (blocks of QK = 32 weights along a row; scales are IEEE fp16):
 *   Q8_0: w = d * q,       q int8 in [-127, 127]; one d per block.
 *   Q4_1: w = d * q + m,   q in [0, 15]; one d and one m per block.
 * Both are stored sixteen rows at a time ("row groups"; the last group is padded with zero
 * rows): for each group and block, the weights as eight 64-byte chunks, where byte 4r + j of
 * chunk c is row r's weight 4c + j of the block (Q4_1 packs chunks c and c + 4 into the low and
 * high nibbles of one); the group's d (and m, and Q8_0's wsum) are kept per block in row order.
 * Activations are quantised per block of 32 to int8 (scale a = max|x| / 127) before each
 * matmul, so the inner product is integer with one float FMA per block and vector of rows: one
 * maddubs (one vpdpbusd with VNNI) multiplies four weights of each row in a vector (8 rows in
 * 256 bits, 16 in 512) by the same four broadcast activations, so the rows' sums come out in
 * the lanes of one vector (see dot_rows_q4). The Q4_1 offset contributes m * a * sum(xq) per
 * block. Keys and values are cached in fp16.
 *
 * rp_forward runs the whole model for T tokens in one call: each token has a KV-cache slot and
 * a position, and attends to positions 0..pos of its slot, so one call serves a prefill (T
 * tokens of one slot) and a continuous-batching decode step (one token for each of T slots)
 * alike. Row groups are the outer loop of every matmul, so a step of 8 requests reads each
 * weight block once.
 *
 * Threads: the calling thread does every phase itself; helper threads (threads - 1 of them)
 * take chunks of a phase's rows when they get a core. Completion is counted per chunk, not per
 * thread, so a helper the OS has not scheduled (this host's cores are shared) never holds a
 * step up: a barrier-based pool (OpenMP) waited a whole time slice for it at each of the ~150
 * barriers of a step, which made 2 threads slower than 1 under load.
 *
 * Build: gcc -O3 -mavx2 -mfma -mf16c -pthread -shared -fPIC, plus the VNNI (and AVX-512) flags
 * where the CPU has them (see build.py, DPBUSD and VROWS below).
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QK 32
#define GROUP 16 /* weight rows stored together, in both formats (see the header) */
#define ROW_TILE 8 /* activation rows that share one pass over a row group */

enum { RP_Q8_0 = 1, RP_Q4_1 = 2 };

/* VNNI: one vpdpbusd multiplies u8 x s8 pairs and adds each four into an int32 lane, which on
 * AVX2 takes maddubs, int16 adds and a widening madd. Both compute the same integer sums (no
 * path saturates: see the dots), so the builds' results are identical and only speed differs.
 * The AVX-512 build also gets 32 vector registers, and its dots 512-bit vectors (VROWS). */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define RP_ISA "avx512vnni"
#define RP_512 1
#define DPBUSD(acc, u, s) _mm512_dpbusd_epi32((acc), (u), (s))
#elif defined(__AVXVNNI__)
#define RP_ISA "avxvnni"
#define DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#else
#define RP_ISA "avx2"
#endif

/* The dots' vectors: with AVX-512 one 512-bit vector holds a whole row group's 16 lanes, so a
 * vpdpbusd does 64 multiplies; this host runs as many of those a cycle as of the 256-bit form
 * (measured: 6.3 vs 6.8 G/s on one core), so a step of 8 requests does its integer work in half
 * the instructions. Elsewhere a row group is two 256-bit halves of 8 lanes, done one after the
 * other. Either way each row's sums are the same integers, added in the same order. */
#ifdef RP_512
#define VROWS 16
typedef __m512i vint;
typedef __m512 vflt;
#define v_load(p) _mm512_loadu_si512((const void *)(p))
#define v_and _mm512_and_si512
#define v_srli _mm512_srli_epi32
#define v_set1_8 _mm512_set1_epi8
#define v_set1_32 _mm512_set1_epi32
#define v_zero_i _mm512_setzero_si512
#define v_zero_f _mm512_setzero_ps
#define v_fp16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p))) /* VROWS halves */
#define v_bcast(p) _mm512_set1_ps(*(p))
#define v_mul _mm512_mul_ps
#define v_fma _mm512_fmadd_ps
#define v_cvt _mm512_cvtepi32_ps
#define v_store _mm512_storeu_ps
#else
#define VROWS 8
typedef __m256i vint;
typedef __m256 vflt;
#define v_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define v_and _mm256_and_si256
#define v_srli _mm256_srli_epi32
#define v_set1_8 _mm256_set1_epi8
#define v_set1_32 _mm256_set1_epi32
#define v_zero_i _mm256_setzero_si256
#define v_zero_f _mm256_setzero_ps
#define v_fp16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define v_bcast(p) _mm256_broadcast_ss(p)
#define v_mul _mm256_mul_ps
#define v_fma _mm256_fmadd_ps
#define v_cvt _mm256_cvtepi32_ps
#define v_store _mm256_storeu_ps
#endif
#define CHUNK (4 * GROUP) /* bytes of one chunk: four weights of each row of a group */

/* Which build this is, for the model's log and the benchmarks. */
const char *rp_isa(void) { return RP_ISA; }

typedef struct {
    int32_t type;
    int32_t rows, cols;
    const void *q;     /* Q8_0: int8 [groups * GROUP * cols]; Q4_1: uint8 [groups * GROUP * cols / 2] */
    const uint16_t *d; /* fp16 [groups * GROUP * cols / QK] */
    const uint16_t *m; /* fp16 [groups * GROUP * cols / QK], Q4_1 only */
    const int32_t *wsum; /* [groups * GROUP * cols / QK], Q8_0 only: -128 * the block's sum (VNNI) */
} rp_matrix;

typedef struct {
    int32_t layers, hidden, heads, kv_heads, head_dim, inter, vocab;
    int32_t slots, capacity, threads;
    float eps;
    const float *cos, *sin;          /* [max_positions, head_dim] */
    const float *norm1, *norm2;      /* [layers, hidden] */
    const float *final_norm;         /* [hidden] */
    const rp_matrix *qkv, *o, *gate_up, *down; /* [layers] each */
    const rp_matrix *embed, *lm_head;
    uint16_t *k_cache, *v_cache;     /* fp16 [layers, slots, kv_heads, capacity, head_dim] */
} rp_model;

/* Activations of T rows quantised per block. */
typedef struct {
    int8_t *q;  /* [T, K] */
    uint8_t *u; /* [T, K] q + 128, the unsigned operand of VNNI's Q8_0 dots */
    float *d;   /* [T, K / QK] scale */
    float *s;   /* [T, K / QK] d * sum(q) */
} qacts;

/* The weights are streamed once per step from memory, ~100 MB of them. Prefetching a block
 * this far ahead hid load latency the hardware prefetcher left exposed in a quiet minute
 * (in-process, a step of one request 3.2 -> 2.7 ms, of eight 8.3 -> 7.1 ms; 512 to 1536 bytes
 * all helped); with the host busy, A/B runs showed no difference either way. Past a matrix's
 * end it fetches lines nobody reads, which is harmless. */
#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 1024
#endif

static inline void prefetch_ahead(const void *block, int distance, int bytes) {
    for (int line = 0; line < bytes; line += 64) _mm_prefetch((const char *)block + distance + line, _MM_HINT_T0);
}

static inline float fp16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t f32_to_fp16(float f) { return _cvtss_sh(f, 0); }

static inline float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}


/* -- an opportunistic thread pool ------------------------------------------------------------
 * A job is `n` chunks of fn(ctx, chunk), split into one contiguous range of chunks per thread.
 * Each thread claims its own range's chunks in order and then the others' leftovers, so while
 * no one is preempted every thread streams through one contiguous stretch of a weight matrix:
 * chunks handed out alternately made each thread jump to a new place at every chunk, and
 * each jump cost the hardware prefetcher's warm-up (2 threads ran 1.2x one, not 2x).
 * A range's state packs (generation << 40 | end << 20 | next chunk) in one word; a chunk is
 * claimed with a CAS on it, which succeeds only while the job is still the current one (the
 * caller closes every range before it rewrites the job and publishes the next one only after
 * all chunks of this one are done), so a claim never runs a stale job. The caller claims chunks
 * too and then waits for `done == n`. Only one caller at a time: the planner's scheduler thread
 * (a lock guards rp_forward).
 */
typedef void (*chunk_fn)(void *ctx, int chunk);

#define SPIN_BEFORE_SLEEP_NS 2000000L /* helpers nap on a condition variable after 2 ms idle */
#define MAX_THREADS 64
#define RANGE_BITS 20 /* chunks per job < 2^20 */
#define RANGE_MASK ((1ULL << RANGE_BITS) - 1)

static struct {
    pthread_once_t once;
    int helpers;
    _Atomic uint64_t generation; /* bumped when a job is published; helpers watch it */
    _Atomic uint64_t range[MAX_THREADS];
    _Atomic int parts;           /* ranges of the current job */
    _Atomic int done;
    _Atomic int sleepers;
    _Atomic(chunk_fn) fn;
    _Atomic(void *) ctx;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} pool = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static int pool_wanted = 1;

/* When the helpers keep the caller waiting (their core is busy with other processes and they
 * get preempted holding a chunk), the caller runs alone for a while and then tries again. */
#define STALL_NS 50000L       /* a stall: waiting this long for the helpers' last chunks, */
#define STALL_CHUNKS 3        /* and longer than this many of the caller's own chunks took */
#define STALL_WINDOW_JOBS 512 /* about 3 decode steps */
#define STALLS_TOLERATED 16   /* per window; more, and the caller goes solo */
#define SOLO_JOBS 8192        /* about 50 decode steps */
static int solo_jobs_left, window_jobs, window_stalls;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Claim and run the chunks of range r until it is used up or closed; returns how many ran. */
static int run_range(int r) {
    int ran = 0;
    for (;;) {
        uint64_t v = atomic_load(&pool.range[r]);
        chunk_fn fn = atomic_load(&pool.fn);
        void *ctx = atomic_load(&pool.ctx);
        uint64_t next = v & RANGE_MASK, end = (v >> RANGE_BITS) & RANGE_MASK;
        if (next >= end) return ran;
        if (!atomic_compare_exchange_weak(&pool.range[r], &v, v + 1)) continue;
        fn(ctx, (int)next);
        atomic_fetch_add(&pool.done, 1);
        ran++;
    }
}

/* Thread `home`'s share of the current job: its own range first, then the others' leftovers. */
static int run_chunks(int home) {
    int parts = atomic_load(&pool.parts), ran = 0;
    for (int i = 0; i < parts; i++) ran += run_range((home + i) % parts);
    return ran;
}

static void *helper_main(void *arg) {
    const int home = (int)(intptr_t)arg;
    uint64_t seen = atomic_load(&pool.generation);
    int64_t idle_since = now_ns();
    for (;;) {
        uint64_t gen = atomic_load(&pool.generation);
        if (gen != seen) {
            seen = gen;
            run_chunks(home);
            idle_since = now_ns();
            continue;
        }
        _mm_pause();
        if (now_ns() - idle_since > SPIN_BEFORE_SLEEP_NS) {
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.lock);
            idle_since = now_ns();
        }
    }
    return NULL;
}

static void pool_start(void) {
    pool.helpers = 0;
    int wanted = pool_wanted < MAX_THREADS ? pool_wanted : MAX_THREADS;
    for (int i = 0; i < wanted - 1; i++) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, helper_main, (void *)(intptr_t)(pool.helpers + 1)) == 0) pool.helpers++;
        pthread_attr_destroy(&attr);
    }
}

/* Run fn over chunks 0..n-1 with the helpers; returns when every chunk is done. Only one
 * caller at a time (the planner's scheduler thread). threads <= 1: the caller alone. */
static void parallel_for(int threads, int n, chunk_fn fn, void *ctx) {
    if (threads <= 1 || n <= 1 || solo_jobs_left > 0) {
        if (solo_jobs_left > 0) solo_jobs_left--;
        for (int i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pool_wanted = threads;
    pthread_once(&pool.once, pool_start);
    const int parts = pool.helpers + 1 < n ? pool.helpers + 1 : n;
    /* Close every range first (next = end under a new generation), so a helper that read the
     * old state cannot claim a chunk while the job is rewritten. */
    const uint64_t gen = (atomic_load(&pool.range[0]) >> (2 * RANGE_BITS)) + 1;
    for (int r = 0; r <= pool.helpers; r++) atomic_store(&pool.range[r], gen << (2 * RANGE_BITS));
    atomic_store(&pool.fn, fn);
    atomic_store(&pool.ctx, ctx);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.parts, parts);
    for (int r = 0; r < parts; r++) {
        const uint64_t begin = (uint64_t)n * r / parts, end = (uint64_t)n * (r + 1) / parts;
        atomic_store(&pool.range[r], ((gen + 1) << (2 * RANGE_BITS)) | (end << RANGE_BITS) | begin);
    }
    atomic_fetch_add(&pool.generation, 1);
    if (atomic_load(&pool.sleepers)) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    int64_t started = now_ns();
    int ran = run_chunks(0);
    int64_t chunk_ns = (now_ns() - started) / (ran > 0 ? ran : 1);
    /* A helper is still in its last chunk. If it got preempted there, spinning only keeps its
     * core busy: yield after a short spin so it can finish. */
    int64_t waiting_since = 0;
    for (int spins = 0; atomic_load(&pool.done) < n; spins++) {
        if (spins == 0) waiting_since = now_ns();
        if (spins < 2000)
            _mm_pause();
        else
            sched_yield();
    }
    if (waiting_since) {
        int64_t waited = now_ns() - waiting_since;
        if (waited > STALL_NS && waited > STALL_CHUNKS * chunk_ns) window_stalls++;
    }
    if (++window_jobs == STALL_WINDOW_JOBS) {
        if (window_stalls > STALLS_TOLERATED) solo_jobs_left = SOLO_JOBS;
        window_jobs = window_stalls = 0;
    }
}

/* For tests and benchmarks: how many of the next jobs run without helpers. */
int rp_solo_jobs_left(void) { return solo_jobs_left; }

/* -- quantisation ----------------------------------------------------------------------- */

static inline int64_t row_groups(int rows) { return (rows + GROUP - 1) / GROUP; }

/* Where row r's block blk lives: its group's block record, and r's lane in the record. */
static inline int64_t block_record(int nb, int64_t r, int blk) { return (r / GROUP) * nb + blk; }

/* Chunk and byte of weight i of a block, for a row in lane `lane` (see the header). */
static inline int chunk_byte(int lane, int i) { return (i / 4) * CHUNK + 4 * lane + i % 4; }

/* src [rows, cols] -> q [groups * GROUP * cols], d and wsum [groups * GROUP * cols / QK] (see the
 * header and rp_matrix). */
void rp_quantize_q8_0(const float *src, int rows, int cols, int8_t *q, uint16_t *d, int32_t *wsum) {
    const int nb = cols / QK;
    memset(q, 0, (size_t)row_groups(rows) * GROUP * cols);
    memset(d, 0, sizeof(uint16_t) * row_groups(rows) * GROUP * nb);
    memset(wsum, 0, sizeof(int32_t) * row_groups(rows) * GROUP * nb);
    for (int64_t r = 0; r < rows; r++)
        for (int blk = 0; blk < nb; blk++) {
            const float *x = src + r * cols + blk * QK;
            float amax = 0.f;
            for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(x[i]));
            const int64_t rec = block_record(nb, r, blk);
            const int lane = (int)(r % GROUP);
            uint16_t dh = f32_to_fp16(amax / 127.f);
            d[rec * GROUP + lane] = dh;
            /* Quantise against the stored (fp16-rounded) scale, so d * q is what was meant. */
            float s = fp16_to_f32(dh);
            float inv = s > 0.f ? 1.f / s : 0.f;
            int8_t *out = q + rec * (GROUP * QK);
            int32_t sum = 0;
            for (int i = 0; i < QK; i++) {
                float v = nearbyintf(x[i] * inv);
                out[chunk_byte(lane, i)] = (int8_t)fmaxf(-127.f, fminf(127.f, v));
                sum += out[chunk_byte(lane, i)];
            }
            wsum[rec * GROUP + lane] = -128 * sum;
        }
}

/* src [rows, cols] -> q [groups * GROUP * cols / 2], d and m [groups * GROUP * cols / QK] (see the header). */
void rp_quantize_q4_1(const float *src, int rows, int cols, uint8_t *q, uint16_t *d, uint16_t *m) {
    const int nb = cols / QK;
    memset(q, 0, (size_t)row_groups(rows) * GROUP * cols / 2);
    memset(d, 0, sizeof(uint16_t) * row_groups(rows) * GROUP * nb);
    memset(m, 0, sizeof(uint16_t) * row_groups(rows) * GROUP * nb);
    for (int64_t r = 0; r < rows; r++)
        for (int blk = 0; blk < nb; blk++) {
            const float *x = src + r * cols + blk * QK;
            float lo = x[0], hi = x[0];
            for (int i = 1; i < QK; i++) {
                lo = fminf(lo, x[i]);
                hi = fmaxf(hi, x[i]);
            }
            const int64_t rec = block_record(nb, r, blk);
            const int lane = (int)(r % GROUP);
            uint16_t dh = f32_to_fp16((hi - lo) / 15.f), mh = f32_to_fp16(lo);
            d[rec * GROUP + lane] = dh;
            m[rec * GROUP + lane] = mh;
            /* quantise against the stored (fp16-rounded) scale and minimum */
            float s = fp16_to_f32(dh), mn = fp16_to_f32(mh);
            float inv = s > 0.f ? 1.f / s : 0.f;
            uint8_t *out = q + rec * (GROUP * QK / 2);
            for (int i = 0; i < QK; i++) {
                float v = nearbyintf((x[i] - mn) * inv);
                uint8_t c = (uint8_t)fmaxf(0.f, fminf(15.f, v));
                /* chunks c and c + 4 share bytes: the low nibble and the high one */
                out[chunk_byte(lane, i % (QK / 2))] |= (uint8_t)(c << (i < QK / 2 ? 0 : 4));
            }
        }
}

/* Row `r` of a quantised matrix back to fp32 (the embedding lookup). */
void rp_dequantize_row(const rp_matrix *w, int64_t r, float *out) {
    const int nb = w->cols / QK, lane = (int)(r % GROUP);
    for (int b = 0; b < nb; b++) {
        const int64_t rec = block_record(nb, r, b);
        const float d = fp16_to_f32(w->d[rec * GROUP + lane]);
        if (w->type == RP_Q8_0) {
            const int8_t *q = (const int8_t *)w->q + rec * (GROUP * QK);
            for (int i = 0; i < QK; i++) out[b * QK + i] = d * q[chunk_byte(lane, i)];
        } else {
            const uint8_t *q = (const uint8_t *)w->q + rec * (GROUP * QK / 2);
            const float m = fp16_to_f32(w->m[rec * GROUP + lane]);
            for (int i = 0; i < QK; i++) {
                const int shift = i < QK / 2 ? 0 : 4;
                out[b * QK + i] = d * ((q[chunk_byte(lane, i % (QK / 2))] >> shift) & 15) + m;
            }
        }
    }
}

/* One row of activations to int8 blocks. */
static void quantize_row(const float *x, int K, int8_t *q, uint8_t *u, float *d, float *s) {
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int b = 0; b < K / QK; b++) {
        const float *v = x + b * QK;
        __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
        __m256 v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
        __m256 amax = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                    _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float mx = _mm_cvtss_f32(m4);
        float scale = mx / 127.f;
        float inv = mx > 0.f ? 127.f / mx : 0.f;
        __m256 mul = _mm256_set1_ps(inv);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, mul));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, mul));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, mul));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, mul));
        /* sum of the quantised values */
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        int total = _mm_cvtsi128_si32(s4);
        /* pack 32 x int32 to int8 in order: packs interleave 128-bit lanes, permute fixes it */
        __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + b * QK), p);
        _mm256_storeu_si256((__m256i *)(u + b * QK), _mm256_xor_si256(p, _mm256_set1_epi8((char)0x80)));
        d[b] = scale;
        s[b] = scale * (float)total;
    }
}

static void quantize_rows(const float *x, int T, int K, qacts *a) {
    const int nb = K / QK;
    for (int t = 0; t < T; t++) {
        float *d = a->d + (int64_t)t * nb, *s = a->s + (int64_t)t * nb;
        quantize_row(x + (int64_t)t * K, K, a->q + (int64_t)t * K, a->u + (int64_t)t * K, d, s);
    }
}

/* -- matmul: y[t, n] (+)= sum_k x[t, k] * W[n, k] ---------------------------------------------- */

/* TB activation rows against rows VROWS*h .. VROWS*h + VROWS-1 of row group g of a Q4_1 matrix:
 * out[b * GROUP + r] = W[GROUP g + r] . x_b. Always inlined with a constant TB so the
 * accumulators stay in registers.
 *
 * One maddubs multiplies four weights of each of eight rows (u4) by the same four
 * activations (s8, broadcast), so after the block's eight of them the eight rows' partial sums
 * sit in the vector's lanes: no horizontal reduction per row, which (as hadds) cost as much as
 * the products did when rows were stored one after another. A block's eight int16 sums stay
 * below 8 * 2 * 15 * 127 = 30480, so they add up in int16 before one madd widens them. The
 * minimum's term, sum over blocks of m * a * sum(xq), is added in a second pass over the
 * group's minima after the products: in the same loop its FMA and broadcast competed with the
 * products for the vector ports (6% of the kernel's time). A row's sums add in the same order
 * whatever TB is, so a request's result never depends on its batch. */
static inline __attribute__((always_inline)) void dot_rows_q4(const rp_matrix *w, int64_t g, int h, const qacts *a,
                                                             int t0, const int TB, float *out) {
    const int nb = w->cols / QK, K = w->cols;
    const vint low = v_set1_8(15);
    const uint8_t *wq = (const uint8_t *)w->q + g * nb * (GROUP * QK / 2) + 4 * VROWS * h;
    const uint16_t *wd = w->d + g * nb * GROUP + VROWS * h, *wm = w->m + g * nb * GROUP + VROWS * h;
    const int8_t *xq = a->q + (int64_t)t0 * K;
    const float *xd = a->d + (int64_t)t0 * nb, *xs = a->s + (int64_t)t0 * nb;
    vflt acc[ROW_TILE];
    _Pragma("GCC unroll 8")
    for (int b = 0; b < TB; b++) acc[b] = v_zero_f();
    for (int blk = 0; blk < nb; blk++) {
        const uint8_t *q = wq + (int64_t)blk * (GROUP * QK / 2);
        if (h == 0) prefetch_ahead(q, PREFETCH_BYTES, GROUP * QK / 2);
        const vflt dv = v_fp16(wd + blk * GROUP);
        vint wv[8]; /* wv[c]: weights 4c..4c+3 of the block, four per row */
        _Pragma("GCC unroll 4")
        for (int c = 0; c < 4; c++) {
            const vint raw = v_load(q + CHUNK * c);
            wv[c] = v_and(raw, low);
            wv[c + 4] = v_and(v_srli(raw, 4), low); /* the mask drops what the next byte shifted in */
        }
        _Pragma("GCC unroll 8")
        for (int b = 0; b < TB; b++) {
            const int32_t *x = (const int32_t *)(xq + (int64_t)b * K + blk * QK);
#ifdef DPBUSD
            vint sums = v_zero_i();
            _Pragma("GCC unroll 8")
            for (int c = 0; c < 8; c++) sums = DPBUSD(sums, wv[c], v_set1_32(x[c]));
#else
            const __m256i ones = _mm256_set1_epi16(1);
#define TIMES_X(c) _mm256_maddubs_epi16(wv[c], _mm256_set1_epi32(x[c]))
            const __m256i s01 = _mm256_add_epi16(TIMES_X(0), TIMES_X(1)), s23 = _mm256_add_epi16(TIMES_X(2), TIMES_X(3));
            const __m256i s45 = _mm256_add_epi16(TIMES_X(4), TIMES_X(5)), s67 = _mm256_add_epi16(TIMES_X(6), TIMES_X(7));
#undef TIMES_X
            const __m256i sums = _mm256_madd_epi16(_mm256_add_epi16(_mm256_add_epi16(s01, s23), _mm256_add_epi16(s45, s67)), ones);
#endif
            const vflt scale = v_mul(dv, v_bcast(xd + (int64_t)b * nb + blk));
            acc[b] = v_fma(scale, v_cvt(sums), acc[b]);
        }
    }
    for (int blk = 0; blk < nb; blk++) {
        const vflt mv = v_fp16(wm + blk * GROUP);
        _Pragma("GCC unroll 8")
        for (int b = 0; b < TB; b++) acc[b] = v_fma(mv, v_bcast(xs + (int64_t)b * nb + blk), acc[b]);
    }
    _Pragma("GCC unroll 8")
    for (int b = 0; b < TB; b++) v_store(out + b * GROUP + VROWS * h, acc[b]);
}

/* TB activation rows against VROWS rows of a Q8_0 matrix's row group, as dot_rows_q4 but with signed
 * weights, and each multiply needs one unsigned operand.
 * AVX2: the sign trick (|w| times x with w's sign) makes maddubs signed, and each product pair
 * (up to 2 * 127 * 127) is widened by madd before the eight are added.
 * VNNI: the activations' bytes offset by 128 (a->u) are the unsigned operand, multiplied by the
 * weights as stored. The offset adds 128 * sum(w) to a row's block sum; each block's sums start
 * from w->wsum, which is minus that, so they end exactly where the sign trick's do, with no
 * extra work per activation row. */
static inline __attribute__((always_inline)) void dot_rows_q8(const rp_matrix *w, int64_t g, int h, const qacts *a,
                                                             int t0, const int TB, float *out) {
    const int nb = w->cols / QK, K = w->cols;
    const int8_t *wq = (const int8_t *)w->q + g * nb * (GROUP * QK) + 4 * VROWS * h;
    const uint16_t *wd = w->d + g * nb * GROUP + VROWS * h;
#ifdef DPBUSD
    const int32_t *ws = w->wsum + g * nb * GROUP + VROWS * h;
    const uint8_t *xa = a->u + (int64_t)t0 * K;
#else
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *xa = a->q + (int64_t)t0 * K;
#endif
    const float *xd = a->d + (int64_t)t0 * nb;
    vflt acc[ROW_TILE];
    _Pragma("GCC unroll 8")
    for (int b = 0; b < TB; b++) acc[b] = v_zero_f();
    for (int blk = 0; blk < nb; blk++) {
        const int8_t *q = wq + (int64_t)blk * (GROUP * QK);
        if (h == 0) prefetch_ahead(q, 2 * PREFETCH_BYTES, GROUP * QK);
        const vflt dv = v_fp16(wd + blk * GROUP);
        vint wv[8];
        _Pragma("GCC unroll 8")
        for (int c = 0; c < 8; c++) wv[c] = v_load(q + CHUNK * c);
#ifdef DPBUSD
        const vint start = v_load(ws + blk * GROUP);
#else
        __m256i wabs[8];
        _Pragma("GCC unroll 8")
        for (int c = 0; c < 8; c++) wabs[c] = _mm256_sign_epi8(wv[c], wv[c]);
#endif
        _Pragma("GCC unroll 8")
        for (int b = 0; b < TB; b++) {
            const int32_t *x = (const int32_t *)(xa + (int64_t)b * K + blk * QK);
#ifdef DPBUSD
            vint sums = start;
            _Pragma("GCC unroll 8")
            for (int c = 0; c < 8; c++) sums = DPBUSD(sums, v_set1_32(x[c]), wv[c]);
#else
#define TIMES_X(c) _mm256_madd_epi16(_mm256_maddubs_epi16(wabs[c], _mm256_sign_epi8(_mm256_set1_epi32(x[c]), wv[c])), ones)
            const __m256i s01 = _mm256_add_epi32(TIMES_X(0), TIMES_X(1)), s23 = _mm256_add_epi32(TIMES_X(2), TIMES_X(3));
            const __m256i s45 = _mm256_add_epi32(TIMES_X(4), TIMES_X(5)), s67 = _mm256_add_epi32(TIMES_X(6), TIMES_X(7));
#undef TIMES_X
            const __m256i sums = _mm256_add_epi32(_mm256_add_epi32(s01, s23), _mm256_add_epi32(s45, s67));
#endif
            const vflt scale = v_mul(dv, v_bcast(xd + (int64_t)b * nb + blk));
            acc[b] = v_fma(scale, v_cvt(sums), acc[b]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int b = 0; b < TB; b++) v_store(out + b * GROUP + VROWS * h, acc[b]);
}

#define DOT_ROWS_TILE(kernel)                          \
    switch (tb) {                                      \
    case 1: kernel(w, g, h, a, t0, 1, out); break;     \
    case 2: kernel(w, g, h, a, t0, 2, out); break;     \
    case 3: kernel(w, g, h, a, t0, 3, out); break;     \
    case 4: kernel(w, g, h, a, t0, 4, out); break;     \
    case 5: kernel(w, g, h, a, t0, 5, out); break;     \
    case 6: kernel(w, g, h, a, t0, 6, out); break;     \
    case 7: kernel(w, g, h, a, t0, 7, out); break;     \
    default: kernel(w, g, h, a, t0, 8, out); break;    \
    }

/* out[b * GROUP + r] = W[GROUP g + r] . x_{t0 + b} for tb <= ROW_TILE activation rows. */
static void dot_group(const rp_matrix *w, int64_t g, const qacts *a, int t0, int tb, float *out) {
    for (int h = 0; h < GROUP / VROWS; h++) {
        if (w->type == RP_Q4_1) {
            DOT_ROWS_TILE(dot_rows_q4)
        } else {
            DOT_ROWS_TILE(dot_rows_q8)
        }
    }
}

typedef struct {
    const rp_matrix *w;
    const qacts *a;
    int T, rows_per_chunk, add;
    float *y;
} matmul_job;

static void matmul_chunk(void *ctx, int chunk) {
    const matmul_job *j = ctx;
    const int N = j->w->rows;
    int n0 = chunk * j->rows_per_chunk, n1 = n0 + j->rows_per_chunk < N ? n0 + j->rows_per_chunk : N;
    float out[ROW_TILE * GROUP];
    for (int n = n0; n < n1; n += GROUP) { /* chunks start at a multiple of GROUP rows */
        const int rows = n1 - n < GROUP ? n1 - n : GROUP;
        for (int t0 = 0; t0 < j->T; t0 += ROW_TILE) {
            int tb = j->T - t0 < ROW_TILE ? j->T - t0 : ROW_TILE;
            dot_group(j->w, n / GROUP, j->a, t0, tb, out);
            for (int b = 0; b < tb; b++) {
                float *dst = j->y + (int64_t)(t0 + b) * N + n;
                const float *src = out + b * GROUP;
                int r = 0;
                for (; r + 8 <= rows; r += 8) {
                    const __m256 v = _mm256_loadu_ps(src + r);
                    _mm256_storeu_ps(dst + r, j->add ? _mm256_add_ps(_mm256_loadu_ps(dst + r), v) : v);
                }
                for (; r < rows; r++) dst[r] = j->add ? dst[r] + src[r] : src[r];
            }
        }
    }
}

#define MATMUL_CHUNKS 48 /* per matmul: small enough that a preempted helper holds little */

/* y[T, N] (+)= W[N, K] . x[T, K]^T, rows of W shared out among the threads. */
static void matmul(int threads, const rp_matrix *w, const qacts *a, int T, float *y, int add) {
    int per = (w->rows + MATMUL_CHUNKS - 1) / MATMUL_CHUNKS;
    per = (per + GROUP - 1) / GROUP * GROUP; /* whole row groups */
    matmul_job j = {w, a, T, per, add, y};
    parallel_for(threads, (w->rows + per - 1) / per, matmul_chunk, &j);
}

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;

/* Exported for tests: y[T, N] = x[T, K] . W^T with x quantised like the forward pass does. */
void rp_matmul(const rp_matrix *w, const float *x, int T, float *y, int threads) {
    int K = w->cols, nb = K / QK;
    qacts a = {malloc((size_t)T * K), malloc((size_t)T * K), malloc(sizeof(float) * T * nb), malloc(sizeof(float) * T * nb)};
    quantize_rows(x, T, K, &a);
    pthread_mutex_lock(&call_lock);
    matmul(threads, w, &a, T, y, 0);
    pthread_mutex_unlock(&call_lock);
    free(a.q);
    free(a.u);
    free(a.d);
    free(a.s);
}

/* -- the forward pass --------------------------------------------------------------------- */

/* It runs on the calling thread alone, between two matmuls, so it is vectorised: as a scalar
 * sum (one dependent add per element) it kept the helper idle for ~3% of a step of 8. */
static void rms_norm_rows(const float *x, const float *weight, int T, int H, float eps, float *out) {
    for (int t = 0; t < T; t++) {
        const float *v = x + (int64_t)t * H;
        float *o = out + (int64_t)t * H;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int i = 0;
        for (; i + 16 <= H; i += 16) {
            const __m256 v0 = _mm256_loadu_ps(v + i), v1 = _mm256_loadu_ps(v + i + 8);
            a0 = _mm256_fmadd_ps(v0, v0, a0);
            a1 = _mm256_fmadd_ps(v1, v1, a1);
        }
        float ss = hsum8(_mm256_add_ps(a0, a1));
        for (; i < H; i++) ss += v[i] * v[i];
        const float r = 1.f / sqrtf(ss / H + eps);
        const __m256 rv = _mm256_set1_ps(r);
        for (i = 0; i + 8 <= H; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(_mm256_loadu_ps(v + i), rv)));
        for (; i < H; i++) o[i] = weight[i] * (v[i] * r);
    }
}

static inline uint16_t *cache_at(const rp_model *M, uint16_t *base, int layer, int slot, int kvh, int pos) {
    return base + ((((int64_t)layer * M->slots + slot) * M->kv_heads + kvh) * M->capacity + pos) * M->head_dim;
}

/* The KV cache is fp16: a batched step reads every request's whole cache, and in fp32 that was
 * ~40 MB a step for 8 requests of ~120 tokens, as much memory traffic as a third of the weights. */
static inline __m256 load8h(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static void to_fp16(const float *x, int n, uint16_t *out) { /* n: a multiple of 8 */
    for (int i = 0; i < n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
}

static void rope(float *v, const float *cos, const float *sin, int D) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos[i] - b * sin[i];
        v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

typedef struct {
    const rp_model *M;
    int layer, T;
    const int32_t *slots, *pos;
    float *qkv; /* rotated in place by the chunks that rope their own heads */
    float *att, *scores; /* scores: [T * heads, score_stride], one row per task */
    int score_stride;
    qacts *a; /* att's rows quantised into it, block by block, as the heads finish... */
    int quantise_in_chunks; /* ...when a head is whole blocks; else the caller does it after */
    int rope_in_chunks; /* every token has its own slot: no token reads another's new key */
} attention_job;

/* Quantise columns [c0, c0 + n) of row t of x (both multiples of QK) into a, as quantize_rows
 * would: blocks are independent, so a phase's chunks can each quantise the blocks they wrote
 * and the calling thread does not do it alone afterwards while the helpers wait. */
static void quantize_part(const float *x, int K, int t, int c0, int n, qacts *a) {
    const int nb = K / QK;
    const int64_t b0 = (int64_t)t * nb + c0 / QK;
    const int64_t at = (int64_t)t * K + c0;
    quantize_row(x + at, n, a->q + at, a->u + at, a->d + b0, a->s + b0);
}

/* Rope token t's key/value head kh and its query heads, and store its key and value. */
static void rope_and_cache(const attention_job *j, int t, int kh) {
    const rp_model *M = j->M;
    const int D = M->head_dim, NH = M->heads, KVH = M->kv_heads, group = NH / KVH;
    float *row = j->qkv + (int64_t)t * (NH + 2 * KVH) * D;
    const float *c = M->cos + (int64_t)j->pos[t] * D, *sn = M->sin + (int64_t)j->pos[t] * D;
    for (int hh = kh * group; hh < (kh + 1) * group; hh++) rope(row + hh * D, c, sn, D);
    rope(row + (NH + kh) * D, c, sn, D);
    to_fp16(row + (NH + kh) * D, D, cache_at(M, M->k_cache, j->layer, j->slots[t], kh, j->pos[t]));
    to_fp16(row + (NH + KVH + kh) * D, D, cache_at(M, M->v_cache, j->layer, j->slots[t], kh, j->pos[t]));
}

/* e^x for eight floats: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^6
 * (relative error ~1e-7, about an ulp), times 2^n built in the exponent bits. x is clamped to
 * [-87, 88], where 2^n stays a normal float; softmax and SiLU only need e^x to underflow to a
 * tiny number, not to zero. (glibc's scalar expf was a tenth of a batched decode step.) */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x); /* ln2 in two parts, so */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);     /* r keeps its low bits */
    __m256 p = _mm256_set1_ps(1.f / 720.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

/* Lanes p < n of eight: a mask for loads, stores and blends. */
static inline __m256i first_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* q . k for eight consecutive cached positions, scaled: one accumulator per position, reduced
 * together by a transpose of hadds (a horizontal sum per position cost as much as its dot). */
static inline __m256 scores8(const float *q, const uint16_t *k, int D, __m256 scale) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int e = 0; e < D; e += 8) {
        const __m256 qv = _mm256_loadu_ps(q + e);
        _Pragma("GCC unroll 8")
        for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(qv, load8h(k + (int64_t)i * D + e), acc[i]);
    }
    const __m256 s01 = _mm256_hadd_ps(acc[0], acc[1]), s23 = _mm256_hadd_ps(acc[2], acc[3]);
    const __m256 s45 = _mm256_hadd_ps(acc[4], acc[5]), s67 = _mm256_hadd_ps(acc[6], acc[7]);
    const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    /* s0123 lanes: [p0 p1 p2 p3 (low halves) | p0 p1 p2 p3 (high halves)], likewise s4567 */
    const __m256 lo = _mm256_permute2f128_ps(s0123, s4567, 0x20), hi = _mm256_permute2f128_ps(s0123, s4567, 0x31);
    return _mm256_mul_ps(_mm256_add_ps(lo, hi), scale);
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* Token t, head hh: softmax(q . k[0..pos]) . v over its slot's cache, eight positions per
 * vector. The last pos % 8 positions are scored one at a time (the cache may end right after
 * pos); the score row is padded to a multiple of eight (see rp_forward) and the padding lanes
 * masked out. The output row stays in registers across positions for the usual head size. */
static void attention_head(const attention_job *j, int t, int hh) {
    const rp_model *M = j->M;
    const int D = M->head_dim, NH = M->heads, KVH = M->kv_heads, QKV = (NH + 2 * KVH) * D;
    const int th = t * NH + hh, kh = hh / (NH / KVH), P = j->pos[t] + 1;
    const __m256 scale = _mm256_set1_ps(1.f / sqrtf((float)D));
    const float *q = j->qkv + (int64_t)t * QKV + hh * D;
    const uint16_t *keys = cache_at(M, M->k_cache, j->layer, j->slots[t], kh, 0);
    const uint16_t *vals = cache_at(M, M->v_cache, j->layer, j->slots[t], kh, 0);
    float *sc = j->scores + (int64_t)th * j->score_stride;
    const int full = P / 8 * 8;
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int p = 0; p < full; p += 8) {
        const __m256 s8 = scores8(q, keys + (int64_t)p * D, D, scale);
        _mm256_storeu_ps(sc + p, s8);
        mx = _mm256_max_ps(mx, s8);
    }
    if (full < P) { /* the last positions one at a time: past pos the cache may not exist */
        float tail[8];
        for (int p = full; p < P; p++) {
            const uint16_t *k = keys + (int64_t)p * D;
            __m256 acc = _mm256_setzero_ps();
            for (int e = 0; e < D; e += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + e), load8h(k + e), acc);
            tail[p - full] = hsum8(acc);
        }
        const __m256i live = first_lanes(P - full);
        const __m256 s8 = _mm256_mul_ps(_mm256_maskload_ps(tail, live), scale);
        _mm256_storeu_ps(sc + full, s8);
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), s8, _mm256_castsi256_ps(live)));
    }
    const __m256 top = _mm256_set1_ps(hmax8(mx));
    __m256 sum = _mm256_setzero_ps();
    for (int p = 0; p < P; p += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + p), top));
        if (p + 8 > P) e = _mm256_and_ps(e, _mm256_castsi256_ps(first_lanes(P - p)));
        _mm256_storeu_ps(sc + p, e);
        sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_set1_ps(1.f / hsum8(sum));
    float *out = j->att + (int64_t)t * NH * D + hh * D;
    if (D == 64) {
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
        for (int p = 0; p < P; p++) {
            const uint16_t *v = vals + (int64_t)p * 64;
            __m256 w = _mm256_broadcast_ss(sc + p);
            o0 = _mm256_fmadd_ps(w, load8h(v), o0);
            o1 = _mm256_fmadd_ps(w, load8h(v + 8), o1);
            o2 = _mm256_fmadd_ps(w, load8h(v + 16), o2);
            o3 = _mm256_fmadd_ps(w, load8h(v + 24), o3);
            o4 = _mm256_fmadd_ps(w, load8h(v + 32), o4);
            o5 = _mm256_fmadd_ps(w, load8h(v + 40), o5);
            o6 = _mm256_fmadd_ps(w, load8h(v + 48), o6);
            o7 = _mm256_fmadd_ps(w, load8h(v + 56), o7);
        }
        _mm256_storeu_ps(out, _mm256_mul_ps(o0, inv));
        _mm256_storeu_ps(out + 8, _mm256_mul_ps(o1, inv));
        _mm256_storeu_ps(out + 16, _mm256_mul_ps(o2, inv));
        _mm256_storeu_ps(out + 24, _mm256_mul_ps(o3, inv));
        _mm256_storeu_ps(out + 32, _mm256_mul_ps(o4, inv));
        _mm256_storeu_ps(out + 40, _mm256_mul_ps(o5, inv));
        _mm256_storeu_ps(out + 48, _mm256_mul_ps(o6, inv));
        _mm256_storeu_ps(out + 56, _mm256_mul_ps(o7, inv));
        return;
    }
    for (int i = 0; i < D; i++) out[i] = 0.f;
    for (int p = 0; p < P; p++) {
        const uint16_t *v = vals + (int64_t)p * D;
        __m256 w = _mm256_broadcast_ss(sc + p);
        for (int i = 0; i < D; i += 8)
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(w, load8h(v + i), _mm256_loadu_ps(out + i)));
    }
    for (int i = 0; i < D; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), inv));
}

/* One chunk per (token, head): enough chunks for both threads when a step has one token. The
 * caller has roped and cached this step's keys and values (a head's chunk would race the
 * other heads of its group for them). */
static void attention_chunk(void *ctx, int th) {
    const attention_job *j = ctx;
    const int NH = j->M->heads, D = j->M->head_dim, t = th / NH, hh = th % NH;
    attention_head(j, t, hh);
    if (j->quantise_in_chunks) quantize_part(j->att, NH * D, t, hh * D, D, j->a);
}

/* One chunk per (token, key/value head): the query heads that share a key/value head run
 * back to back on one thread, so its cached keys and values are read from memory once and
 * then from this core's cache, not once per query head on whichever core took it. */
static void attention_group_chunk(void *ctx, int tk) {
    const attention_job *j = ctx;
    const int KVH = j->M->kv_heads, D = j->M->head_dim, NH = j->M->heads;
    const int group = NH / KVH, t = tk / KVH, kh = tk % KVH;
    if (j->rope_in_chunks) rope_and_cache(j, t, kh);
    for (int hh = kh * group; hh < (kh + 1) * group; hh++) attention_head(j, t, hh);
    if (j->quantise_in_chunks) quantize_part(j->att, NH * D, t, kh * group * D, group * D, j->a);
}

#define ATTENTION_GROUP_MIN_TOKENS 4 /* fewer tokens: too few (token, kv head) chunks to share */

typedef struct {
    const float *gu;
    float *act;
    int I;
    qacts *a; /* act's rows quantised into it */
} silu_job;

static void silu_chunk(void *ctx, int t) {
    const silu_job *j = ctx;
    const float *g = j->gu + (int64_t)t * 2 * j->I, *u = g + j->I;
    float *o = j->act + (int64_t)t * j->I;
    const __m256 one = _mm256_set1_ps(1.f), neg = _mm256_set1_ps(-0.f);
    int i = 0;
    for (; i + 8 <= j->I; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 sig = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, neg))));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(sig, _mm256_loadu_ps(u + i)));
    }
    for (; i < j->I; i++) o[i] = g[i] / (1.f + expf(-g[i])) * u[i];
    quantize_part(j->act, j->I, t, 0, j->I, j->a);
}

/* Returns 0, or -1 when out of memory. */
int rp_forward(const rp_model *M, int T, const int32_t *tokens, const int32_t *slots, const int32_t *pos,
               const int32_t *logit_rows, int n_logits, float *logits) {
    const int H = M->hidden, D = M->head_dim, NH = M->heads, KVH = M->kv_heads, I = M->inter;
    const int QKV = (NH + 2 * KVH) * D;
    const int maxK = I > H ? I : H;
    const int threads = M->threads > 0 ? M->threads : 1;
    int maxpos = 0;
    for (int t = 0; t < T; t++) maxpos = pos[t] > maxpos ? pos[t] : maxpos;
    int n_out = n_logits > 0 ? n_logits : 0;
    int rowsq = T > n_out ? T : n_out;

    float *x = malloc(sizeof(float) * T * H);
    float *h = malloc(sizeof(float) * T * H);
    float *qkv = malloc(sizeof(float) * T * QKV);
    float *att = malloc(sizeof(float) * T * NH * D);
    float *gu = malloc(sizeof(float) * T * 2 * I);
    float *act = malloc(sizeof(float) * T * I);
    qacts a = {malloc((size_t)rowsq * maxK), malloc((size_t)rowsq * maxK), malloc(sizeof(float) * rowsq * (maxK / QK)),
               malloc(sizeof(float) * rowsq * (maxK / QK))};
    const int score_stride = (maxpos + 1 + 7) / 8 * 8; /* whole vectors per row */
    float *scores = malloc(sizeof(float) * T * NH * score_stride);
    float *last = malloc(sizeof(float) * (n_out ? n_out : 1) * H);
    int ok = x && h && qkv && att && gu && act && a.q && a.u && a.d && a.s && scores && last;
    if (ok) {
        pthread_mutex_lock(&call_lock);
        for (int t = 0; t < T; t++) rp_dequantize_row(M->embed, tokens[t], x + (int64_t)t * H);
        attention_job aj = {M, 0, T, slots, pos, qkv, att, scores, score_stride, &a, D % QK == 0, 0};
        silu_job sj = {gu, act, I, &a};
        const int grouped = T >= ATTENTION_GROUP_MIN_TOKENS;
        /* A decode step's tokens each have their own slot; a prefill's share one, and each
         * attends to the keys the others store in this call, so they must all be stored first. */
        aj.rope_in_chunks = grouped;
        for (int t = 1; t < T && aj.rope_in_chunks; t++)
            for (int u = 0; u < t; u++)
                if (slots[u] == slots[t]) {
                    aj.rope_in_chunks = 0;
                    break;
                }
        for (int l = 0; l < M->layers; l++) {
            rms_norm_rows(x, M->norm1 + (int64_t)l * H, T, H, M->eps, h);
            quantize_rows(h, T, H, &a);
            matmul(threads, &M->qkv[l], &a, T, qkv, 0);
            /* rope, this step's keys/values into the cache, attention, and its output quantised:
             * all of it in the chunks when they may, else rope and cache here first */
            aj.layer = l;
            if (!aj.rope_in_chunks)
                for (int t = 0; t < T; t++)
                    for (int kh = 0; kh < KVH; kh++) rope_and_cache(&aj, t, kh);
            if (grouped)
                parallel_for(threads, T * KVH, attention_group_chunk, &aj);
            else
                parallel_for(threads, T * NH, attention_chunk, &aj);
            if (!aj.quantise_in_chunks) quantize_rows(att, T, NH * D, &a);
            matmul(threads, &M->o[l], &a, T, x, 1);
            rms_norm_rows(x, M->norm2 + (int64_t)l * H, T, H, M->eps, h);
            quantize_rows(h, T, H, &a);
            matmul(threads, &M->gate_up[l], &a, T, gu, 0);
            parallel_for(threads, T, silu_chunk, &sj); /* and quantises act */
            matmul(threads, &M->down[l], &a, T, x, 1);
        }
        if (n_out) {
            for (int r = 0; r < n_out; r++) rms_norm_rows(x + (int64_t)logit_rows[r] * H, M->final_norm, 1, H, M->eps, last + (int64_t)r * H);
            quantize_rows(last, n_out, H, &a);
            matmul(threads, M->lm_head, &a, n_out, logits, 0);
        }
        pthread_mutex_unlock(&call_lock);
    }
    free(x);
    free(h);
    free(qkv);
    free(att);
    free(gu);
    free(act);
    free(a.q);
    free(a.u);
    free(a.d);
    free(a.s);
    free(scores);
    free(last);
    return ok ? 0 : -1;
}
