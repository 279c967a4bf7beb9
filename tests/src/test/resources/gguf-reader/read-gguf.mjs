// Prints what @huggingface/gguf (an independent GGUF parser) reads from a local GGUF file, as JSON on stdout:
// { version, tensorDataOffset, metadata: {key: value}, tensorInfos: [{name, shape, dtype, offset}] } (bigints as numbers).
// Usage: node read-gguf.mjs FILE  (with @huggingface/gguf installed in ./node_modules or NODE_PATH's).
import { gguf } from "@huggingface/gguf";

const file = process.argv[2];
const parsed = await gguf(file, { allowLocalFile: true });
const plain = (v) => (typeof v === "bigint" ? Number(v) : Array.isArray(v) ? v.map(plain) : v);
const metadata = {};
for (const [key, value] of Object.entries(parsed.metadata)) {
  metadata[key] = plain(value);
}
console.log(JSON.stringify({
  version: plain(parsed.metadata.version),
  tensorDataOffset: plain(parsed.tensorDataOffset),
  metadata,
  tensorInfos: parsed.tensorInfos.map((t) => ({
    name: t.name, shape: t.shape.map(plain), dtype: t.dtype, offset: plain(t.offset),
  })),
}));
