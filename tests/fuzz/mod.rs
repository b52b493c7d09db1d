//! Bounded mutation fuzzing of every reader of user files, on stable Rust: pair JSONL (all of
//! TRL's formats), score, prompt, candidate and meta-set JSONL, the three recipe kinds,
//! config.json, tokenizer.json, safetensors and GGUF headers. Each target starts from valid seed
//! files, applies 1–4 random mutations (bit flips, byte edits, JSON/TOML tokens, cuts, splices,
//! and for binary headers extreme little-endian integers), writes the result to a file and reads
//! it. A reader must return Ok or an error naming the file; a panic fails the test and the input
//! is kept under target/fuzz-failures/. Inputs that once crashed a reader are kept in
//! tests/fuzz/regressions/ (named after their target) and replayed first.
//!
//! Bounded: each target runs RMTRAIN_FUZZ_SECONDS (default 1.5) and at least 150 inputs, from a
//! fixed seed (RMTRAIN_FUZZ_SEED, default 1), so a run is repeatable up to its length.

use super::root;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        rmtrain_core::splitmix64(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that break JSON and TOML in interesting ways.
const TOKENS: &[&[u8]] = &[
    b"\"", b"{", b"}", b"[", b"]", b",", b":", b"\n", b"=", b"null", b"true", b"-1", b"0", b"-0.0", b"1e999", b"NaN", b"18446744073709551616",
    b"-9223372036854775809", b"\"\\u0000\"", b"\"\\ud800\"", b"\"\"", b"[[[[[[[[[[[[[[[[", b"{\"a\":{\"a\":{\"a\":", b"\xff\xfe", b"\xc3\x28", b"[[x]]", b"[]", b"{}",
];

/// Little-endian integers at the edges of what a header's counts, lengths and offsets hold.
const EXTREMES: &[u64] = &[0, 1, 0xff, 0xffff_ffff, 0x1_0000_0000, u64::MAX, u64::MAX / 2, i64::MAX as u64 + 1, 1 << 40];

fn mutate(rng: &mut Rng, seed: &[u8], header: usize) -> Vec<u8> {
    let mut x = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        // binary targets mutate their header (the first `header` bytes) 9 times in 10
        let span = if header > 0 && rng.below(10) > 0 { header.min(x.len()) } else { x.len() };
        let at = rng.below(span + 1).min(x.len());
        match rng.below(if header > 0 { 8 } else { 7 }) {
            0 if !x.is_empty() => {
                let i = at.min(x.len() - 1);
                x[i] ^= 1 << rng.below(8);
            }
            1 if !x.is_empty() => {
                let i = at.min(x.len() - 1);
                x[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                x.splice(at..at, t.iter().copied());
            }
            3 => {
                let end = (at + 1 + rng.below(16)).min(x.len());
                x.drain(at..end);
            }
            4 => x.truncate(at),
            5 => {
                let (from, len) = (rng.below(x.len()), 1 + rng.below(32));
                let piece: Vec<u8> = x[from..(from + len).min(x.len())].to_vec();
                x.splice(at..at, piece);
            }
            6 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let end = (at + t.len()).min(x.len());
                x.splice(at..end, t.iter().copied());
            }
            _ => {
                let v = EXTREMES[rng.below(EXTREMES.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(x.len());
                x.splice(at..end, v[..width].iter().copied());
            }
        }
    }
    x
}

fn budget() -> (Duration, u64) {
    let secs = std::env::var("RMTRAIN_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.5);
    let seed = std::env::var("RMTRAIN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    (Duration::from_secs_f64(secs), seed)
}

/// Runs one target: `read` gets a file named `file_name` holding a mutated seed (or, for the
/// folder readers, a folder holding it) and returns its error text.
fn fuzz(target: &str, seeds: &[Vec<u8>], file_name: &str, header: impl Fn(&[u8]) -> usize, read: impl Fn(&Path) -> Result<(), String>) -> u64 {
    let (limit, seed) = budget();
    let dir = super::tmp(&format!("fuzz-{target}"));
    let path = dir.join(file_name);
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(&path, s).expect("write seed");
        if let Err(e) = read(&path) {
            panic!("{target}: seed {i} is not a valid input: {e}");
        }
    }
    // Inputs that once crashed a reader (tests/fuzz/regressions/<target>-*): no panic, and an
    // error that names the file.
    let regressions = root().join("tests/fuzz/regressions");
    for entry in std::fs::read_dir(&regressions).expect("tests/fuzz/regressions").map(|e| e.expect("entry").path()) {
        let name = entry.file_name().expect("a name").to_string_lossy().into_owned();
        if name.strip_prefix(target).is_some_and(|rest| rest.starts_with('-')) {
            std::fs::copy(&entry, &path).expect("copy regression");
            match catch_unwind(AssertUnwindSafe(|| read(&path))) {
                Ok(Err(e)) => assert!(e.contains(file_name), "{target}: regression {name}: the error does not name the file: {e}"),
                Ok(Ok(())) => panic!("{target}: regression {name} reads as valid"),
                Err(_) => panic!("{target}: regression {name} panics again"),
            }
        }
    }
    let mut rng = Rng(target.bytes().fold(seed, |h, c| rmtrain_core::splitmix64(h ^ c as u64)));
    let started = Instant::now();
    let mut n = 0u64;
    let mut unnamed = Vec::new();
    while n < 150 || started.elapsed() < limit {
        let s = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, s, header(s));
        std::fs::write(&path, &input).expect("write input");
        match catch_unwind(AssertUnwindSafe(|| read(&path))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if !e.contains(file_name) && unnamed.len() < 3 {
                    unnamed.push((keep(target, n, file_name, &input), e));
                }
            }
            Err(p) => {
                let why = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                panic!("{target}: the reader panicked ({why}) on input {n}, kept in {}", keep(target, n, file_name, &input).display());
            }
        }
        n += 1;
    }
    assert!(unnamed.is_empty(), "{target}: errors that do not name the file: {unnamed:?}");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("fuzz {target}: {n} inputs in {:.1} s", started.elapsed().as_secs_f64());
    n
}

/// Saves a failing input where it can be replayed.
fn keep(target: &str, n: u64, file_name: &str, input: &[u8]) -> PathBuf {
    let dir = root().join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).expect("failures folder");
    let p = dir.join(format!("{target}-{n}-{file_name}"));
    std::fs::write(&p, input).expect("keep input");
    p
}

