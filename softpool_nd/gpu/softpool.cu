// SoftPool CUDA kernels, compiled at run time by CuPy (NVRTC) and, for the
// tests, by g++ through host_shim.h.
//
// Every kernel walks a loop table (softpool_nd/_loops.py): one row per loop
// dimension with the columns of the enum below, the last row innermost.
// The table travels by value in a fixed-size struct, so a launch needs no
// device allocation; launch.py refuses tables with more than SP_MAX_DIMS rows.
//
// The arithmetic follows NUMERICS.md (the rules the CPU kernels in
// softpool_nd/cpu/ follow too): m is the window's maximiser of beta*x, found
// by comparison, weights e = exp(beta*(x - m)), y = m + sum(e*(x - m)) / sum(e),
// lse = beta*m + log(sum(e)); beta == 0 is the plain mean. The backward and
// the jvp take exp(beta*x - lse) only where that cannot have overflowed,
// and the forward's weights elsewhere.
//
// No shared memory, no warp intrinsics and no atomics: every thread owns its
// output cells (the window-walking backward: the cells of its windows, which
// no other window holds), so the host shim can run the grid thread by thread
// and the results do not depend on scheduling.
//
// No integer division by a run-time value either: a GPU has no divide
// instruction, and each / or % costs ~25 instructions of emulation. Every
// divisor the kernels use (per row: O, L, S, D and the overlap period) comes
// with an unsigned magic multiplier and shift computed by launch.py for the
// index width, so a quotient is a multiply-high, an add and a shift.
//
// Template parameters: T the stored type, A the accumulation type (float for
// half, bfloat16 and float; double for double), I the index type (int when
// every offset fits, long long otherwise), W the most window dimensions the
// kernel walks (launch.py picks the smallest of 2, 4 and SP_MAX_DIMS that
// holds the pooled rows of the table).

#ifdef SOFTPOOL_HOST
#include "host_shim.h"
#else
#include <cuda_fp16.h>
#if SOFTPOOL_BF16
#include <cuda_bf16.h>
#endif
#endif

#define SP_MAX_DIMS 16

// Column order of softpool_nd._loops (checked by tests/test_gpu_host.py).
enum { COL_L, COL_O, COL_K, COL_S, COL_D, COL_P, COL_XS, COL_YS, COL_GS, SP_NCOLS };

// Divisors with a magic number per row (checked by tests/test_gpu_host.py):
// output length, input length, stride, dilation, the period D / gcd(S, D)
// at which the windows holding a cell recur, and the output stride YS (to
// read a window's position back from its output offset).
enum { DIV_O, DIV_L, DIV_S, DIV_D, DIV_E, DIV_Y, SP_NDIVS };

struct LoopTable {
    long long ndim;
    long long batch;  // bit a set: row a is unpooled (softpool_nd._loops._is_batch), its window the cell itself
    long long whole;  // bit a set: no window of row a reaches past the input (launch._whole): nothing to clip
    long long r[SP_MAX_DIMS][SP_NCOLS];
    unsigned long long div[SP_MAX_DIMS][SP_NDIVS][2];  // {multiplier, shift} for the kernel's index width
    long long every[SP_MAX_DIMS];                      // the divisor of DIV_E: D / gcd(S, D)
};

// n / d for 0 <= n < 2**31 (int) or 2**63 (long long) and the magic {m, s} of d:
// q = (mulhi(n, m) + n) >> s (Granlund and Montgomery; the sum cannot overflow for such n).
__device__ __forceinline__ int sp_div(int n, const unsigned long long* f) {
    const unsigned t = __umulhi((unsigned)n, (unsigned)f[0]);
    return (int)((t + (unsigned)n) >> (unsigned)f[1]);
}
__device__ __forceinline__ long long sp_div(long long n, const unsigned long long* f) {
    const unsigned long long t = __umul64hi((unsigned long long)n, f[0]);
    return (long long)((t + (unsigned long long)n) >> f[1]);
}

