/*
 * sha256_ctx: a resumable SHA-256 for ms-resume.
 *
 * The hash state is OpenSSL's SHA256_CTX, a plain 112-byte struct, kept in a JS Buffer owned by the
 * caller. Saving the state is copying those bytes; restoring is copying them back. The OpenSSL
 * functions are not linked from a separate libcrypto: they are the ones exported by the node binary
 * itself (node links OpenSSL statically and exports its symbols for addons).
 *
 * Exports:
 *   ctxSize: number                     sizeof(SHA256_CTX)
 *   init(): Buffer                      a fresh context
 *   update(ctx: Buffer, data: TypedArray | DataView | ArrayBuffer): void
 *                                       hashes data in place (no copy of data); ctx is updated
 *   final(ctx: Buffer): Buffer          the 32-byte digest; ctx itself is left unchanged
 *   bytes(ctx: Buffer): number          bytes hashed so far, or -1 if ctx is not a valid context
 *   xxh64(data): string                 XXH64 (seed 0) of data, 16 hex digits
 *   hashChunk(ctx: Buffer | null, data, chunkSize?): Promise<{sums: string[], ctx?: Buffer}>
 *                                       on libuv's thread pool: the XXH64 of every chunkSize piece of
 *                                       data (one piece without chunkSize) and, with a ctx,
 *                                       SHA256_Update(ctx, data); ctx is written back when the work
 *                                       completes and a copy of it is returned. The caller must not
 *                                       touch ctx or data until the promise settles, and must not
 *                                       start a second update of the same ctx before it does.
 *   alignmentOffset(buffer, align): number
 *                                       bytes to skip from the start of buffer to reach an address that
 *                                       is a multiple of align (a power of two): for O_DIRECT writes
 *   xxh64File(fd, start, length, chunkSize): Promise<Array<string | null>>
 *                                       on the thread pool: pread()s [start, start + length) and
 *                                       returns the XXH64 of each chunkSize piece (the last may be
 *                                       shorter); null for a piece the file is too short to hold.
 *   writeFileSynced(path, data, mode, target?): Promise<void>
 *                                       on the thread pool, as one job: creates path (O_EXCL,
 *                                       O_NOFOLLOW), writes all of data, fdatasync, close, and, with a
 *                                       target, rename(path, target). Rejects with {code, errno,
 *                                       syscall} as Node's fs errors, having closed what it created
 *                                       and removed it when the failure came before the rename. One
 *                                       thread-pool round trip instead of five for each small file.
 *   trimMalloc(): boolean               glibc's malloc_trim(0): hands the free memory of malloc's heap
 *                                       back to the system (false elsewhere, or when none was freed).
 *
 * Every entry point validates the context (length, md_len, num, bit counters) before handing it to
 * OpenSSL, because a context may come from a journal on disk: a corrupted `num` would otherwise make
 * SHA256_Update write outside the struct.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#define NAPI_VERSION 8

#include <node_api.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdio.h>
#include <uv.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "xxh64.h"

#define CHECK(env, call)                                                    \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      const napi_extended_error_info *info_ = NULL;                         \
      napi_get_last_error_info((env), &info_);                              \
      bool pending_ = false;                                                \
      napi_is_exception_pending((env), &pending_);                          \
      if (!pending_) {                                                      \
        napi_throw_error((env), "ERR_SHA256_CTX",                           \
                         (info_ && info_->error_message) ? info_->error_message \
                                                         : "N-API call failed"); \
      }                                                                     \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

#define THROW_TYPE(env, msg)                                                \
  do {                                                                      \
    napi_throw_type_error((env), "ERR_SHA256_CTX", (msg));                  \
    return NULL;                                                            \
  } while (0)

/* A context is valid when it is a SHA-256 (not SHA-224) context whose partial-block length agrees
 * with its bit counter and is inside the block. */
static int ctx_valid(const SHA256_CTX *c) {
  if (c->md_len != SHA256_DIGEST_LENGTH) return 0;
  if (c->num >= SHA256_CBLOCK) return 0;
  if ((c->Nl & 7u) != 0) return 0;
  if (((c->Nl >> 3) & (SHA256_CBLOCK - 1)) != c->num) return 0;
  return 1;
}

