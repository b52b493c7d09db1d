//! (A module of the `rmtrain` test binary.) Llama-family decoders against the PyTorch + transformers fixtures: the reward model
//! (`tiny-llama-rm`), teacher-forced log-probs and greedy decoding (`tiny-llama-lm`), checkpoints
//! transformers' layout, and training a decoder RM through the trainer.

use burn::tensor::Device;
use rmtrain_models::{RewardModel, RewardNet, ScoreOptions};
use rmtrain_train::{TrainConfig, TrainRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};

use super::{fixture, jsonl, rmtrain, root, tensors};

/// The binary's temp folder, named apart from the other tests' (they run in parallel).
fn tmp(name: &str) -> PathBuf {
    super::tmp(&format!("decoder-{name}"))
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
    let b = super::pad_to(rm.tokenizer.collate(&seqs), 128, 0);
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

/// DeRa: greedy ids of λ·aligned + (1 − λ)·reference logits (dera.jsonl, λ ∈ {0, 0.5, 1, 2}),
/// each request alone and all 12 (3 prompts × 4 λ) in left-padded batches of 5, both models with
/// their own KV cache. λ = 0 logs the reference's own log-probs as π_λ's, λ = 1 the aligned one's.
#[test]
fn dera_greedy_ids_match_transformers_for_every_lambda_alone_and_batched() {
    let mut reference = lm();
    let aligned = rmtrain_models::CausalLm::load(&fixture("tiny-llama-lm-aligned"), &Device::flex()).expect("load aligned");
    reference.stop_ids = aligned.stop_ids.clone();
    let rows = jsonl(&fixture("dera.jsonl"));
    let (mut requests, mut lambdas) = (Vec::new(), Vec::new());
    for row in &rows {
        let ids = reference.encode_prompt(row["prompt"].as_str().expect("prompt")).expect("encode");
        assert_eq!(ids, ids_of(&row["prompt_ids"]));
        requests.push(rmtrain_models::GenRequest { prompt: ids, seed: 0 });
        lambdas.push(row["lambda"].as_f64().expect("lambda"));
    }
    let realign = rmtrain_models::Realign { aligned: &aligned, lambdas: &lambdas };
    for (ignore_eos, key) in [(true, "new_ids"), (false, "new_ids_stop_at_eos")] {
        let sampling = rmtrain_models::Sampling { max_new_tokens: 12, ignore_eos, ..Default::default() };
        for batch in [1, 5] {
            let got = reference.generate_realigned(&requests, &realign, &sampling, batch, &mut |_| {}).expect("generate");
            for (row, g) in rows.iter().zip(&got) {
                assert_eq!(g.ids, ids_of(&row[key]), "batch {batch}, λ = {}: {} ({key})", row["lambda"], row["prompt"]);
                let pol = g.realigned_logprobs.as_ref().expect("π_λ log-probs");
                assert_eq!(pol.len(), g.ids.len());
                match row["lambda"].as_f64() {
                    Some(0.0) => assert_eq!(pol, &g.token_logprobs, "λ = 0 is the reference"),
                    _ => assert!(pol.iter().zip(&g.token_logprobs).any(|(a, b)| a != b)),
                }
            }
        }
    }
    // λ = 1 is the aligned model decoding alone.
    let alone: Vec<rmtrain_models::GenRequest> = requests.iter().zip(&lambdas).filter(|(_, l)| **l == 1.0).map(|(r, _)| r.clone()).collect();
    let sampling = rmtrain_models::Sampling { max_new_tokens: 12, ignore_eos: true, ..Default::default() };
    let plain = aligned.generate(&alone, &sampling, 3, &mut |_| {}).expect("generate");
    let ones: Vec<&Value> = rows.iter().filter(|r| r["lambda"].as_f64() == Some(1.0)).collect();
    for (g, row) in plain.iter().zip(ones) {
        assert_eq!(g.ids, ids_of(&row["new_ids"]));
    }
    // A model that ends sequences differently (another tokenizer) is refused.
    let mut other = rmtrain_models::CausalLm::load(&fixture("tiny-llama-lm-aligned"), &Device::flex()).expect("load");
    other.stop_ids.push(7);
    let e = reference.generate_realigned(&requests[..1], &rmtrain_models::Realign { aligned: &other, lambdas: &[0.5] }, &sampling, 1, &mut |_| {});
    assert!(e.expect_err("refused").to_string().contains("share the reference's vocabulary"));
}

/// `rmtrain generate --aligned --lambda`: one line per prompt and λ with `lambda`,
/// `realigned_logprobs` and `kl_to_ref`; λ = 0 is the reference's own sampling (the same text as
/// plain generation with the same seeds, KL exactly 0), and the sweep runs in one call.
#[test]
fn generate_verb_runs_a_dera_lambda_sweep_in_one_call() {
    let dir = tmp("dera");
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"Hello\", \"id\": 1}\n{\"prompt\": \"The weather today is\", \"id\": 2}\n").expect("write");
    let p = prompts.to_str().expect("utf8");
    let common = ["--model", "tests/fixtures/hf/tiny-llama-lm", "--input", p, "--n", "3", "--seed", "5", "--max-new-tokens", "8", "--no-progress"];
    let (code, plain, stderr) = rmtrain(&[&["generate"], &common[..]].concat());
    assert_eq!(code, 0, "{stderr}");
    let sweep_args = [&["generate"], &common[..], &["--aligned", "tests/fixtures/hf/tiny-llama-lm-aligned", "--lambda", "0,1,2", "--batch-size", "4"]].concat();
    let (code, stdout, stderr) = rmtrain(&sweep_args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("KL(π_λ ‖ π_ref)"), "{stderr}");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 2 * 3, "one line per prompt and λ");
    let plain: Vec<Value> = plain.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    for (i, line) in lines.iter().enumerate() {
        let (prompt, lambda) = (i / 3, [0.0, 1.0, 2.0][i % 3]);
        assert_eq!(line["id"], plain[prompt]["id"]);
        assert_eq!(line["lambda"].as_f64(), Some(lambda));
        assert_eq!(line["responses"].as_array().expect("responses").len(), 3);
        let kl = line["kl_to_ref"].as_f64().expect("kl");
        if lambda == 0.0 {
            assert_eq!(line["responses"], plain[prompt]["responses"], "λ = 0 samples the reference with the same seeds");
            assert_eq!(line["ref_logprobs"], plain[prompt]["ref_logprobs"]);
            assert_eq!(kl, 0.0);
        } else {
            assert_ne!(line["responses"], plain[prompt]["responses"], "λ = {lambda} changes the samples");
        }
    }
    let (code, _, stderr) = rmtrain(&[&["generate"], &common[..], &["--aligned", "tests/fixtures/hf/tiny-llama-lm-aligned"]].concat());
    assert_ne!(code, 0);
    assert!(stderr.contains("--lambda"), "{stderr}");
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

