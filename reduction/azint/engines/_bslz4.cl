/* Bitshuffle-LZ4 chunks decompressed on the device: the kernels of bslz4_opencl.py.

   A chunk (HDF5 bitshuffle filter, LZ4 variant) is
     uint64 BE  total uncompressed bytes        \  checked on the host
     uint32 BE  block bytes (a multiple of 8 elements)  /
     per block: uint32 BE compressed size, then an LZ4 block (no frame) of the block's bitshuffled bytes
     the trailing (elements % 8) elements, raw.
   The last block holds the remaining elements rounded down to a multiple of 8.

   `bslz4_blocks`: one work-item per chunk walks its block headers (where each LZ4 block starts and
   how long it is) and copies the raw tail.  `bslz4_decode`: one work-group per (block, chunk)
   stages the LZ4 block in local memory, decodes it there (every work-item parses the same tokens,
   the copies are shared), then bit-unshuffles it into the frame: each work-item takes 8 elements,
   gathers their bit planes byte by byte and transposes 8x8 bits.

   Every read and write is bounded: a bad header, a block running past its chunk, a literal or
   match running past its block, an offset before the block's start or a block that does not decode
   to its exact size sets the chunk's status (1: block headers, 2: LZ4 stream) and writes nothing
   more for that block.  Build option: ITEMSIZE (bytes per element).
*/

#define BAD_BLOCKS 1
#define BAD_STREAM 2

inline uint load_be32(global const uchar *p) {
    return ((uint)p[0] << 24) | ((uint)p[1] << 16) | ((uint)p[2] << 8) | (uint)p[3];
}

kernel void bslz4_blocks(global const uchar *src, global const ulong *chunk_start, const uint nchunks,
                         const uint nblocks, const uint cmp_bound, const uint tail_bytes, const ulong frame_bytes,
                         global ulong *block_pos, global uint *block_len, global uchar *out, global int *status) {
    const uint b = get_global_id(0);
    if (b >= nchunks)
        return;
    const ulong end = chunk_start[b + 1];
    ulong pos = chunk_start[b] + 12;
    int err = pos > end ? BAD_BLOCKS : 0;
    for (uint k = 0; k < nblocks && !err; ++k) {
        if (end - pos < 4) {
            err = BAD_BLOCKS;
            break;
        }
        const uint len = load_be32(src + pos);
        pos += 4;
        if (len == 0 || len > cmp_bound || len > end - pos) {
            err = BAD_BLOCKS;
            break;
        }
        block_pos[(ulong)b * nblocks + k] = pos;
        block_len[(ulong)b * nblocks + k] = len;
        pos += len;
    }
    if (!err && end - pos != tail_bytes)
        err = BAD_BLOCKS;
    if (!err) {
        global uchar *dst = out + (ulong)b * frame_bytes + (frame_bytes - tail_bytes);
        for (uint i = 0; i < tail_bytes; ++i)
            dst[i] = src[pos + i];
    }
    status[b] = err;
}

/* 8x8 bit transpose of x (byte r = row r, bit c of it = column c): byte c, bit r of the result. */
inline ulong transpose8(ulong x) {
    ulong t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAUL;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCUL;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0UL;
    x = x ^ t ^ (t << 28);
    return x;
}

kernel void bslz4_decode(global const uchar *src, global const ulong *block_pos, global const uint *block_len,
                         const uint nblocks, const uint block_bytes, const uint last_bytes, const ulong frame_bytes,
                         global uchar *out, global int *status, local uchar *cmp, local uchar *dec) {
    const uint k = get_group_id(0), b = get_group_id(1);
    const uint lid = get_local_id(0), wg = get_local_size(0);
    if (status[b] != 0)  /* its block headers are bad: nothing to decode (the same for the whole group) */
        return;
    const uint size = (k + 1 == nblocks) ? last_bytes : block_bytes;
    const ulong at = block_pos[(ulong)b * nblocks + k];
    const uint len = block_len[(ulong)b * nblocks + k];  /* <= cmp_bound, checked by bslz4_blocks */
    for (uint i = lid; i < len; i += wg)
        cmp[i] = src[at + i];
    barrier(CLK_LOCAL_MEM_FENCE);

    /* LZ4 block: sequences of [token][literal length+][literals][offset LE16][match length+] */
    uint ip = 0, op = 0;
    int err = 0;
    while (ip < len) {
        const uint token = cmp[ip++];
        uint lit = token >> 4;
        if (lit == 15) {
            uint c = 255;
            while (c == 255 && ip < len) {
                c = cmp[ip++];
                lit += c;
            }
            if (c == 255) {
                err = 1;
                break;
            }
        }
        if (lit > len - ip || lit > size - op) {
            err = 1;
            break;
        }
        for (uint i = lid; i < lit; i += wg)
            dec[op + i] = cmp[ip + i];
        ip += lit;
        op += lit;
        if (ip == len)  /* the last sequence: literals only */
            break;
        if (len - ip < 2) {
            err = 1;
            break;
        }
        const uint offset = (uint)cmp[ip] | ((uint)cmp[ip + 1] << 8);
        ip += 2;
        uint match = token & 15;
        if (match == 15) {
            uint c = 255;
            while (c == 255 && ip < len) {
                c = cmp[ip++];
                match += c;
            }
            if (c == 255) {
                err = 1;
                break;
            }
        }
        match += 4;
        if (offset == 0 || offset > op || match > size - op) {
            err = 1;
            break;
        }
        barrier(CLK_LOCAL_MEM_FENCE);  /* the bytes a match repeats were written by other work-items */
        for (uint i = lid; i < match; i += wg)  /* overlapping matches repeat a period of `offset` bytes */
            dec[op + i] = dec[op - offset + (offset >= match ? i : i % offset)];
        op += match;
    }
    if (err || op != size) {
        if (lid == 0)
            atomic_or(status + b, BAD_STREAM);
        return;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* bit-unshuffle: bit plane p = 8 * byte + bit holds that bit of every element, n/8 bytes each */
    const uint groups = size / (8 * ITEMSIZE);  /* groups of 8 elements */
    global uchar *dst = out + (ulong)b * frame_bytes + (ulong)k * block_bytes;
    for (uint g = lid; g < groups; g += wg) {
        uchar elems[8 * ITEMSIZE];
        for (uint byte = 0; byte < ITEMSIZE; ++byte) {
            ulong x = 0;
            for (uint r = 0; r < 8; ++r)
                x |= (ulong)dec[(byte * 8 + r) * groups + g] << (8 * r);
            x = transpose8(x);
            for (uint j = 0; j < 8; ++j)
                elems[j * ITEMSIZE + byte] = (uchar)(x >> (8 * j));
        }
        global uchar *to = dst + (ulong)g * 8 * ITEMSIZE;
        for (uint i = 0; i < 8 * ITEMSIZE; ++i)
            to[i] = elems[i];
    }
}
