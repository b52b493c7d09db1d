//! Llama-family decoders against the PyTorch + transformers fixtures: the reward model
//! (`tiny-llama-rm`), teacher-forced log-probs and greedy decoding (`tiny-llama-lm`), checkpoints
//! transformers' layout, and training a decoder RM through the trainer.

use burn::tensor::Device;
use rmtrain_models::{RewardModel, RewardNet, ScoreOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn fixture(p: &str) -> PathBuf {
    root().join("tests/fixtures/hf").join(p)
}
fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).expect("read jsonl").lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}
fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

#[test]
fn tiny_llama_rewards_match_transformers_one_text_at_a_time() {
    let rm = RewardModel::load(&fixture("tiny-llama-rm"), 128, &Device::flex()).expect("load");
    assert!(rm.notes.initialised.is_empty(), "{:?}", rm.notes);
    for row in jsonl(&fixture("tiny-llama-rm/scores.jsonl")) {
        let text = row["text"].as_str().expect("text");
        assert_eq!(rm.tokenizer.encode(text).expect("encode"), ids_of(&row["input_ids"]), "token ids of {text:?}");
        let r = rm.score_texts(&[text], &ScoreOptions { batch_size: 1, threads: 1 }).expect("score")[0] as f64;
        let want = row["reward"].as_f64().expect("reward");
        assert!((r - want).abs() < 1e-4, "{text:?}: {r} vs {want}");
    }
}

#[test]
fn tiny_llama_rewards_match_transformers_in_one_padded_batch() {
    let rm = RewardModel::load(&fixture("tiny-llama-rm"), 128, &Device::flex()).expect("load");
    let rows = jsonl(&fixture("tiny-llama-rm/scores_batched.jsonl"));
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().expect("text")).collect();
    // Padded to the longest text (ours), in one batch ...
    let batched = rm.score_texts(&texts, &ScoreOptions { batch_size: 64, threads: 1 }).expect("score");
    // ... and right-padded to 128 with the pad id like the fixture.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| rm.tokenizer.encode(t).expect("encode")).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let mut b = rm.tokenizer.collate(&seqs);
    let (n, s) = (b.batch, b.seq);
    let (mut pid, mut pmask) = (Vec::new(), Vec::new());
    for i in 0..n {
        pid.extend_from_slice(&b.ids[i * s..(i + 1) * s]);
        pid.extend(std::iter::repeat_n(0i64, 128 - s));
        pmask.extend_from_slice(&b.mask[i * s..(i + 1) * s]);
        pmask.extend(std::iter::repeat_n(false, 128 - s));
    }
    (b.ids, b.mask, b.seq) = (pid, pmask, 128);
    let (t_ids, t_mask) = b.to_tensors(&Device::flex());
    let padded: Vec<f32> = rm.net.forward(t_ids, t_mask).into_data().try_to_vec().expect("floats");
    for ((row, r), p) in rows.iter().zip(&batched).zip(&padded) {
        let want = row["reward_batched"].as_f64().expect("reward");
        assert!((*r as f64 - want).abs() < 1e-4, "{}: {r} vs {want}", row["text"]);
        assert!((*p as f64 - want).abs() < 1e-4, "{}: {p} vs {want}", row["text"]);
    }
}

fn lm() -> rmtrain_models::CausalLm {
    rmtrain_models::CausalLm::load(&fixture("tiny-llama-lm"), &Device::flex()).expect("load lm")
}

#[test]
fn teacher_forced_logprobs_match_transformers_per_token_and_summed() {
    let lm = lm();
    let rows = jsonl(&fixture("tiny-llama-lm/logprobs.jsonl"));
    let mut items = Vec::new();
    for row in &rows {
        let (p, r) = (row["prompt"].as_str().expect("prompt"), row["response"].as_str().expect("response"));
        let (pi, ri) = (lm.encode_prompt(p).expect("prompt"), lm.encode_response(r).expect("response"));
        assert_eq!(pi, ids_of(&row["prompt_ids"]), "{p:?}");
        assert_eq!(ri, ids_of(&row["response_ids"]), "{r:?}");
        items.push((pi, ri));
    }
    // one item per forward and all in one padded batch give the same numbers
    for batch in [1, 16] {
        let got = lm.logprobs(&items, batch).expect("logprobs");
        for (row, lp) in rows.iter().zip(&got) {
            let want: Vec<f64> = row["token_logprobs"].as_array().expect("lps").iter().map(|v| v.as_f64().expect("f")).collect();
            assert_eq!(lp.len(), want.len());
            for (a, b) in lp.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-3, "batch {batch}: {a} vs {b}");
            }
            let sum: f64 = lp.iter().map(|&x| x as f64).sum();
            let want_sum = row["sum_logprob"].as_f64().expect("sum");
            assert!((sum - want_sum).abs() < 1e-3, "batch {batch}, {}: {sum} vs {want_sum}", row["prompt"]);
        }
    }
}

