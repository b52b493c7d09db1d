//! (A module of the `rmtrain` test binary.) DPO of a causal LM through `rmtrain dpo`: the loss
//! against a hand computation from the models' log-probs, learning, checkpoints in transformers'
//! layout, exact resume, and bad input.

use burn::tensor::Device;
use rmtrain_models::CausalLm;
use serde_json::Value;
use std::path::{Path, PathBuf};

use super::{fixture, jsonl, rmtrain, root, tensors};

fn tmp(name: &str) -> PathBuf {
    super::tmp(&format!("dpo-{name}"))
}

fn pairs() -> PathBuf {
    root().join("tests/data/dpo_pairs.jsonl")
}

fn dpo(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let (p, o) = (pairs(), out.to_path_buf());
    let base = ["dpo", "--model", "tests/fixtures/hf/tiny-llama-lm", "--train", p.to_str().expect("utf8"), "--out", o.to_str().expect("utf8"), "--no-progress"];
    rmtrain(&[&base[..], extra].concat())
}

/// Σ log π of each example's chosen and rejected response (EOS included) under the model in `dir`.
fn sums(dir: &Path, examples: &[rmtrain_train::DpoExample]) -> Vec<(f64, f64)> {
    let lm = CausalLm::load(dir, &Device::flex()).expect("load");
    let items: Vec<(Vec<u32>, Vec<u32>)> = examples.iter().flat_map(|e| [(e.prompt.clone(), e.chosen.clone()), (e.prompt.clone(), e.rejected.clone())]).collect();
    let lp = lm.logprobs(&items, 4).expect("logprobs");
    lp.chunks(2).map(|c| (c[0].iter().map(|&x| x as f64).sum(), c[1].iter().map(|&x| x as f64).sum())).collect()
}

/// With all 8 pairs in one batch, the loss logged at step k is the mean over the pairs of
/// −log σ(β·h) at the weights after step k − 1: recomputed here by hand from the log-probs of
/// the step-2 checkpoint and of the reference (the init), it equals step 3's logged loss. Step 1
/// (policy = reference) logs log 2. The loss falls, the chosen responses gain on the rejected
/// ones, and the checkpoint has the fixture's tensor names and shapes (`LlamaForCausalLM`).
#[test]
fn dpo_loss_equals_a_hand_computation_and_the_policy_learns() {
    let out = tmp("learn");
    let (beta, sets) = (0.5, ["--set", "lr=1e-3", "--set", "batch_size=8", "--set", "epochs=6", "--set", "beta=0.5", "--set", "save_every=1", "--set", "keep_checkpoints=10"]);
    let (code, _, stderr) = dpo(&out, &sets);
    assert_eq!(code, 0, "{stderr}");
    let log: Vec<Value> = jsonl(&out.join("metrics.jsonl")).into_iter().filter(|r| r.get("loss").is_some()).collect();
    assert_eq!(log.len(), 6);
    let loss = |k: usize| log[k - 1]["loss"].as_f64().expect("loss");
    assert!((loss(1) - std::f64::consts::LN_2).abs() < 1e-5, "step 1: {}", loss(1));
    assert!(loss(6) < 0.5 * loss(1), "the loss falls: {log:?}");
    for key in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm", "lr"] {
        assert!(log[0].get(key).is_some(), "metrics lack {key}");
    }
    // The hand computation.
    let reference = CausalLm::load(&fixture("tiny-llama-lm"), &Device::flex()).expect("load");
    let examples = rmtrain_train::encode_dpo_pairs(&reference, &rmtrain_data::read_pairs(&pairs()).expect("pairs"), false).expect("encode");
    let (pol, refs) = (sums(&out.join("checkpoints/step-000002"), &examples), sums(&fixture("tiny-llama-lm"), &examples));
    let by_hand: f64 = pol
        .iter()
        .zip(&refs)
        .map(|((pc, pr), (rc, rr))| {
            let h = beta * ((pc - rc) - (pr - rr));
            (1.0 + (-h).exp()).ln() // −log σ(βh)
        })
        .sum::<f64>()
        / examples.len() as f64;
    assert!((by_hand - loss(3)).abs() < 1e-4, "step 3 loss {} vs by hand {by_hand}", loss(3));
    // The final policy prefers every chosen response more than the reference did.
    let fin = sums(&out.join("model"), &examples);
    for ((fc, fr), (rc, rr)) in fin.iter().zip(&refs) {
        assert!(fc - fr > rc - rr, "chosen − rejected log-prob: {} → {}", rc - rr, fc - fr);
    }
    // transformers' layout: the fixture's names and shapes; a config that declares the LM class.
    let names = |p: &Path| tensors(p).into_iter().map(|(n, s, _)| (n, s)).collect::<Vec<_>>();
    assert_eq!(names(&out.join("model/model.safetensors")), names(&fixture("tiny-llama-lm/model.safetensors")));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).expect("config")).expect("json");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
}