static double ctx_bytes(const SHA256_CTX *c) {
  /* 64-bit bit counter Nh:Nl; bytes = counter / 8. Exact in a double up to 2^53. */
  uint64_t bits = ((uint64_t)c->Nh << 32) | (uint64_t)c->Nl;
  return (double)(bits >> 3);
}

/* Reads the context Buffer argument into an aligned local copy. Returns the Buffer's data pointer
 * (for writing back) or NULL with an exception pending. */
static void *read_ctx(napi_env env, napi_value value, SHA256_CTX *out, int require_valid) {
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) {
    napi_throw_type_error(env, "ERR_SHA256_CTX", "context must be a Buffer");
    return NULL;
  }
  if (napi_get_buffer_info(env, value, &data, &len) != napi_ok) {
    napi_throw_error(env, "ERR_SHA256_CTX", "cannot read context Buffer");
    return NULL;
  }
  if (len != sizeof(SHA256_CTX) || data == NULL) {
    napi_throw_range_error(env, "ERR_SHA256_CTX", "context Buffer has the wrong length");
    return NULL;
  }
  memcpy(out, data, sizeof(SHA256_CTX));
  if (require_valid && !ctx_valid(out)) {
    napi_throw_range_error(env, "ERR_SHA256_CTX", "context is not a valid SHA-256 state");
    return NULL;
  }
  return data;
}

static size_t typed_array_element_size(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array:
      return 8;
    default:
      return 0;
  }
}

/* Gets a pointer to the bytes of a TypedArray (Buffer included), DataView or ArrayBuffer, without
 * copying. Returns 0 with an exception pending on failure. */
static int get_bytes(napi_env env, napi_value value, const uint8_t **ptr, size_t *len) {
  bool flag = false;
  void *data = NULL;
  size_t n = 0;

  if (napi_is_typedarray(env, value, &flag) == napi_ok && flag) {
    napi_typedarray_type type;
    size_t length = 0;
    if (napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok) {
      napi_throw_error(env, "ERR_SHA256_CTX", "cannot read TypedArray");
      return 0;
    }
    size_t el = typed_array_element_size(type);
    if (el == 0) {
      napi_throw_type_error(env, "ERR_SHA256_CTX", "unsupported TypedArray type");
      return 0;
    }
    n = length * el;
  } else if (napi_is_dataview(env, value, &flag) == napi_ok && flag) {
    if (napi_get_dataview_info(env, value, &n, &data, NULL, NULL) != napi_ok) {
      napi_throw_error(env, "ERR_SHA256_CTX", "cannot read DataView");
      return 0;
    }
  } else if (napi_is_arraybuffer(env, value, &flag) == napi_ok && flag) {
    if (napi_get_arraybuffer_info(env, value, &data, &n) != napi_ok) {
      napi_throw_error(env, "ERR_SHA256_CTX", "cannot read ArrayBuffer");
      return 0;
    }
  } else {
    napi_throw_type_error(env, "ERR_SHA256_CTX", "data must be a Buffer, TypedArray, DataView or ArrayBuffer");
    return 0;
  }
  *ptr = (const uint8_t *)data;
  *len = n;
  return 1;
}

static napi_value js_init(napi_env env, napi_callback_info info) {
  (void)info;
  SHA256_CTX c;
  if (SHA256_Init(&c) != 1) {
    napi_throw_error(env, "ERR_SHA256_CTX", "SHA256_Init failed");
    return NULL;
  }
  napi_value result;
  CHECK(env, napi_create_buffer_copy(env, sizeof(c), &c, NULL, &result));
  return result;
}

