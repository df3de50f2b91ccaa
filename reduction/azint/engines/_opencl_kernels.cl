/* Batched sparse reduction of detector frames: the kernels of reduction/engines/opencl_engine.py.

   signal[b, k]   = sum_j W[k, j] * x[b, j]              (valid entries only)
   variance[b, k] = sum_j W[k, j]^2 * max(x[b, j], 1)

   Frames x are read as they come: (nframes, npix) in their own integer or float type (XT), in
   natural order, never transposed or converted on the host.  The matrix is laid out once in
   *tiles*: runs of consecutive non-empty pixels (columns of W); each distinct bin a tile touches
   is one of its "slots".  Each tile adds its entries into its own slots of a partial buffer (no
   atomics, deterministic); `combine` then sums, for every bin, the slots of the tiles that
   touch it.

   Layout shared by all kernels (host side: TileLayout in opencl_engine.py):
     tile_pos[t] .. tile_pos[t+1]   ordered pixels of tile t (positions q)
     tile_slot[t] .. tile_slot[t+1] slots of tile t (one per distinct bin it touches)
     pos_pix[q]                     pixel (column) index of position q
     part[(slot * 2 + c) * bp + b]  partial sums, c = 0 signal, 1 variance; bp = padded frames
   Invalid entries (integers: negative or the type's maximum; floats: NaN/inf) add nothing and
   are listed as (frame, pixel) pairs, at most `cap` per list; counters past `cap` make the host
   rescan that tile.

   Build options (-D): CPU_KERNELS or GROUP_KERNELS (which set to build: one program holds one
   set), XT (frame element type), XT8 (its 8-vector), XKIND (0 unsigned, 1 signed, 2 float),
   XSIZE (its size in bytes), XMAXV (the type's maximum, integers), WT (the weights' type: float
   where no sum can cancel, i.e. integer frames and non-negative weights, else double), PMAX and
   FB (group kernel: pixels per tile and frames staged in local memory).  Sums are double: every
   OpenCL device the engine accepts has cl_khr_fp64.

   Portability: vector `select`, ?: on vectors and double8 builtins (fmax, isfinite, any) are
   avoided on purpose: PoCL 3.0 (LLVM 14) aborts or miscompiles them on CPUs without AVX-512;
   masks are applied with bitwise operators instead.
*/
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

/* ---- validity of one value / of 8 values (mask: -1 valid, 0 invalid) ----------------------- */
#if XKIND == 0
#define VALID1(v) ((v) != (XT)(XMAXV))
#define VALID8(v, d) convert_long8((v) != (XT8)(XMAXV))
#elif XKIND == 1
#define VALID1(v) ((v) >= (XT)0 && (v) != (XT)(XMAXV))
#define VALID8(v, d) (convert_long8((v) >= (XT8)0) & convert_long8((v) != (XT8)(XMAXV)))
#else
#define VALID1(v) isfinite((double)(v))
#define VALID8(v, d) ((as_long8(d) & (long8)EXP_BITS) != (long8)EXP_BITS)
#endif
#define EXP_BITS 0x7FF0000000000000L

/* double8 from XT8: no conversion call for double frames (PoCL 3.0 crashed on the identity one) */
#if XSIZE == 8
#define TO_DOUBLE8(v) (v)
#else
#define TO_DOUBLE8(v) convert_double8(v)
#endif

/* Vector helpers written with operators only: PoCL 3.0's pip build warns that double8/long8
   builtins "change the ABI" without AVX-512 and calling them (fmax, isfinite, any) crashed. */
#define MAX1_8(d) as_double8((as_long8(d) & ~((d) < (double8)1.0)) | \
                             (as_long8((double8)1.0) & ((d) < (double8)1.0)))
#define ANY8(m) ((((m).s0 | (m).s1) | ((m).s2 | (m).s3)) | (((m).s4 | (m).s5) | ((m).s6 | (m).s7)))

