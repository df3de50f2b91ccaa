// XPCS correlator kernels (reduction/xpcs/opencl.py). Sums in float64 (cl_khr_fp64).
//
// Defines: T (the frame type), R (2*dpl: the level-0 lags 1..R, and the history kept per level),
// NLEV (multi-tau levels), VW (pixels per work-item), TS (two-time tile side in work-items).
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

// One work-item per VW consecutive pixels of the partition (only those pixels are uploaded; VW = 8
// on CPU devices: SIMD across pixels, 1 on GPUs: coalesced reads), npix a multiple of VW. Frames of
// the block (nframes, npix) in time order. Binned frames are sums of pairs (as the numpy correlator),
// so integer counts give integer-valued sums: the same bits as numpy whatever the order.
//   G2      (K, npix)        the sums of products, lag k
//   hist0   (R, npix)        level 0: hist0[j] = the frame j+1 frames ago (0 before the first)
//   ring    (NLEV, R, npix)  level l >= 1: binned frame n at slot n % R (0 before the first)
//   carry   (NLEV, npix)     the first frame of an unfinished pair at each level
//   seen    (NLEV)           binned frames seen at each level before this block
//   first_k (NLEV + 1)       delays [first_k[l], first_k[l+1]) are level l's; lag_bins[k] their lag in bins
#if VW == 1
typedef double dvec;
#define LOADT(a, i) ((double)(a)[i])
#define LOADD(a, i) ((a)[i])
#define STORED(v, a, i) ((a)[i] = (v))
#else
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
typedef CAT(double, VW) dvec;
#define LOADT(a, i) CAT(convert_double, VW)(CAT(vload, VW)(0, (a) + (i)))
#define LOADD(a, i) CAT(vload, VW)(0, (a) + (i))
#define STORED(v, a, i) CAT(vstore, VW)((v), 0, (a) + (i))
#endif

__kernel void multitau(__global const T *frames, const int nframes, const int npix, const int k0,
                       __global double *G2, __global double *hist0, __global double *ring,
                       __global double *carry, __global const int *seen_in,
                       __global const int *first_k, __global const int *lag_bins) {
    const int p = get_global_id(0) * VW;
    if (p >= npix) return;
    dvec hist[R], acc[R];
    for (int j = 0; j < R; j++) { hist[j] = LOADD(hist0, (size_t)j * npix + p); acc[j] = 0.0; }
    int seen[NLEV];
    for (int l = 0; l < NLEV; l++) seen[l] = seen_in[l];
    for (int t = 0; t < nframes; t++) {
        dvec v = LOADT(frames, (size_t)t * npix + p);
        #pragma unroll
        for (int j = 0; j < R; j++) acc[j] += v * hist[j];
        #pragma unroll
        for (int j = R - 1; j > 0; j--) hist[j] = hist[j - 1];
        hist[0] = v;
        int n = seen[0]++;
        int l = 0;
        while (l + 1 < NLEV && (n & 1)) {  // frame n closes a pair: its sum is level l+1's next frame
            v += LOADD(carry, (size_t)l * npix + p);
            l++;
            n = seen[l]++;
            const size_t base = (size_t)l * R * npix + p;
            for (int k = first_k[l]; k < first_k[l + 1]; k++) {
                const int slot = ((n - lag_bins[k]) % R + R) % R;
                const size_t at = (size_t)k * npix + p;
                STORED(LOADD(G2, at) + v * LOADD(ring, base + (size_t)slot * npix), G2, at);
            }
            STORED(v, ring, base + (size_t)(n % R) * npix);
        }
        if (l + 1 < NLEV) STORED(v, carry, (size_t)l * npix + p);  // n is even here: the first of a pair
    }
    for (int j = 0; j < R; j++) {
        STORED(hist[j], hist0, (size_t)j * npix + p);
        if (j < k0) STORED(LOADD(G2, (size_t)j * npix + p) + acc[j], G2, (size_t)j * npix + p);
    }
}

// out[a, b] = sum_p x[i0 + a, p] * x[j0 + b, p] for a tile (ni, nj) of the two-time product, by
// TS x TS work-groups staging TS x TS blocks of the series in local memory; the groups wholly below
// the diagonal (i > j everywhere) do nothing (their entries are never read).
__kernel void twotime_tile(__global const float *x, const int npix, const int i0, const int j0, const int ni,
                           const int nj, __global double *out) {
    const int la = get_local_id(0), lb = get_local_id(1);
    const int ga = get_group_id(0) * TS, gb = get_group_id(1) * TS;
    if (i0 + ga > j0 + gb + TS - 1) return;
    __local float xa[TS][TS + 1], xb[TS][TS + 1];
    double acc = 0.0;
    for (int p0 = 0; p0 < npix; p0 += TS) {
        const int col = p0 + lb;
        xa[la][lb] = (ga + la < ni && col < npix) ? x[(size_t)(i0 + ga + la) * npix + col] : 0.0f;
        xb[la][lb] = (gb + la < nj && col < npix) ? x[(size_t)(j0 + gb + la) * npix + col] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int q = 0; q < TS; q++) acc += (double)xa[la][q] * (double)xb[lb][q];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (ga + la < ni && gb + lb < nj) out[(size_t)(ga + la) * nj + gb + lb] = acc;
}
