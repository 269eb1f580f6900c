{
  "targets": [
    {
      "target_name": "sha256_ctx",
      "sources": ["native/sha256_ctx.c"],
      "cflags": ["-Wall", "-Wextra"],
      "xcode_settings": {
        "OTHER_LDFLAGS": ["-undefined", "dynamic_lookup"]
      }
    }
  ]
}