fn file(p: &str) -> Vec<u8> {
    std::fs::read(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn text_seeds(files: &[&str], inline: &[&str]) -> Vec<Vec<u8>> {
    files.iter().map(|f| file(f)).chain(inline.iter().map(|s| s.as_bytes().to_vec())).collect()
}

fn no_header(_: &[u8]) -> usize {
    0
}

const CONVERSATIONAL: &str = r#"{"prompt": [{"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go."}], "margin": 1.5, "id": 7}
{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}], "strength_mean": 0.3, "domain": "math"}
"#;

#[test]
fn pair_files_in_every_format() {
    let seeds = text_seeds(&["tests/data/tiny_pairs.jsonl", "tests/data/dpo_pairs.jsonl", "tests/data/tiny_eval.jsonl"], &[CONVERSATIONAL]);
    fuzz("pairs", &seeds, "pairs.jsonl", no_header, |p| rmtrain_data::read_pairs(p).map(drop).map_err(|e| e.to_string()));
    fuzz("scores", &seeds, "texts.jsonl", no_header, |p| rmtrain_data::read_score_records(p).map(drop).map_err(|e| e.to_string()));
}

#[test]
fn prompt_candidate_and_meta_files() {
    let prompts = [r#"{"prompt": "Once upon a time", "response": " there was", "id": 1}
{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "response": "Hello"}
{"messages": [{"role": "user", "content": "Why?"}], "response": "Because."}
"#];
    fuzz("prompts", &text_seeds(&[], &prompts), "prompts.jsonl", no_header, |p| rmtrain_data::read_prompt_records(p, true).map(drop).map_err(|e| e.to_string()));
    let candidates = [r#"{"prompt": "Say hi", "responses": ["hi", "hello", "hey"], "gold": [0.5, 1.0, -2], "ref_logprobs": [-3.5, -1.25, -9], "emb": [[1, 0], [0.6, 0.8], [0, 1]]}
{"messages": [{"role": "user", "content": "Name a color"}], "responses": ["red", "blue", "green"], "gold": [1, 2, 3], "emb": [[1, 0], [1, 0], [0, 1]]}
"#];
    let columns = rmtrain_data::CandidateColumns { required_numbers: vec!["gold".into()], optional_numbers: vec!["ref_logprobs".into()], embeddings: Some("emb".into()) };
    fuzz("candidates", &text_seeds(&[], &candidates), "cands.jsonl", no_header, |p| rmtrain_data::read_candidate_records(p, &columns, true).map(drop).map_err(|e| e.to_string()));
    let meta = [r#"{"prompt": "Rate this", "responses": ["good", "bad", "fine"]}
{"responses": ["one", "two"]}
"#];
    fuzz("meta", &text_seeds(&[], &meta), "meta.jsonl", no_header, |p| rmtrain_data::read_meta_groups(p).map(drop).map_err(|e| e.to_string()));
}

#[test]
fn recipes_of_every_kind() {
    let seeds = text_seeds(&["recipes/tiny.toml", "recipes/tiny_warm.toml", "recipes/tiny_secrets.toml"], &[]);
    fuzz("recipe", &seeds, "recipe.toml", no_header, |p| rmtrain_pipeline::read_recipe(p).map(drop).map_err(|e| format!("{e:#}")));
    fuzz("rbon-recipe", &text_seeds(&["recipes/tiny_rbon.toml"], &[]), "rbon.toml", no_header, |p| rmtrain_pipeline::rbon::read_rbon_recipe(p).map(drop).map_err(|e| format!("{e:#}")));
    fuzz("dera-recipe", &text_seeds(&["recipes/tiny_dera.toml"], &[]), "dera.toml", no_header, |p| rmtrain_pipeline::dera::read_dera_recipe(p).map(drop).map_err(|e| format!("{e:#}")));
}

#[test]
fn model_configs_and_tokenizers() {
    let configs = text_seeds(&["tests/fixtures/hf/tiny-bert-rm/config.json", "tests/fixtures/hf/tiny-llama-rm/config.json", "tests/fixtures/hf/tiny-llama-lm/config.json"], &[]);
    fuzz("config", &configs, "config.json", no_header, |p| rmtrain_models::ModelConfig::from_file(p).map(drop).map_err(|e| e.to_string()));
    let tokenizers = text_seeds(&["tests/fixtures/hf/tiny-bert-rm/tokenizer.json", "tests/fixtures/hf/tiny-llama-lm/tokenizer.json"], &[]);
    fuzz("tokenizer", &tokenizers, "tokenizer.json", no_header, |p| {
        let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
        rmtrain_models::RmTokenizer::from_bytes(p, &bytes, 64, None).map(drop).map_err(|e| e.to_string())
    });
}

/// A safetensors file's header: the 8-byte length and the JSON after it.
fn safetensors_header(s: &[u8]) -> usize {
    8 + s.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize).min(s.len())
}

#[test]
fn safetensors_headers() {
    let seeds = vec![file("tests/fixtures/hf/tiny-bert-rm/model.safetensors"), file("tests/fixtures/hf/tiny-llama-rm/model.safetensors")];
    fuzz("safetensors", &seeds, "model.safetensors", safetensors_header, |p| rmtrain_models::hf::TensorMap::read(p).map(drop).map_err(|e| e.to_string()));
    fuzz("safetensors-stream", &seeds, "model.safetensors", safetensors_header, |p| rmtrain_merge::safetensors_stream::MappedSafetensors::open(p).map(drop).map_err(|e| e.to_string()));
}

/// A small valid GGUF v3 file: metadata of every value type, an F32 and a Q8_0 tensor.
fn tiny_gguf() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(2u64.to_le_bytes()); // tensors
    b.extend(7u64.to_le_bytes()); // metadata
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    string(&mut b, "llama");
    string(&mut b, "llama.block_count");
    b.extend(4u32.to_le_bytes());
    b.extend(2u32.to_le_bytes());
    string(&mut b, "llama.rope.freq_base");
    b.extend(6u32.to_le_bytes());
    b.extend(10000f32.to_le_bytes());
    string(&mut b, "general.flag");
    b.extend(7u32.to_le_bytes());
    b.push(1);
    string(&mut b, "general.size");
    b.extend(10u32.to_le_bytes());
    b.extend(123u64.to_le_bytes());
    string(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(3u64.to_le_bytes());
    for t in ["<s>", "a", "b"] {
        string(&mut b, t);
    }
    string(&mut b, "tokenizer.ggml.scores");
    b.extend(9u32.to_le_bytes());
    b.extend(6u32.to_le_bytes());
    b.extend(3u64.to_le_bytes());
    for v in [0f32, -1.0, -2.0] {
        b.extend(v.to_le_bytes());
    }
    // tensors: "a" F32 [4, 2] at 0; "b" Q8_0 [32] at 32
    string(&mut b, "a");
    b.extend(2u32.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    string(&mut b, "b");
    b.extend(1u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    for i in 0..8 {
        b.extend((i as f32).to_le_bytes());
    }
    b.extend(half_one());
    b.extend((0..32).map(|i| i as u8));
    b
}

/// f16 1.0, the Q8_0 block scale.
fn half_one() -> [u8; 2] {
    0x3c00u16.to_le_bytes()
}

#[test]
fn gguf_headers() {
    let seed = tiny_gguf();
    let header = seed.len() - 32 - 34;
    let gguf = rmtrain_models::gguf::GgufFile::open;
    fuzz("gguf", &[seed], "model.gguf", |_| header, |p| {
        let f = gguf(p).map_err(|e| e.to_string())?;
        // reading every tensor must stay inside the file
        for t in &f.tensors {
            let _ = f.dequantize(t);
        }
        Ok(())
    });
}