__device__ __forceinline__ float sp_acc(float v) { return v; }
__device__ __forceinline__ double sp_acc(double v) { return v; }
__device__ __forceinline__ float sp_acc(__half v) { return __half2float(v); }
#if SOFTPOOL_BF16
__device__ __forceinline__ float sp_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
#endif

template <typename T> struct Store;
template <> struct Store<float> {
    __device__ __forceinline__ static float from(float v) { return v; }
};
template <> struct Store<double> {
    __device__ __forceinline__ static double from(double v) { return v; }
};
template <> struct Store<__half> {
    __device__ __forceinline__ static __half from(float v) { return __float2half_rn(v); }
};
#if SOFTPOOL_BF16
template <> struct Store<__nv_bfloat16> {
    __device__ __forceinline__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};
#endif

__device__ __forceinline__ float sp_exp(float v) { return expf(v); }
__device__ __forceinline__ double sp_exp(double v) { return exp(v); }
__device__ __forceinline__ float sp_log(float v) { return logf(v); }
__device__ __forceinline__ double sp_log(double v) { return log(v); }
// v - v is 0 for finite v and NaN for infinities and NaN, in any precision.
template <typename A> __device__ __forceinline__ bool sp_finite(A v) { return v - v == A(0); }

// The cells of one window (or the windows of one input cell) as up to W
// nested loops, each with a count and a memory step. Dimensions with a single
// position are left out, so pooling two axes runs two loops whatever the
// rank. W is a template constant and every slot index is one after
// unrolling, so the counters live in registers, not in local memory.
template <typename I, int W> struct Slots {
    I cnt[W];
    I step[W];
    int n;

    __device__ __forceinline__ void clear() {
#pragma unroll
        for (int w = 0; w < W; ++w) {
            cnt[w] = 1;
            step[w] = 0;
        }
        n = 0;
    }

    // launch.py picks W >= the number of table rows with K > 1, so n < W here.
    __device__ __forceinline__ void add(I count, I stride) {
        if (count > 1) {
#pragma unroll
            for (int w = 0; w < W; ++w) {
                if (w == n) {
                    cnt[w] = count;
                    step[w] = stride;
                }
            }
            ++n;
        }
    }
};

// Calls f(offset) for every position, slot 0 (the first added) fastest.
template <int D> struct Walk {
    template <typename I, int W, typename F>
    __device__ __forceinline__ static void run(const Slots<I, W>& s, I off, F& f) {
        for (I i = 0; i < s.cnt[D - 1]; ++i, off += s.step[D - 1]) Walk<D - 1>::run(s, off, f);
    }
};

template <> struct Walk<0> {
    template <typename I, int W, typename F>
    __device__ __forceinline__ static void run(const Slots<I, W>&, I off, F& f) {
        f(off);
    }
};

// Range [lo, hi) of window cells i with 0 <= start + i*d < n; fd is the magic of d.
template <typename I>
__device__ __forceinline__ void sp_clip(I start, I k, I d, I n, const unsigned long long* fd, I& lo, I& hi) {
    lo = start >= 0 ? I(0) : sp_div(-start + d - 1, fd);
    hi = start + (k - 1) * d < n ? k : start <= n - 1 ? sp_div(n - 1 - start, fd) + 1 : I(0);
    if (hi < lo) hi = lo;
}

// A sum whose rounding error grows like log(terms), not linearly (NUMERICS.md
// rule 5): blocks of 256 terms in A, block sums added in double.
template <typename A> struct SpSum {
    A block = A(0);
    double total = 0.0;
    int n = 0;

    __device__ __forceinline__ void add(A v) {
        block += v;
        if (++n == 256) {
            total += (double)block;
            block = A(0);
            n = 0;
        }
    }
    __device__ __forceinline__ A value() const { return (A)(total + (double)block); }
};