static napi_value js_update(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW_TYPE(env, "update(ctx, data) needs two arguments");

  SHA256_CTX c;
  void *ctx_data = read_ctx(env, argv[0], &c, 1);
  if (ctx_data == NULL) return NULL;

  const uint8_t *ptr = NULL;
  size_t len = 0;
  if (!get_bytes(env, argv[1], &ptr, &len)) return NULL;

  if (len > 0) {
    if (ptr == NULL) THROW_TYPE(env, "data has no backing store");
    if (SHA256_Update(&c, ptr, len) != 1) {
      napi_throw_error(env, "ERR_SHA256_CTX", "SHA256_Update failed");
      return NULL;
    }
    memcpy(ctx_data, &c, sizeof(c));
  }
  return NULL;
}

static napi_value js_final(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) THROW_TYPE(env, "final(ctx) needs one argument");

  SHA256_CTX c;
  if (read_ctx(env, argv[0], &c, 1) == NULL) return NULL;

  unsigned char md[SHA256_DIGEST_LENGTH];
  if (SHA256_Final(md, &c) != 1) {
    napi_throw_error(env, "ERR_SHA256_CTX", "SHA256_Final failed");
    return NULL;
  }
  napi_value result;
  CHECK(env, napi_create_buffer_copy(env, sizeof(md), md, NULL, &result));
  return result;
}

static napi_value js_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) THROW_TYPE(env, "bytes(ctx) needs one argument");

  SHA256_CTX c;
  if (read_ctx(env, argv[0], &c, 0) == NULL) return NULL;

  napi_value result;
  CHECK(env, napi_create_double(env, ctx_valid(&c) ? ctx_bytes(&c) : -1.0, &result));
  return result;
}


static void hex16(uint64_t h, char out[17]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; i--) {
    out[i] = digits[h & 15];
    h >>= 4;
  }
  out[16] = 0;
}

static napi_value js_xxh64(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) THROW_TYPE(env, "xxh64(data) needs one argument");
  const uint8_t *ptr = NULL;
  size_t len = 0;
  if (!get_bytes(env, argv[0], &ptr, &len)) return NULL;
  char hex[17];
  hex16(ms_xxh64(ptr, len, 0), hex);
  napi_value result;
  CHECK(env, napi_create_string_latin1(env, hex, 16, &result));
  return result;
}

/* Queues job on libuv's thread pool; returns the promise its complete callback settles, or NULL
 * with an exception pending. */
static napi_value queue_promise_work(napi_env env, const char *name, napi_async_execute_callback execute,
                                     napi_async_complete_callback complete, void *job, napi_async_work *work,
                                     napi_deferred *deferred) {
  napi_value promise, resource_name;
  if (napi_create_promise(env, deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, execute, complete, job, work) != napi_ok ||
      napi_queue_async_work(env, *work) != napi_ok) {
    napi_throw_error(env, "ERR_SHA256_CTX", "cannot queue work on the thread pool");
    return NULL;
  }
  return promise;
}

/* ---- hashChunk: XXH64 (+ SHA256_Update) of one chunk on the thread pool ---- */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref;
  napi_ref ctx_ref; /* NULL without a ctx */
  void *ctx_data;   /* the ctx Buffer's bytes, written back on completion */
  SHA256_CTX ctx;
  const uint8_t *ptr;
  size_t len;
  size_t piece;
  size_t count;
  uint64_t *sums;
  int sha_failed;
} chunk_job;

static void chunk_execute(napi_env env, void *arg) {
  (void)env;
  chunk_job *job = (chunk_job *)arg;
  for (size_t i = 0; i < job->count; i++) {
    size_t from = i * job->piece;
    size_t n = job->len - from < job->piece ? job->len - from : job->piece;
    job->sums[i] = ms_xxh64(job->ptr + from, n, 0);
  }
  if (job->ctx_ref != NULL && job->len > 0 && SHA256_Update(&job->ctx, job->ptr, job->len) != 1) job->sha_failed = 1;
}