/* ---- CPU kernel: one work-item per (tile, group of 8*NV frames) ----------------------------
   A work-item walks its tile's pixels in order; for each pixel it gathers the 8*NV frames' values
   into NV double8 vectors (SIMD across frames: each matrix entry is read once per group) and adds
   w * x and w^2 * max(x, 1) into its slots, which stay in L1 (a tile touches few bins).
   Frames past `nframes` (padding of the last group) repeat the last frame and are never read back.
*/
#define CPU_KERNEL(NAME, NV, VAR)                                                                 \
__kernel void NAME(__global const XT *x, const long npix, const int nframes,                     \
                   __global const int *tile_pos, __global const int *tile_slot,                  \
                   __global const int *pos_pix, __global const int *pos_ptr,                     \
                   __global const int *ent_slot, __global const WT *ent_w,                        \
                   __global double8 *part, const int bp8,                                        \
                   __global int *ninv, __global int2 *inv, const int cap)                       \
{                                                                                                \
    const int t = get_global_id(0), g = get_global_id(1), ng = get_global_size(1);               \
    const int b0 = g * 8 * NV;                                                                   \
    volatile __global const XT *xp[8 * NV]; /* volatile: scalar loads, not slow vpgather */      \
    _Pragma("unroll") for (int i = 0; i < 8 * NV; i++)                                                             \
        xp[i] = x + (long)min(b0 + i, nframes - 1) * npix;                                       \
    const int s0 = tile_slot[t], s1 = tile_slot[t + 1];                                          \
    for (int s = s0; s < s1; s++)                                                                \
        for (int v = 0; v < 2 * NV; v++)                                                         \
            part[(long)s * 2 * bp8 + (v / NV) * bp8 + g * NV + v % NV] = (double8)0.0;           \
    int nbad = 0;                                                                                \
    const int list = t * ng + g;                                                                 \
    const int q1 = tile_pos[t + 1];                                                              \
    for (int q = tile_pos[t]; q < q1; q++) {                                                     \
        const int j = pos_pix[q];                                                                \
        double8 xs[NV], xq[NV];                                                                  \
        long8 bad = (long8)0;                                                                    \
        _Pragma("unroll") for (int v = 0; v < NV; v++) {                                                           \
            const int c = 8 * v;                                                                 \
            const XT8 xi = (XT8)(xp[c][j], xp[c + 1][j], xp[c + 2][j], xp[c + 3][j],             \
                                 xp[c + 4][j], xp[c + 5][j], xp[c + 6][j], xp[c + 7][j]);        \
            const double8 xd = TO_DOUBLE8(xi);                                                      \
            const long8 ok = VALID8(xi, xd);                                                     \
            xs[v] = as_double8(as_long8(xd) & ok);                                               \
            xq[v] = as_double8(as_long8(MAX1_8(xd)) & ok);                                    \
            bad |= ~ok;                                                                          \
        }                                                                                        \
        if (ANY8(bad)) {                                                                         \
            for (int i = 0; i < 8 * NV && b0 + i < nframes; i++) {                               \
                const XT xv = xp[i][j];                                                          \
                if (!(VALID1(xv))) {                                                             \
                    if (nbad < cap) inv[(long)list * cap + nbad] = (int2)(b0 + i, j);            \
                    nbad++;                                                                      \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        const int p1 = pos_ptr[q + 1];                                                           \
        for (int p = pos_ptr[q]; p < p1; p++) {                                                  \
            const long base = (long)ent_slot[p] * 2 * bp8 + g * NV;                              \
            const double w = ent_w[p];                                                           \
            _Pragma("unroll") for (int v = 0; v < NV; v++) {                                                       \
                part[base + v] += w * xs[v];                                                     \
                if (VAR) part[base + bp8 + v] += (w * w) * xq[v];                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    ninv[list] = nbad;                                                                           \
}

#ifdef CPU_KERNELS
CPU_KERNEL(reduce_cpu1_s, 1, 0)
CPU_KERNEL(reduce_cpu2_s, 2, 0)
CPU_KERNEL(reduce_cpu4_s, 4, 0)
CPU_KERNEL(reduce_cpu1_v, 1, 1)
CPU_KERNEL(reduce_cpu2_v, 2, 1)
CPU_KERNEL(reduce_cpu4_v, 4, 1)
#endif

/* ---- GPU kernel: one work-group per tile --------------------------------------------------
   For FB frames at a time, the work-group stages the tile's pixel values in local memory
   (coalesced reads: a tile's pixels are runs of consecutive pixels), checked and converted once;
   then each work-item sums the entries of a (slot, staged frame) pair (ent_* sorted by slot
   here: slot_ptr) and writes that partial sum.  No atomics but the invalid-list counter.
*/
#define GROUP_KERNEL(NAME, VAR)                                                                   \
__kernel void NAME(__global const XT *x, const long npix, const int nframes,                     \
                   __global const int *tile_pos, __global const int *tile_slot,                  \
                   __global const int *pos_pix, __global const int *slot_ptr,                    \
                   __global const ushort *ent_pos, __global const WT *ent_w,                      \
                   __global double *part, const int bp,                                          \
                   __global int *ninv, __global int2 *inv, const int cap)                       \
{                                                                                                \
    __local double xs[FB * PMAX], xq[FB * PMAX];                                                 \
    const int t = get_group_id(0), lid = get_local_id(0), wg = get_local_size(0);                \
    const int q0 = tile_pos[t], np = tile_pos[t + 1] - q0;                                       \
    const int s0 = tile_slot[t], s1 = tile_slot[t + 1];                                          \
    for (int f0 = 0; f0 < nframes; f0 += FB) {                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                                            \
        for (int i = lid; i < FB * np; i += wg) {                                                \
            const int f = i / np, q = i - f * np, b = f0 + f;                                    \
            double vs = 0.0, vq = 0.0;                                                           \
            if (b < nframes) {                                                                   \
                const int j = pos_pix[q0 + q];                                                   \
                const XT xi = x[(long)b * npix + j];                                             \
                if (VALID1(xi)) {                                                                \
                    vs = (double)xi;                                                             \
                    vq = fmax(vs, 1.0);                                                          \
                } else {                                                                         \
                    const int n = atomic_inc(&ninv[t]);                                          \
                    if (n < cap) inv[(long)t * cap + n] = (int2)(b, j);                          \
                }                                                                                \
            }                                                                                    \
            xs[f * PMAX + q] = vs;                                                               \
            xq[f * PMAX + q] = vq;                                                               \
        }                                                                                        \
        barrier(CLK_LOCAL_MEM_FENCE);                                                            \
        const int nf = min(FB, nframes - f0), ns = s1 - s0;                                      \
        for (int i = lid; i < ns * nf; i += wg) {                                                \
            const int f = i / ns, s = s0 + i - f * ns;                                           \
            const int p0 = slot_ptr[s], p1 = slot_ptr[s + 1];                                    \
            double as = 0.0, av = 0.0;                                                           \
            for (int p = p0; p < p1; p++) {                                                      \
                const double w = ent_w[p];                                                       \
                const int k = f * PMAX + ent_pos[p];                                             \
                as += w * xs[k];                                                                 \
                if (VAR) av += (w * w) * xq[k];                                                  \
            }                                                                                    \
            part[((long)s * 2) * bp + f0 + f] = as;                                              \
            if (VAR) part[((long)s * 2 + 1) * bp + f0 + f] = av;                                 \
        }                                                                                        \
    }                                                                                            \
}

#ifdef GROUP_KERNELS
GROUP_KERNEL(reduce_group_s, 0)
GROUP_KERNEL(reduce_group_v, 1)
#endif

/* ---- combine: out[f0 + b, k] = sum of bin k's slots, for frames b in [0, nframes) ------------ */
__kernel void combine(__global const double *part, const int bp, const int nframes, const int f0,
                      __global const int *bin_ptr, __global const int *bin_slot,
                      const int nbins, const int with_var,
                      __global double *signal, __global double *variance)
{
    const int k = get_global_id(0), b = get_global_id(1);
    if (k >= nbins || b >= nframes) return;
    double s = 0.0, v = 0.0;
    for (int i = bin_ptr[k]; i < bin_ptr[k + 1]; i++) {
        const long base = (long)bin_slot[i] * 2 * bp + b;
        s += part[base];
        if (with_var) v += part[base + bp];
    }
    signal[(long)(f0 + b) * nbins + k] = s;
    if (with_var) variance[(long)(f0 + b) * nbins + k] = v;
}