// Bit a of a row mask (batch, whole). The decode of a pooled row is ~51 SASS
// instructions on sm_90, most of them sp_clip's and the slots'; an unpooled
// row (batch: K == 1, S == 1, P == 0) needs neither, its window the input
// cell o (~24), and a row whose windows all lie inside the input (whole: no
// padding, the last window inside) skips the clip. Batch and channel rows are
// a third (NCHW) to a half (NHWC) of a 2-D pool's rows; k2s2 without padding
// is whole on every pooled row. The integers are those of the general path.
__device__ __forceinline__ bool sp_bit(long long mask, int a) { return ((unsigned)mask >> a) & 1u; }

// Adds window o of table row a to win: its first cell to xbase, its number of
// real (non-padding) cells along the row to count.
template <typename I, int W>
__device__ __forceinline__ void sp_axis(const LoopTable& tab, int a, I o, Slots<I, W>& win, I& xbase, I& count) {
    const long long* r = tab.r[a];
    const I D = (I)r[COL_D], XS = (I)r[COL_XS];
    const I start = o * (I)r[COL_S] - (I)r[COL_P];
    I lo = 0, hi = (I)r[COL_K];
    if (!sp_bit(tab.whole, a)) sp_clip<I>(start, hi, D, (I)r[COL_L], tab.div[a][DIV_D], lo, hi);
    xbase += (start + lo * D) * XS;
    count *= hi - lo;
    win.add(hi - lo, D * XS);
}

// The window of output cell idx: its cells (win, from xbase), its output
// offset ybase and its number of real cells.
template <typename I, int W>
__device__ __forceinline__ void sp_window(const LoopTable& tab, I idx, Slots<I, W>& win, I& xbase, I& ybase,
                                          I& count) {
    win.clear();
    I rem = idx;
    count = 1;
    xbase = 0;
    ybase = 0;
    for (int a = (int)tab.ndim - 1; a >= 0; --a) {
        const I q = sp_div(rem, tab.div[a][DIV_O]);
        const I o = rem - q * (I)tab.r[a][COL_O];
        rem = q;
        ybase += o * (I)tab.r[a][COL_YS];
        if (sp_bit(tab.batch, a)) xbase += o * (I)tab.r[a][COL_XS];
        else sp_axis<I, W>(tab, a, o, win, xbase, count);
    }
}

// The window at output offset at (output-shaped arrays are dense, strides YS):
// its cells (win, from xbase) and its number of real cells.
template <typename I, int W>
__device__ __forceinline__ void sp_window_at(const LoopTable& tab, I at, Slots<I, W>& win, I& xbase, I& count) {
    win.clear();
    xbase = 0;
    count = 1;
    for (int a = (int)tab.ndim - 1; a >= 0; --a) {
        const I O = (I)tab.r[a][COL_O];
        I o = 0;
        if (O > 1) {
            const I q = sp_div(at, tab.div[a][DIV_Y]);
            o = q - sp_div(q, tab.div[a][DIV_O]) * O;
        }
        if (sp_bit(tab.batch, a)) xbase += o * (I)tab.r[a][COL_XS];
        else sp_axis<I, W>(tab, a, o, win, xbase, count);
    }
}

// The weight exp(beta*(v - m)) of a cell with value v != m (not NaN) for the
// window's maximiser m of beta*x, and its moment e*(v - m): where v - m
// overflowed, beta*v - beta*m (finite for |beta| < 1, else the weight is 0).
template <typename A>
__device__ __forceinline__ A sp_weight(A v, A m, A beta, A& moment) {
    const A d = v - m;
    const bool finite = sp_finite(d);
    const A e = sp_exp(finite ? beta * d : beta * v - beta * m);
    moment = finite ? e * d : e * v - e * m;
    return e;
}

