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
  CHECK(env, napi_create_uint32(env, (uint32_t)sizeof(SHA256_CTX), &size));
  CHECK(env, napi_set_named_property(env, exports, "ctxSize", size));
  return exports;
}