static void chunk_complete(napi_env env, napi_status status, void *arg) {
  chunk_job *job = (chunk_job *)arg;
  napi_value result = NULL;
  napi_value error = NULL;
  if (status != napi_ok || job->sha_failed) {
    napi_value msg;
    napi_create_string_utf8(env, job->sha_failed ? "SHA256_Update failed" : "hash work was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &error);
  } else {
    napi_value sums;
    napi_create_object(env, &result);
    napi_create_array_with_length(env, job->count, &sums);
    for (size_t i = 0; i < job->count; i++) {
      char hex[17];
      napi_value v;
      hex16(job->sums[i], hex);
      napi_create_string_latin1(env, hex, 16, &v);
      napi_set_element(env, sums, (uint32_t)i, v);
    }
    napi_set_named_property(env, result, "sums", sums);
    if (job->ctx_ref != NULL) {
      memcpy(job->ctx_data, &job->ctx, sizeof(job->ctx));
      napi_value copy;
      napi_create_buffer_copy(env, sizeof(job->ctx), &job->ctx, NULL, &copy);
      napi_set_named_property(env, result, "ctx", copy);
    }
  }
  if (error != NULL) napi_reject_deferred(env, job->deferred, error);
  else napi_resolve_deferred(env, job->deferred, result);
  napi_delete_reference(env, job->data_ref);
  if (job->ctx_ref != NULL) napi_delete_reference(env, job->ctx_ref);
  napi_delete_async_work(env, job->work);
  free(job->sums);
  free(job);
}

static napi_value js_hash_chunk(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW_TYPE(env, "hashChunk(ctx, data[, chunkSize]) needs two arguments");
  int64_t piece = 0;
  if (argc >= 3) {
    napi_valuetype ptype;
    if (napi_typeof(env, argv[2], &ptype) != napi_ok) THROW_TYPE(env, "bad chunkSize");
    if (ptype != napi_undefined && (napi_get_value_int64(env, argv[2], &piece) != napi_ok || piece <= 0)) {
      THROW_TYPE(env, "chunkSize must be a positive number");
    }
  }
  chunk_job *job = (chunk_job *)calloc(1, sizeof(chunk_job));
  if (job == NULL) {
    napi_throw_error(env, "ERR_SHA256_CTX", "out of memory");
    return NULL;
  }
  napi_valuetype type;
  if (napi_typeof(env, argv[0], &type) != napi_ok) {
    free(job);
    napi_throw_error(env, "ERR_SHA256_CTX", "cannot read ctx");
    return NULL;
  }
  if (type != napi_null && type != napi_undefined) {
    job->ctx_data = read_ctx(env, argv[0], &job->ctx, 1);
    if (job->ctx_data == NULL) {
      free(job);
      return NULL;
    }
  }
  if (!get_bytes(env, argv[1], &job->ptr, &job->len)) {
    free(job);
    return NULL;
  }
  job->piece = piece > 0 ? (size_t)piece : (job->len > 0 ? job->len : 1);
  job->count = job->len == 0 ? 1 : (job->len + job->piece - 1) / job->piece;
  job->sums = (uint64_t *)calloc(job->count, sizeof(uint64_t));
  if (job->sums == NULL) {
    free(job);
    napi_throw_error(env, "ERR_SHA256_CTX", "out of memory");
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &job->data_ref) != napi_ok ||
      (job->ctx_data != NULL && napi_create_reference(env, argv[0], 1, &job->ctx_ref) != napi_ok)) {
    napi_throw_error(env, "ERR_SHA256_CTX", "cannot keep the hash arguments");
    return NULL; /* job leaks on this (never seen) path rather than risk a double free */
  }
  return queue_promise_work(env, "msResumeHashChunk", chunk_execute, chunk_complete, job, &job->work, &job->deferred);
}

/* ---- xxh64File: chunk sums of a file range, read and hashed on the thread pool ---- */

#define FILE_READ_BYTES (8u * 1024u * 1024u)

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int64_t start;
  int64_t length;
  int64_t chunk;
  size_t count;
  uint64_t *sums;
  uint8_t *valid;
  int err;
} file_job;