// NUMERICS.md rules 2, 3 and 5 for one window (beta != 0): its maximiser m of
// beta*x (found by comparison), s = sum of the weights exp(beta*(x - m)) in
// (0, 1] and t = sum of e*(x - m), terms with e == 0 skipped; NaN propagates.
//
// Windows of at most one SpSum block (256 cells, every window of a k <= 16
// 2-D pool) take one pass with an online maximum: each load is used once and
// every cell costs one exp. A cell that beats the running maximiser m becomes
// the new one, and the sums so far are rescaled by the old maximiser's weight
// r = exp(beta*(m - v)) against it, from sp_weight like any weight (so the
// overflow rule holds: r == 0 where m - v overflowed past the limit, and the
// zero terms are dropped, not multiplied): s' = r*s + 1, t' = r*t + s*r*(m - v).
// The sums are plain A: 256 terms are one SpSum block, which never reaches
// its double total.
// Each rescale rounds once more, so a long window with many new maxima would
// lose the log(n) error growth of rule 5; longer windows take two passes
// (maximiser, then sums), where every weight is rounded once.
template <typename T, typename A, typename I, int W>
__device__ __forceinline__ void sp_stats(const T* __restrict__ x, const Slots<I, W>& win, I xbase, A beta, A& m,
                                         SpSum<A>& s, SpSum<A>& t) {
    const A zero = A(0);
    m = sp_acc(x[xbase]);
    I cells = 1;
#pragma unroll
    for (int w = 0; w < W; ++w) cells *= win.cnt[w];
    if (cells <= I(256)) {
        A ss = zero, tt = zero;
        A nan = zero;  // the last NaN seen: added to both sums at the end
        auto online = [&](I off) {
            const A v = sp_acc(x[off]);
            if (v != v) {
                nan = v;
            } else if (v == m) {  // e = 1 and x - m = 0 (also for an infinite m)
                ss += A(1);
            } else if (beta > zero ? v > m : v < m) {
                A moment;
                const A r = sp_weight(m, v, beta, moment);  // the old maximiser's weight against v
                if (r > zero) {
                    tt = r * tt + ss * moment;
                    ss = r * ss + A(1);
                } else {
                    tt = zero;
                    ss = A(1);
                }
                m = v;
            } else {
                A moment;
                const A e = sp_weight(v, m, beta, moment);
                if (e > zero) {
                    ss += e;
                    tt += moment;
                }
            }
        };
        Walk<W>::run(win, xbase, online);
        s.add(ss + nan);  // NaN propagates to y and lse
        t.add(tt + nan);
        return;
    }
    auto extreme = [&](I off) {
        const A v = sp_acc(x[off]);
        if (beta > zero ? v > m : v < m) m = v;
    };
    Walk<W>::run(win, xbase, extreme);
    auto sum = [&](I off) {
        const A v = sp_acc(x[off]);
        if (v != v) {  // NaN propagates to y and lse
            s.add(v);
            t.add(v);
            return;
        }
        if (v == m) {  // e = 1 and x - m = 0 (also for an infinite m)
            s.add(A(1));
            return;
        }
        A moment;
        const A e = sp_weight(v, m, beta, moment);
        if (e > zero) {
            s.add(e);
            t.add(moment);
        }
    };
    Walk<W>::run(win, xbase, sum);
}

// The forward's weight of a cell with value v in the window at output offset
// at, for the backward where exp(beta*x - lse) may have overflowed (NUMERICS.md
// rule 4): the window's cells are walked again as the forward walks them.
template <typename T, typename A, typename I, int W>
__device__ __forceinline__ A sp_fallback_weight(const T* __restrict__ x, const LoopTable& tab, I at, A v, A beta) {
    Slots<I, W> win;
    I xbase, count;
    sp_window_at<I, W>(tab, at, win, xbase, count);
    A m;
    SpSum<A> s, t;
    sp_stats<T, A, I, W>(x, win, xbase, beta, m, s, t);
    A moment;
    const A e = v == m ? A(1) : v != v ? v : sp_weight(v, m, beta, moment);
    return e / s.value();
}

// True when exp(beta*x - lse) is the weight of every finite x of a window with
// this lse (softpool_nd.cpu.kernels._lse_ok): always for |beta| <= 1, where
// beta*x and lse cannot overflow; otherwise lse must be finite and far enough
// from -inf that a beta*x overflowed to -inf has weight 0.
template <typename A> __device__ __forceinline__ bool sp_lse_ok(A l, A beta) {
    return !(beta > A(1) || beta < A(-1)) || (l > A(-1e38) && sp_finite(l));
}