/// The BERT tests' request (tiny pairs, tiny eval set, flex) from another init.
fn request(init: &Path, out: &Path, config: TrainConfig, resume: bool) -> TrainRequest {
    TrainRequest { init: init.to_path_buf(), ..super::request(out, config, resume) }
}

/// The trainer's whole contract on a decoder RM: the loss falls, replicas + accumulation +
/// clipping + (attention) dropout run, a stopped run resumes to the same weights bitwise, the
/// checkpoint keeps transformers' names, and two members average (WARM) into a model that loads.
#[test]
fn a_decoder_rm_trains_resumes_bitwise_and_averages() {
    let _serial = super::training_lock(); // Burn's per-backend RNG: one training run at a time
    let init = fixture("tiny-llama-rm");
    let cfg = TrainConfig { batch_size: 4, lr: 2e-3, epochs: 4, warmup_ratio: 0.1, log_every: 1, grad_accum: 2, replicas: 2, dropout: Some(0.1), save_every: 2, keep_checkpoints: 1, ..TrainConfig::default() };
    let full = tmp("full");
    let whole = rmtrain_train::train(request(&init, &full, cfg.clone(), false)).expect("uninterrupted");
    let losses: Vec<f64> = jsonl(&full.join("metrics.jsonl")).iter().filter_map(|r| r.get("loss").and_then(|l| l.as_f64())).collect();
    let (first, last) = (losses[..2].iter().sum::<f64>() / 2.0, losses[losses.len() - 2..].iter().sum::<f64>() / 2.0);
    assert!(last < first, "the loss falls: {losses:?}");
    let part = tmp("part");
    rmtrain_train::train(request(&init, &part, TrainConfig { max_steps: Some(5), ..cfg.clone() }, false)).expect("first half");
    let resumed = rmtrain_train::train(request(&init, &part, cfg.clone(), true)).expect("resumed");
    let (a, b) = (tensors(&whole.model_dir.join("model.safetensors")), tensors(&resumed.model_dir.join("model.safetensors")));
    let differ: Vec<&String> = a.iter().zip(&b).filter(|(x, y)| x != y).map(|(x, _)| &x.0).collect();
    assert!(differ.is_empty(), "resumed run differs in {differ:?}");
    // transformers' LlamaForSequenceClassification names and shapes, tensor for tensor the fixture's
    let fixture_names: Vec<(String, Vec<usize>)> = tensors(&init.join("model.safetensors")).into_iter().map(|(n, s, _)| (n, s)).collect();
    let saved_names: Vec<(String, Vec<usize>)> = a.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    assert_eq!(saved_names, fixture_names);
    let config: Value = serde_json::from_str(&std::fs::read_to_string(whole.model_dir.join("config.json")).expect("config")).expect("json");
    assert_eq!(config["architectures"], serde_json::json!(["LlamaForSequenceClassification"]));
    assert_eq!(config["pad_token_id"], serde_json::json!(0));
    // a second member with another learning rate, then the uniform average
    let other = tmp("other");
    let second = rmtrain_train::train(request(&init, &other, TrainConfig { lr: 1e-3, ..cfg }, false)).expect("second member");
    let avg = tmp("avg").join("avg");
    let utf8 = |p: &Path| p.to_str().expect("utf8").to_string();
    let (code, _, stderr) = rmtrain(&["average", "--strict", "--out", &utf8(&avg), &utf8(&whole.model_dir), &utf8(&second.model_dir)]);
    assert_eq!(code, 0, "{stderr}");
    let (m1, m2, m) = (tensors(&whole.model_dir.join("model.safetensors")), tensors(&second.model_dir.join("model.safetensors")), tensors(&avg.join("model.safetensors")));
    let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>();
    for ((x, y), z) in m1.iter().zip(&m2).zip(&m) {
        for ((p, q), r) in f32s(&x.2).iter().zip(f32s(&y.2)).zip(f32s(&z.2)) {
            assert!(((p + q) / 2.0 - r).abs() <= 1e-6, "{}: {p}, {q} -> {r}", x.0);
        }
    }
    let rm = RewardModel::load(&avg, 128, &Device::flex()).expect("the average loads");
    assert!(matches!(rm.net, rmtrain_models::RewardNetwork::Llama(_)));
    // the two members as a z-normalised ensemble
    let (m1, m2) = (whole.model_dir.to_str().expect("utf8"), second.model_dir.to_str().expect("utf8"));
    let (code, stdout, stderr) = rmtrain(&["score", "--model", m1, "--model", m2, "--combine", "worst", "--input", "tests/data/tiny_pairs.jsonl"]);
    assert_eq!(code, 0, "{stderr}");
    let first: Value = serde_json::from_str(stdout.lines().next().expect("line")).expect("json");
    assert_eq!(first["member_rewards_chosen"].as_array().expect("members").len(), 2);
}