static void file_execute(napi_env env, void *arg) {
  (void)env;
  file_job *job = (file_job *)arg;
  size_t per = job->chunk >= (int64_t)FILE_READ_BYTES ? 1 : (size_t)(FILE_READ_BYTES / (uint64_t)job->chunk);
  size_t cap = per * (size_t)job->chunk;
  if ((int64_t)cap > job->length) cap = (size_t)job->length;
  uint8_t *buf = cap > 0 ? (uint8_t *)malloc(cap) : NULL;
  if (cap > 0 && buf == NULL) {
    job->err = ENOMEM;
    return;
  }
  for (size_t first = 0; first < job->count; first += per) {
    int64_t from = (int64_t)first * job->chunk;
    int64_t want = (int64_t)per * job->chunk;
    if (from + want > job->length) want = job->length - from;
    int64_t got = 0;
    while (got < want) {
      ssize_t n = pread(job->fd, buf + got, (size_t)(want - got), (off_t)(job->start + from + got));
      if (n < 0) {
        if (errno == EINTR) continue;
        job->err = errno;
        free(buf);
        return;
      }
      if (n == 0) break;
      got += n;
    }
    for (size_t i = first; i < job->count && i < first + per; i++) {
      int64_t a = (int64_t)i * job->chunk - from;
      int64_t b = a + job->chunk;
      if ((int64_t)i * job->chunk + job->chunk > job->length) b = job->length - from;
      if (b > got) break; /* too short: this and later chunks stay invalid */
      job->sums[i] = ms_xxh64(buf + a, (size_t)(b - a), 0);
      job->valid[i] = 1;
    }
    if (got < want) break;
  }
  free(buf);
}

static void file_complete(napi_env env, napi_status status, void *arg) {
  file_job *job = (file_job *)arg;
  if (status != napi_ok || job->err != 0) {
    napi_value msg, code, error;
    const char *text = status != napi_ok ? "file hash work was cancelled" : strerror(job->err);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &error);
    if (job->err != 0) {
      napi_value errnum;
      napi_create_int32(env, job->err, &errnum);
      napi_set_named_property(env, error, "errno", errnum);
    }
    (void)code;
    napi_reject_deferred(env, job->deferred, error);
  } else {
    napi_value array, nul;
    napi_create_array_with_length(env, job->count, &array);
    napi_get_null(env, &nul);
    for (size_t i = 0; i < job->count; i++) {
      napi_value v = nul;
      if (job->valid[i]) {
        char hex[17];
        hex16(job->sums[i], hex);
        napi_create_string_latin1(env, hex, 16, &v);
      }
      napi_set_element(env, array, (uint32_t)i, v);
    }
    napi_resolve_deferred(env, job->deferred, array);
  }
  napi_delete_async_work(env, job->work);
  free(job->sums);
  free(job->valid);
  free(job);
}

static napi_value js_xxh64_file(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) THROW_TYPE(env, "xxh64File(fd, start, length, chunkSize) needs four arguments");
  int32_t fd;
  int64_t start, length, chunk;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &start) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || napi_get_value_int64(env, argv[3], &chunk) != napi_ok) {
    THROW_TYPE(env, "xxh64File(fd, start, length, chunkSize) takes numbers");
  }
  if (fd < 0 || start < 0 || length < 0 || chunk <= 0 || chunk > ((int64_t)1 << 34)) {
    napi_throw_range_error(env, "ERR_SHA256_CTX", "xxh64File: bad fd, range or chunk size");
    return NULL;
  }
  file_job *job = (file_job *)calloc(1, sizeof(file_job));
  if (job == NULL) {
    napi_throw_error(env, "ERR_SHA256_CTX", "out of memory");
    return NULL;
  }
  job->fd = fd;
  job->start = start;
  job->length = length;
  job->chunk = chunk;
  job->count = (size_t)((length + chunk - 1) / chunk);
  job->sums = (uint64_t *)calloc(job->count > 0 ? job->count : 1, sizeof(uint64_t));
  job->valid = (uint8_t *)calloc(job->count > 0 ? job->count : 1, 1);
  if (job->sums == NULL || job->valid == NULL) {
    free(job->sums);
    free(job->valid);
    free(job);
    napi_throw_error(env, "ERR_SHA256_CTX", "out of memory");
    return NULL;
  }
  return queue_promise_work(env, "msResumeXxh64File", file_execute, file_complete, job, &job->work, &job->deferred);
}