// 1 + beta*(v - y) on halved values, as the CPU kernels take it: v/2 - y/2 cannot overflow.
template <typename A> __device__ __forceinline__ A sp_bracket(A v, A yw, A beta) {
    return A(1) + beta * (v * A(0.5) - yw * A(0.5)) * A(2);
}

template <typename T, typename A, typename I, int W>
__global__ void softpool_forward(const T* __restrict__ x, T* __restrict__ y, A* __restrict__ lse,
                                 const LoopTable tab, const A beta, const I n_out) {
    const A zero = A(0);
    // unroll 1: unrolling would compute the trip count with an integer division
#pragma unroll 1
    for (I idx = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; idx < n_out; idx += (I)blockDim.x * (I)gridDim.x) {
        Slots<I, W> win;
        I xbase, ybase, count;
        sp_window<I, W>(tab, idx, win, xbase, ybase, count);
        if (beta == zero) {  // the plain mean: sum, then divide by the count
            SpSum<A> t;
            auto mean = [&](I off) { t.add(sp_acc(x[off])); };
            Walk<W>::run(win, xbase, mean);
            const A total = A(count);  // the real cells, counted by the decode
            y[ybase] = Store<T>::from(t.value() / total);
            if (lse != nullptr) lse[ybase] = sp_log(total);
            continue;
        }
        A m;
        SpSum<A> s, t;
        sp_stats<T, A, I, W>(x, win, xbase, beta, m, s, t);
        const A total = s.value();
        y[ybase] = Store<T>::from(m + t.value() / total);
        if (lse != nullptr) lse[ybase] = beta * m + sp_log(total);  // null: pool() asked for y only
    }
}

// Backward, one thread per input cell, gathering over the windows that hold it.
// Overlap false is the fast path for windows that never share a cell
// (stride >= dilated span on every axis): at most one window per cell, no
// loop over windows. W bounds the window dimensions the rare paths walk
// (the forward's weights where lse may have overflowed).
//
// grad_x_j = sum over windows w holding j of w_j * gy_w * (1 + beta*(x_j - y_w))
// (the bracket for the exact gradient only), w_j = exp(beta*x_j - lse_w) where
// sp_lse_ok, else the forward's weight (NUMERICS.md rule 4); beta == 0 is the
// mean's derivative, gy_w / count_w (rule 2).
template <typename T, typename A, typename I, bool Overlap, int W>
__global__ void softpool_backward(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ y,
                                  const A* __restrict__ lse, T* __restrict__ gx, const LoopTable tab,
                                  const A beta, const int exact, const I n_in) {
    const int nd = (int)tab.ndim;
    const A zero = A(0);
    const bool bracket = exact && beta != zero;
    // unroll 1: unrolling would compute the trip count with an integer division
#pragma unroll 1
    for (I idx = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; idx < n_in; idx += (I)blockDim.x * (I)gridDim.x) {
        Slots<I, W> wins;
        wins.clear();
        bool any = true;
        I rem = idx, xbase = 0, gbase = 0, ybase = 0, count = 1;
        for (int a = nd - 1; a >= 0; --a) {
            const long long* r = tab.r[a];
            const I L = (I)r[COL_L], O = (I)r[COL_O], K = (I)r[COL_K], S = (I)r[COL_S], D = (I)r[COL_D],
                    P = (I)r[COL_P], YS = (I)r[COL_YS];
            const unsigned long long(*f)[2] = tab.div[a];
            const I q = sp_div(rem, f[DIV_L]);
            const I j = rem - q * L;
            rem = q;
            xbase += j * (I)r[COL_XS];
            gbase += j * (I)r[COL_GS];
            if (sp_bit(tab.batch, a)) {  // the one window holding cell j is output j, with one real cell here
                ybase += j * YS;
                continue;
            }
            const I t = j + P;
            const I tS = sp_div(t, f[DIV_S]);
            if (!Overlap) {
                const I off = t - tS * S;
                any = any && tS < O && off == sp_div(off, f[DIV_D]) * D && off <= (K - 1) * D;
                ybase += tS * YS;
                if (beta == zero) {  // the window's real cells along this row
                    I lo, hi;
                    sp_clip<I>(tS * S - P, K, D, L, f[DIV_D], lo, hi);
                    count *= hi - lo;
                }
                continue;
            }
            // windows o with o*S <= t <= o*S + (K-1)*D and (t - o*S) % D == 0
            const I far = t - (K - 1) * D;
            const I lo = far > 0 ? sp_div(far + S - 1, f[DIV_S]) : I(0);
            const I hi = tS + 1 < O ? tS + 1 : O;
            I first = lo;
            for (; first < hi; ++first) {  // at most D / gcd(S, D) steps
                const I off = t - first * S;
                if (off == sp_div(off, f[DIV_D]) * D) break;
            }
            if (first >= hi) {
                any = false;
                continue;
            }
            // members recur every E = D / gcd(S, D) windows
            const I every = (I)tab.every[a];
            ybase += first * YS;
            wins.add(sp_div(hi - 1 - first, f[DIV_E]) + 1, every * YS);
        }
        A g = zero;
        if (any) {
            const A v = sp_acc(x[xbase]);
            const A z = beta * v;
            auto gather = [&](I w_at) {
                const A gw = sp_acc(gy[w_at]);
                if (beta == zero) {
                    I n = count;
                    if (Overlap) {
                        Slots<I, 1> none;
                        I first;
                        sp_window_at<I, 1>(tab, w_at, none, first, n);
                    }
                    g += gw / A(n);
                    return;
                }
                const A l = lse[w_at];
                const A w = sp_lse_ok(l, beta) ? sp_exp(z - l) : sp_fallback_weight<T, A, I, W>(x, tab, w_at, v, beta);
                if (w != zero) {
                    A term = w * gw;
                    if (bracket) term *= sp_bracket(v, sp_acc(y[w_at]), beta);
                    g += term;
                }
            };
            if (Overlap) Walk<W>::run(wins, ybase, gather);
            else gather(ybase);
        }
        gx[gbase] = Store<T>::from(g);
    }
}