/// The production path: SmolLM2 from its GGUF gets a new reward head, trains through the trainer,
/// and its checkpoint (an HF folder with the tokenizer rebuilt from the GGUF) reloads with the
/// same rewards.
#[test]
fn smollm2_from_gguf_becomes_a_reward_model_that_trains_and_reloads() {
    let Some(gguf) = smollm2() else { return };
    let _serial = super::training_lock(); // Burn's per-backend RNG: one training run at a time
    let out = tmp("smol");
    let cfg = TrainConfig { batch_size: 2, lr: 1e-5, max_steps: Some(2), max_length: 32, log_every: 1, ..TrainConfig::default() };
    let mut req = request(&gguf, &out, cfg, false);
    req.evals.clear();
    let done = rmtrain_train::train(req).expect("train");
    assert_eq!(done.steps, 2);
    let rm = RewardModel::load(&done.model_dir, 32, &Device::flex()).expect("checkpoint loads");
    let names: Vec<String> = tensors(&done.model_dir.join("model.safetensors")).into_iter().map(|t| t.0).collect();
    assert!(names.contains(&"score.weight".to_string()) && names.contains(&"model.layers.29.mlp.down_proj.weight".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("lm_head")), "a reward model has no LM head");
    let texts = ["a wonderful film", "a dull and lifeless film"];
    let r = rm.score_texts(&texts, &ScoreOptions::default()).expect("score");
    assert!(r.iter().all(|x| x.is_finite()) && r[0] != r[1], "{r:?}");
    let again = RewardModel::load(&done.model_dir, 32, &Device::flex()).expect("again").score_texts(&texts, &ScoreOptions::default()).expect("score");
    assert_eq!(r, again);
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json", "rmtrain.json"] {
        assert!(done.model_dir.join(f).is_file(), "{f}");
    }
    // 2.1 GB of weights and optimizer state: not left in the temp folder
    std::fs::remove_dir_all(&out).expect("cleanup");
}