static napi_value js_alignment_offset(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW_TYPE(env, "alignmentOffset(buffer, align) needs two arguments");
  const uint8_t *ptr = NULL;
  size_t len = 0;
  if (!get_bytes(env, argv[0], &ptr, &len)) return NULL;
  uint32_t align = 0;
  if (napi_get_value_uint32(env, argv[1], &align) != napi_ok || align == 0 || (align & (align - 1)) != 0) {
    THROW_TYPE(env, "align must be a power of two");
  }
  uint32_t skip = (uint32_t)((align - ((uintptr_t)ptr & (align - 1))) & (align - 1));
  napi_value result;
  CHECK(env, napi_create_uint32(env, skip, &result));
  return result;
}

/* ---- writeFileSynced: create, write, fdatasync, close, rename of one small file ---- */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref;
  const uint8_t *ptr;
  size_t len;
  char *path;
  char *target; /* NULL: no rename */
  int mode;
  int err;
  const char *syscall;
} write_job;

static void write_execute(napi_env env, void *arg) {
  (void)env;
  write_job *job = (write_job *)arg;
  int fd = open(job->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, job->mode);
  if (fd < 0) {
    job->err = errno;
    job->syscall = "open";
    return;
  }
  size_t done = 0;
  while (done < job->len) {
    ssize_t n = write(fd, job->ptr + done, job->len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      job->err = n < 0 ? errno : EIO;
      job->syscall = "write";
      break;
    }
    done += (size_t)n;
  }
  if (job->err == 0 && fdatasync(fd) != 0) {
    job->err = errno;
    job->syscall = "fdatasync";
  }
  if (close(fd) != 0 && job->err == 0) {
    job->err = errno;
    job->syscall = "close";
  }
  if (job->err == 0 && job->target != NULL && rename(job->path, job->target) != 0) {
    job->err = errno;
    job->syscall = "rename";
  }
  /* A failure before the bytes were durable leaves no partial; after a failed rename the durable,
   * verified partial stays for the caller (nothing verified is thrown away). */
  if (job->err != 0 && strcmp(job->syscall, "rename") != 0) unlink(job->path);
}

static void write_complete(napi_env env, napi_status status, void *arg) {
  write_job *job = (write_job *)arg;
  if (status != napi_ok || job->err != 0) {
    napi_value msg, error, value;
    char text[512];
    if (status != napi_ok) snprintf(text, sizeof(text), "file write work was cancelled");
    else snprintf(text, sizeof(text), "%s: %s, %s '%s'", uv_err_name(-job->err), strerror(job->err), job->syscall, job->path);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &error);
    if (job->err != 0) {
      napi_create_int32(env, -job->err, &value);
      napi_set_named_property(env, error, "errno", value);
      napi_create_string_utf8(env, uv_err_name(-job->err), NAPI_AUTO_LENGTH, &value);
      napi_set_named_property(env, error, "code", value);
      napi_create_string_utf8(env, job->syscall, NAPI_AUTO_LENGTH, &value);
      napi_set_named_property(env, error, "syscall", value);
    }
    napi_reject_deferred(env, job->deferred, error);
  } else {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  }
  napi_delete_reference(env, job->data_ref);
  napi_delete_async_work(env, job->work);
  free(job->path);
  free(job->target);
  free(job);
}