// Backward for windows that never share a cell (stride >= dilated span on
// every axis, a tiling included) when grad_x has x's layout: one thread per
// window, walking its cells as the forward does. The cell-gathering kernel
// above decodes every input cell's position and its window's (a division per
// row for each); here a window is decoded once, gy, y and lse are read once
// for all its cells, and where lse may have overflowed the window's maximiser
// and weight sum (rule 4) are found once, not once per cell. Every cell has
// one writer: no atomics, deterministic. Cells in no window (gaps, dilation
// holes, a tail no window reaches) are zeroed by launch.py before the launch.
// Each cell's value is the one the gathering kernel computes, operation for
// operation (g starts at +0 there too).
template <typename T, typename A, typename I, int W>
__global__ void softpool_backward_windows(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ y,
                                          const A* __restrict__ lse, T* __restrict__ gx, const LoopTable tab,
                                          const A beta, const int exact, const I n_out) {
    const A zero = A(0);
    const bool bracket = exact && beta != zero;
#pragma unroll 1
    for (I idx = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; idx < n_out; idx += (I)blockDim.x * (I)gridDim.x) {
        Slots<I, W> win;
        I xbase, ybase, count;
        sp_window<I, W>(tab, idx, win, xbase, ybase, count);
        const A gw = sp_acc(gy[ybase]);
        if (beta == zero) {  // the mean's derivative, gy / count (rule 2)
            A g = zero;
            g += gw / A(count);
            const T stored = Store<T>::from(g);
            auto mean = [&](I off) { gx[off] = stored; };
            Walk<W>::run(win, xbase, mean);
            continue;
        }
        const A l = lse[ybase];
        const A yw = bracket ? sp_acc(y[ybase]) : zero;
        const bool ok = sp_lse_ok(l, beta);
        A m = zero, total = A(1);
        if (!ok) {
            SpSum<A> s, t;
            sp_stats<T, A, I, W>(x, win, xbase, beta, m, s, t);
            total = s.value();
        }
        auto cell = [&](I off) {
            const A v = sp_acc(x[off]);
            A w;
            if (ok) {
                w = sp_exp(beta * v - l);
            } else {
                A moment;
                w = (v == m ? A(1) : v != v ? v : sp_weight(v, m, beta, moment)) / total;
            }
            A g = zero;
            if (w != zero) {
                A term = w * gw;
                if (bracket) term *= sp_bracket(v, yw, beta);
                g += term;
            }
            gx[off] = Store<T>::from(g);
        };
        Walk<W>::run(win, xbase, cell);
    }
}