#[test]
fn logprobs_verb_adds_the_fixture_log_probs_and_keeps_every_field() {
    let (code, stdout, stderr) = rmtrain(&["logprobs", "--model", "tests/fixtures/hf/tiny-llama-lm", "--input", "tests/fixtures/hf/tiny-llama-lm/logprobs.jsonl", "--batch-size", "4"]);
    assert_eq!(code, 0, "{stderr}");
    let rows = jsonl(&fixture("tiny-llama-lm/logprobs.jsonl"));
    let got: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(got.len(), rows.len());
    for (g, want) in got.iter().zip(&rows) {
        assert_eq!(g["index"], want["index"], "input fields are kept, in order");
        let (a, b) = (g["logprob"].as_f64().expect("logprob"), want["sum_logprob"].as_f64().expect("sum"));
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        assert_eq!(g["logprobs"].as_array().expect("per token").len(), want["response_len"].as_u64().expect("len") as usize);
    }
}

#[test]
fn generate_verb_is_greedy_at_temperature_0_and_sampled_streams_ignore_the_batch() {
    let dir = tmp("generate");
    let prompts = dir.join("prompts.jsonl");
    let rows = jsonl(&fixture("tiny-llama-lm/greedy.jsonl"));
    let lines: Vec<String> = rows.iter().map(|r| serde_json::json!({"prompt": r["prompt"], "index": r["index"]}).to_string()).collect();
    std::fs::write(&prompts, lines.join("\n")).expect("write");
    let p = prompts.to_str().expect("utf8");
    let (code, stdout, stderr) = rmtrain(&["generate", "--model", "tests/fixtures/hf/tiny-llama-lm", "--input", p, "--temperature", "0", "--max-new-tokens", "12", "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("tokens/s"), "{stderr}");
    for (line, want) in stdout.lines().zip(&rows) {
        let g: Value = serde_json::from_str(line).expect("json");
        assert_eq!(g["index"], want["index"]);
        assert_eq!(g["responses"][0], want["decoded"], "greedy text of {}", want["prompt"]);
        assert_eq!(g["num_tokens"][0], 12);
    }
    let sampled = |batch: &str| {
        let (code, stdout, stderr) = rmtrain(&["generate", "--model", "tests/fixtures/hf/tiny-llama-lm", "--input", p, "--n", "4", "--seed", "7", "--top-k", "50", "--top-p", "0.9", "--max-new-tokens", "8", "--batch-size", batch, "--no-progress"]);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let (one, many) = (sampled("1"), sampled("16"));
    assert_eq!(one, many, "a sample does not depend on the batch it was decoded in");
    let first: Value = serde_json::from_str(one.lines().next().expect("line")).expect("json");
    let responses: Vec<&str> = first["responses"].as_array().expect("responses").iter().map(|r| r.as_str().expect("text")).collect();
    assert_eq!(responses.len(), 4);
    assert!(responses.iter().any(|r| *r != responses[0]), "4 samples at temperature 1 are not all equal: {responses:?}");
}

#[test]
fn lm_verbs_refuse_bad_input_with_one_line_naming_file_line_and_field() {
    let dir = tmp("lm-bad");
    let f = dir.join("no_response.jsonl");
    std::fs::write(&f, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"c\"}\n").expect("write");
    let f = f.to_str().expect("utf8");
    let model = "tests/fixtures/hf/tiny-llama-lm";
    for (args, must) in [
        (vec!["logprobs", "--model", model, "--input", f], vec!["no_response.jsonl:2", "field \"response\": missing"]),
        (vec!["generate", "--model", model, "--input", f, "--top-p", "0"], vec!["--top-p"]),
        (vec!["generate", "--model", "tests/fixtures/hf/tiny-bert-rm", "--input", f], vec!["config.json", "not a causal LM"]),
        (vec!["generate", "--model", model, "--input", f, "--chat"], vec!["no chat template"]),
    ] {
        let (code, stdout, stderr) = rmtrain(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        for m in must {
            assert!(stderr.contains(m), "{args:?}: {stderr} lacks {m:?}");
        }
    }
}

/// A checkpoint split into shards with `model.safetensors.index.json` (what transformers writes
/// for large models) loads to the same rewards; an index naming a tensor in the wrong shard is
/// refused by name.
#[test]
fn a_sharded_checkpoint_loads_like_the_single_file() {
    let dir = tmp("sharded");
    let src = fixture("tiny-llama-rm");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let all = tensors(&src.join("model.safetensors"));
    let mut weight_map = serde_json::Map::new();
    for (k, part) in all.chunks(all.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            part.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("view"))).collect();
        std::fs::write(dir.join(&file), safetensors::tensor::serialize(views, None).expect("serialize")).expect("write");
        for (n, _, _) in part {
            weight_map.insert(n.clone(), Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
    let texts = ["ok", "Hello world!", "The quick brown fox jumps over the lazy dog."];
    let want = RewardModel::load(&src, 128, &Device::flex()).expect("single").score_texts(&texts, &ScoreOptions::default()).expect("score");
    let got = RewardModel::load(&dir, 128, &Device::flex()).expect("sharded").score_texts(&texts, &ScoreOptions::default()).expect("score");
    assert_eq!(got, want);
    // a tensor the index puts in the wrong shard
    let name = all[0].0.clone();
    weight_map.insert(name.clone(), Value::String("model-00002-of-00002.safetensors".into()));
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::json!({"weight_map": weight_map}).to_string()).expect("index");
    let err = RewardModel::load(&dir, 128, &Device::flex()).err().expect("must fail").to_string();
    assert!(err.contains("model.safetensors.index.json") && err.contains(&name), "{err}");
}
