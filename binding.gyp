{
  "targets": [
    {
      "target_name": "sha256_ctx",
      "sources": ["native/sha256_ctx.c"],
      "cflags": ["-Wall", "-Wextra", "-O3"],
      "xcode_settings": {
        "OTHER_LDFLAGS": ["-undefined", "dynamic_lookup"]
      }
    }
  ]
}
