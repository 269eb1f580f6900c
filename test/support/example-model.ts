import type {EmulatorModelSpec} from './emulator.js'

/**
 * The small model behind manifests/example.manifest.json (made by scripts/make-example-manifest.ts
 * with a real pull from the emulator): a few files, one of them empty, one of 2.5 MiB (3 chunks).
 * Its content is deterministic, so the tests can hold the example to these bytes.
 */
export const EXAMPLE_MODEL: EmulatorModelSpec = {
  id: 'example/tiny-model',
  files: [
    {path: 'config.json', content: '{"architectures": ["TinyModel"], "hidden_size": 64, "num_layers": 2}\n'},
    {path: 'added_tokens.json', content: ''},
    {path: 'model.safetensors', size: 2.5 * 1024 * 1024 + 123},
    {path: 'tokenizer/vocab.txt', size: 4096},
  ],
}