/// A run stopped at step 4 and resumed ends with the uninterrupted run's weights, bit for bit;
/// a resume under other settings is refused, and bad settings or pairs are one line each.
#[test]
fn dpo_resumes_bitwise_and_refuses_bad_input() {
    let full = tmp("full");
    let sets = ["--set", "lr=1e-3", "--set", "batch_size=4", "--set", "grad_accum=2", "--set", "epochs=3", "--set", "beta=0.5", "--set", "loss=ipo", "--set", "save_every=2"];
    let (code, _, stderr) = dpo(&full, &sets);
    assert_eq!(code, 0, "{stderr}");
    let part = tmp("part");
    let (code, _, stderr) = dpo(&part, &[&sets[..], &["--set", "max_steps=4"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(part.join("checkpoints/step-000004").is_dir());
    let (code, _, stderr) = dpo(&part, &[&sets[..], &["--resume"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let bytes = |d: &Path| std::fs::read(d.join("model/model.safetensors")).expect("weights");
    assert!(bytes(&full) == bytes(&part), "resumed weights differ from the uninterrupted run's");
    let losses = |d: &Path| jsonl(&d.join("metrics.jsonl")).into_iter().filter_map(|r| r.get("loss").map(|l| (r["step"].clone(), l.clone()))).collect::<Vec<_>>();
    assert_eq!(losses(&full), losses(&part));
    // Other settings: refused, the run left as it was.
    let other: Vec<&str> = sets.iter().map(|s| if *s == "beta=0.5" { "beta=0.3" } else { s }).collect();
    let (code, _, stderr) = dpo(&part, &[&other[..], &["--resume"]].concat());
    assert_ne!(code, 0);
    assert!(stderr.contains("settings differ"), "{stderr}");
    let bad = part.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\"}\n").expect("write");
    let b = bad.to_str().expect("utf8");
    let o = tmp("bad");
    let o = o.to_str().expect("utf8");
    let good = pairs();
    let good = good.to_str().expect("utf8");
    for (args, must) in [
        (vec!["dpo", "--model", "tests/fixtures/hf/tiny-llama-lm", "--train", b, "--out", o], "bad.jsonl:2: field \"rejected\": missing"),
        (vec!["dpo", "--model", "tests/fixtures/hf/tiny-llama-lm", "--train", b, "--out", o, "--set", "betta=1"], "betta"),
        (vec!["dpo", "--model", "tests/fixtures/hf/tiny-llama-lm", "--train", b, "--out", o, "--set", "loss=ipo", "--set", "label_smoothing=0.1"], "label_smoothing"),
        (vec!["dpo", "--model", "tests/fixtures/hf/tiny-bert-rm", "--train", good, "--out", o], "not a causal LM"),
    ] {
        let (code, stdout, stderr) = rmtrain(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stdout.is_empty());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(must), "{stderr} lacks {must}");
    }
}

/// recipes/tiny_dera.toml end to end: DPO, the DPO model at β/λ for the check, one realigned
/// decoding per aligned model over every λ, judged samples, the report; λ = 0 samples the
/// reference itself (KL exactly 0 on every sample); a second run reuses both DPO models.
#[test]
fn tiny_dera_recipe_runs_end_to_end_and_reuses_its_dpo_models() {
    let _serial = super::training_lock();
    let dir = tmp("recipe");
    let out = dir.join("run");
    let text = std::fs::read_to_string(root().join("recipes/tiny_dera.toml")).expect("recipe").replace("out = \"runs/tiny-dera\"", &format!("out = {:?}", out.display().to_string()));
    let recipe = dir.join("dera.toml");
    std::fs::write(&recipe, &text).expect("write");
    let r = recipe.to_str().expect("utf8");
    let (code, stdout, stderr) = rmtrain(&["recipe", r, "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    for label in ["| DeRa λ = 0 | ∞ (reference) |", "| DeRa λ = 0.5 | 1.0000 |", "| DeRa λ = 2 | 0.2500 |", "| DPO β = 0.25 | 0.2500 |"] {
        assert!(stdout.contains(label), "report lacks {label}: {stdout}");
    }
    for f in ["report.md", "report.json", "samples.jsonl", "plots/reward_vs_kl.png", "dpo/model/model.safetensors", "dpo-beta-0.25/model/model.safetensors"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let samples = jsonl(&out.join("samples.jsonl"));
    assert_eq!(samples.len(), 3 * 3 * (4 + 1), "prompts × samples × (λ values + the check model)");
    for s in samples.iter().filter(|s| s["lambda"].as_f64() == Some(0.0)) {
        assert_eq!(s["policy_logprob"], s["ref_logprob"], "λ = 0 is the reference: {s}");
    }
    assert!(samples.iter().all(|s| s["gold_reward"].is_f64() && s["proxy_reward"].is_f64()));
    let (code, _, stderr) = rmtrain(&["recipe", r, "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("β = 0.5 already trained") && stderr.contains("β = 0.25 already trained"), "{stderr}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, text.replace("check_lambdas = [2.0]", "check_lambdas = [0.0]")).expect("write");
    let (code, stdout, stderr) = rmtrain(&["recipe", bad.to_str().expect("utf8"), "--no-progress"]);
    assert_ne!(code, 0);
    assert!(stdout.is_empty() && stderr.trim_end().lines().count() == 1 && stderr.contains("check_lambdas"), "{stderr}");
}