#[test]
fn greedy_decoding_with_the_kv_cache_gives_transformers_ids_alone_and_left_padded() {
    let lm = lm();
    let rows = jsonl(&fixture("tiny-llama-lm/greedy.jsonl"));
    let requests: Vec<rmtrain_models::GenRequest> = rows
        .iter()
        .map(|row| {
            let ids = lm.encode_prompt(row["prompt"].as_str().expect("prompt")).expect("encode");
            assert_eq!(ids, ids_of(&row["prompt_ids"]));
            rmtrain_models::GenRequest { prompt: ids, seed: 0 }
        })
        .collect();
    // The fixture always runs 12 steps: no stop ids here, so nothing ends early.
    let mut lm = lm;
    lm.stop_ids.clear();
    let sampling = rmtrain_models::Sampling { max_new_tokens: 12, ..Default::default() };
    for batch in [1, 3] {
        let mut tokens = 0;
        let got = lm.generate(&requests, &sampling, batch, &mut |n| tokens += n).expect("generate");
        assert_eq!(tokens, 12 * rows.len());
        for (row, g) in rows.iter().zip(&got) {
            assert_eq!(g.ids, ids_of(&row["new_ids"]), "batch {batch}: {}", row["prompt"]);
            assert_eq!(g.finish, rmtrain_models::Finish::Length);
        }
    }
}

fn smollm2() -> Option<PathBuf> {
    let p = root().join("assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is missing (scripts/fetch-assets.sh fetches it)", p.display());
        None
    }
}

/// SmolLM2-135M-Instruct from its GGUF (Q4_1, embeddings Q8_0, tokenizer rebuilt from the
/// metadata) against transformers reading the same file (tests/fixtures/smollm2/reference.json,
/// scripts/smollm2_reference.py): token ids, the ChatML prompt, and greedy decoding that answers
/// the question.
#[test]
fn smollm2_from_gguf_answers_a_chatml_question_under_greedy_decoding() {
    let Some(path) = smollm2() else { return };
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/smollm2/reference.json")).expect("ref")).expect("json");
    let lm = rmtrain_models::CausalLm::load(&path, &Device::flex()).expect("load gguf");
    for case in reference["tokens"].as_array().expect("tokens") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(lm.encode_prompt(text).expect("encode"), ids_of(&case["ids"]), "{text:?}");
    }
    let chat = &reference["chat"];
    let prompt = lm.apply_chat_template(&chat["messages"]).expect("template");
    assert_eq!(prompt, chat["text"].as_str().expect("text"));
    let ids = lm.encode_chat(&prompt).expect("encode");
    assert_eq!(ids, ids_of(&chat["ids"]));
    let sampling = rmtrain_models::Sampling { max_new_tokens: 24, ..Default::default() };
    let g = lm.generate(&[rmtrain_models::GenRequest { prompt: ids, seed: 0 }], &sampling, 1, &mut |_| {}).expect("generate");
    // transformers' ids end with the EOS, which ours reports as the finish reason instead.
    let mut want = ids_of(&chat["greedy_ids"]);
    assert_eq!(want.pop(), Some(2), "the reference ends at <|im_end|>");
    assert_eq!((g[0].ids.clone(), g[0].finish), (want, rmtrain_models::Finish::Eos));
    assert_eq!(g[0].text, chat["greedy_text"].as_str().expect("text"));
    assert!(g[0].text.contains("Paris"), "{:?}", g[0].text);
}