// Forward-mode derivative, one thread per output cell (dx shares x's layout):
// dy_W = sum_i w_i (1 + beta (x_i - y_W)) dx_i with w_i = exp(beta x_i - lse_W)
// (the bracket on halved values), the mean of dx over the window's real cells
// for beta == 0. Where lse_W or some beta*x_i may have overflowed (NUMERICS.md
// rule 4) the weights are the forward's, from the window's maximiser m of
// beta*x: with a_i = beta (x_i - m) (beta*x_i - beta*m where x_i - m
// overflowed) and e_i = exp(a_i), beta (y - m) = sum(e a) / sum(e) and
// dy = sum e (1 + a - sum(e a)/sum(e)) dx / sum(e), every term finite; terms
// with e_i == 0 are skipped (softpool_nd.cpu.jvp does the same).
template <typename T, typename A, typename I, int W>
__global__ void softpool_jvp(const T* __restrict__ dx, const T* __restrict__ x, const T* __restrict__ y,
                             const A* __restrict__ lse, T* __restrict__ dy, const LoopTable tab, const A beta,
                             const I n_out) {
    const A zero = A(0), one = A(1);
#pragma unroll 1
    for (I idx = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; idx < n_out; idx += (I)blockDim.x * (I)gridDim.x) {
        Slots<I, W> win;
        I xbase, ybase, count;
        sp_window<I, W>(tab, idx, win, xbase, ybase, count);
        A acc = zero;
        if (beta == zero) {
            auto mean = [&](I off) { acc += sp_acc(dx[off]); };
            Walk<W>::run(win, xbase, mean);
            dy[ybase] = Store<T>::from(acc / A(count));
            continue;
        }
        const A yw = sp_acc(y[ybase]), l = lse[ybase];
        bool direct = sp_finite(l);  // as softpool_nd.cpu.jvp: lse and every beta*x finite
        if (direct) {
            auto tangent = [&](I off) {
                const A v = sp_acc(x[off]);
                const A z = beta * v;
                direct = direct && sp_finite(z);
                const A w = sp_exp(z - l);
                if (w != zero) acc += w * sp_bracket(v, yw, beta) * sp_acc(dx[off]);
            };
            Walk<W>::run(win, xbase, tangent);
        }
        if (!direct) {
            A m = sp_acc(x[xbase]);
            auto extreme = [&](I off) {
                const A v = sp_acc(x[off]);
                if (beta > zero ? v > m : v < m) m = v;
            };
            Walk<W>::run(win, xbase, extreme);
            A s = zero, sa = zero, sb = zero, sc = zero;
            auto limit = [&](I off) {
                const A v = sp_acc(x[off]);
                A e = one, a = zero;
                if (v != m) {
                    a = v - m;
                    a = sp_finite(a) ? beta * a : beta * v - beta * m;
                    // a <= 0 by the choice of m; NaN (an overflowed beta*v - beta*m) is the limit weight 0
                    e = a <= zero ? sp_exp(a) : zero;
                }
                if (e > zero) {
                    const A d = sp_acc(dx[off]);
                    s += e;
                    sa += e * d;
                    sb += e * a;
                    sc += e * a * d;
                }
            };
            Walk<W>::run(win, xbase, limit);
            acc = (sa + sc - sb / s * sa) / s;
        }
        dy[ybase] = Store<T>::from(acc);
    }
}