/* A JS string argument as a malloc'd UTF-8 C string (NULL with an exception pending). */
static char *utf8_arg(napi_env env, napi_value value) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok || len == 0 || len > 4096) {
    napi_throw_type_error(env, "ERR_SHA256_CTX", "a path must be a non-empty string of at most 4096 bytes");
    return NULL;
  }
  char *out = (char *)malloc(len + 1);
  if (out == NULL) {
    napi_throw_error(env, "ERR_SHA256_CTX", "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, value, out, len + 1, &len);
  if (strlen(out) != len) { /* a NUL inside the path */
    free(out);
    napi_throw_type_error(env, "ERR_SHA256_CTX", "a path must not contain NUL");
    return NULL;
  }
  return out;
}

static napi_value js_write_file_synced(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) THROW_TYPE(env, "writeFileSynced(path, data, mode, target?) needs three arguments");
  const uint8_t *ptr = NULL;
  size_t len = 0;
  if (!get_bytes(env, argv[1], &ptr, &len)) return NULL;
  uint32_t mode = 0;
  if (napi_get_value_uint32(env, argv[2], &mode) != napi_ok || mode > 07777) THROW_TYPE(env, "mode must be a file mode");
  napi_valuetype target_type = napi_undefined;
  if (argc > 3) napi_typeof(env, argv[3], &target_type);
  write_job *job = (write_job *)calloc(1, sizeof(write_job));
  if (job == NULL) {
    napi_throw_error(env, "ERR_SHA256_CTX", "out of memory");
    return NULL;
  }
  job->path = utf8_arg(env, argv[0]);
  if (job->path != NULL && target_type != napi_undefined && target_type != napi_null) job->target = utf8_arg(env, argv[3]);
  if (job->path == NULL || (target_type != napi_undefined && target_type != napi_null && job->target == NULL)) {
    free(job->path);
    free(job);
    return NULL;
  }
  job->ptr = ptr;
  job->len = len;
  job->mode = (int)mode;
  if (napi_create_reference(env, argv[1], 1, &job->data_ref) != napi_ok) {
    free(job->path);
    free(job->target);
    free(job);
    napi_throw_error(env, "ERR_SHA256_CTX", "cannot hold the data");
    return NULL;
  }
  napi_value promise = queue_promise_work(env, "msResumeWriteFileSynced", write_execute, write_complete, job, &job->work, &job->deferred);
  if (promise == NULL) {
    napi_delete_reference(env, job->data_ref);
    free(job->path);
    free(job->target);
    free(job);
  }
  return promise;
}

/* ---- trimMalloc ---- */

/*
 * A listing of 100,000 files arrives as ~550 socket reads of 64 KiB, each malloc()ed by Node and
 * freed only when V8 collects its Buffer; by then longer-lived allocations sit above them, so
 * malloc's heap cannot shrink and held ~27 MB of free memory for the rest of the pull. malloc_trim
 * returns the free pages, wherever they are in the heap (MADV_DONTNEED).
 */
static napi_value js_trim_malloc(napi_env env, napi_callback_info info) {
  (void)info;
  int released = 0;
#if defined(__GLIBC__)
  released = malloc_trim(0);
#endif
  napi_value result;
  CHECK(env, napi_get_boolean(env, released != 0, &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_value size;

  CHECK(env, napi_create_function(env, "init", NAPI_AUTO_LENGTH, js_init, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "init", fn));
  CHECK(env, napi_create_function(env, "update", NAPI_AUTO_LENGTH, js_update, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "update", fn));
  CHECK(env, napi_create_function(env, "final", NAPI_AUTO_LENGTH, js_final, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "final", fn));
  CHECK(env, napi_create_function(env, "bytes", NAPI_AUTO_LENGTH, js_bytes, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "bytes", fn));
  CHECK(env, napi_create_function(env, "xxh64", NAPI_AUTO_LENGTH, js_xxh64, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "xxh64", fn));
  CHECK(env, napi_create_function(env, "hashChunk", NAPI_AUTO_LENGTH, js_hash_chunk, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "hashChunk", fn));
  CHECK(env, napi_create_function(env, "alignmentOffset", NAPI_AUTO_LENGTH, js_alignment_offset, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "alignmentOffset", fn));
  CHECK(env, napi_create_function(env, "xxh64File", NAPI_AUTO_LENGTH, js_xxh64_file, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "xxh64File", fn));
  CHECK(env, napi_create_function(env, "writeFileSynced", NAPI_AUTO_LENGTH, js_write_file_synced, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "writeFileSynced", fn));
  CHECK(env, napi_create_function(env, "trimMalloc", NAPI_AUTO_LENGTH, js_trim_malloc, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "trimMalloc", fn));
  CHECK(env, napi_create_uint32(env, (uint32_t)sizeof(SHA256_CTX), &size));
  CHECK(env, napi_set_named_property(env, exports, "ctxSize", size));
  return exports;
}
