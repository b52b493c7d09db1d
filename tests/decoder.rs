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
