/*
 * XXH64 (Yann Collet's xxHash, 64-bit variant), one-shot, written from the published algorithm
 * (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md). Output equals xxhash-wasm's
 * h64Raw(data) with seed 0, which the journal and the manifests already hold; a unit test compares
 * the two on many lengths and offsets.
 */
#ifndef MS_RESUME_XXH64_H
#define MS_RESUME_XXH64_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MS_P1 11400714785074694791ULL
#define MS_P2 14029467366897019727ULL
#define MS_P3 1609587929392839161ULL
#define MS_P4 9650029242287828579ULL
#define MS_P5 2870177450012600261ULL

static inline uint64_t ms_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t ms_read64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static inline uint32_t ms_read32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

static inline uint64_t ms_round(uint64_t acc, uint64_t input) {
  acc += input * MS_P2;
  acc = ms_rotl64(acc, 31);
  return acc * MS_P1;
}

static inline uint64_t ms_merge(uint64_t acc, uint64_t val) {
  acc ^= ms_round(0, val);
  return acc * MS_P1 + MS_P4;
}

static inline uint64_t ms_xxh64(const uint8_t *p, size_t len, uint64_t seed) {
  const uint8_t *end = p + len;
  uint64_t h;
  if (len >= 32) {
    const uint8_t *limit = end - 32;
    uint64_t v1 = seed + MS_P1 + MS_P2, v2 = seed + MS_P2, v3 = seed, v4 = seed - MS_P1;
    do {
      v1 = ms_round(v1, ms_read64(p));
      v2 = ms_round(v2, ms_read64(p + 8));
      v3 = ms_round(v3, ms_read64(p + 16));
      v4 = ms_round(v4, ms_read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = ms_rotl64(v1, 1) + ms_rotl64(v2, 7) + ms_rotl64(v3, 12) + ms_rotl64(v4, 18);
    h = ms_merge(h, v1);
    h = ms_merge(h, v2);
    h = ms_merge(h, v3);
    h = ms_merge(h, v4);
  } else {
    h = seed + MS_P5;
  }
  h += (uint64_t)len;
  while (p + 8 <= end) {
    h ^= ms_round(0, ms_read64(p));
    h = ms_rotl64(h, 27) * MS_P1 + MS_P4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= (uint64_t)ms_read32(p) * MS_P1;
    h = ms_rotl64(h, 23) * MS_P2 + MS_P3;
    p += 4;
  }
  while (p < end) {
    h ^= (uint64_t)(*p) * MS_P5;
    h = ms_rotl64(h, 11) * MS_P1;
    p++;
  }
  h ^= h >> 33;
  h *= MS_P2;
  h ^= h >> 29;
  h *= MS_P3;
  h ^= h >> 32;
  return h;
}

#endif
