//! End-to-end tests of rmtrain: the BERT reward model against the PyTorch + transformers fixtures,
//! the losses against their reference values, training (loss falls, every parameter moves, exact
//! resume), checkpoint round trips, bad input through the binary, and a recipe end to end.

// Llama-family decoders (reward model, causal LM, GGUF) live in their own module of this one
// test binary (one link of Burn for all of them).
mod decoder;
// Best-of-N selection (RBoN) and sentence embeddings.
mod rbon;
// DPO of a causal LM.
mod dpo;
// Bounded mutation fuzzing of the readers of user files.
mod fuzz;
// The bad-input corpus: one broken file per verb.
mod bad_input;

// Per-process temp folders, shared with the other test binary.
mod common;
use burn::tensor::{Device, Tensor, TensorData};
use rmtrain_data::read_pairs;
use rmtrain_models::{RewardModel, RewardNet, ScoreOptions};
use rmtrain_train::trainer::Trainable;
use rmtrain_train::{TrainConfig, TrainRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn fixture(p: &str) -> PathBuf {
    root().join("tests/fixtures/hf").join(p)
}
fn tiny_rm() -> PathBuf {
    fixture("tiny-bert-rm")
}
fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).expect("read jsonl").lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}
fn tmp(name: &str) -> PathBuf {
    common::tmp_dirs::fresh("rmtrain-test", name)
}
fn cpu() -> Device {
    Device::flex()
}

/// The devices the fixture parity tests run on: flex always, libtorch when the tests were built
/// with `--features tch` (scripts/setup-libtorch.sh), and the GPU backends compiled in when
/// `RMTRAIN_TEST_GPU=1` says a GPU is there (a CPU-only machine has no adapter to run them on).
fn parity_devices() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut v = vec![("cpu", Device::flex())];
    #[cfg(feature = "tch")]
    v.push(("tch", {
        #[allow(deprecated)]
        Device::libtorch()
    }));
    #[allow(unused_variables)]
    let gpu = std::env::var("RMTRAIN_TEST_GPU").is_ok_and(|g| g == "1");
    #[cfg(feature = "cuda")]
    if gpu {
        v.push(("cuda", Device::cuda(0)));
    }
    #[cfg(feature = "wgpu")]
    if gpu {
        v.push(("wgpu", Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)));
    }
    v
}

/// Burn seeds one RNG per backend, shared by every thread: tests that train (dropout draws) run
/// one at a time so each sees only its own seeds.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());
fn training_lock() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Names of the tensors whose bytes differ between two safetensors files (empty = identical).
fn differing_tensors(a: &Path, b: &Path) -> Vec<String> {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len(), "tensor count");
    ta.iter().zip(&tb).filter(|(x, y)| x != y).map(|(x, _)| x.0.clone()).collect()
}

// ---------- the model against transformers ----------

#[test]
fn tiny_bert_rewards_match_transformers_one_text_at_a_time() {
    for (dev_name, dev) in parity_devices() {
        let rm = RewardModel::load(&tiny_rm(), 128, &dev).expect("load");
        for row in jsonl(&fixture("tiny-bert-rm/scores.jsonl")) {
            let text = row["text"].as_str().expect("text");
            let ids: Vec<u32> = row["input_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
            assert_eq!(rm.tokenizer.encode(text).expect("encode"), ids, "token ids of {text:?}");
            let r = rm.score_texts(&[text], &ScoreOptions { batch_size: 1, threads: 1 }).expect("score")[0] as f64;
            let want = row["reward"].as_f64().expect("reward");
            assert!((r - want).abs() < 1e-4, "{dev_name}: {text:?}: {r} vs {want}");
        }
    }
}

#[test]
fn tiny_bert_rewards_match_transformers_in_one_padded_batch() {
    for (dev_name, dev) in parity_devices() {
        padded_batch_rewards_match(dev_name, &dev);
    }
}

fn padded_batch_rewards_match(dev_name: &str, dev: &Device) {
    let rm = RewardModel::load(&tiny_rm(), 128, dev).expect("load");
    let rows = jsonl(&fixture("tiny-bert-rm/scores_batched.jsonl"));
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().expect("text")).collect();
    // One batch padded to the longest text (ours) ...
    let batched = rm.score_texts(&texts, &ScoreOptions { batch_size: 64, threads: 1 }).expect("score");
    // ... and one padded to 128 like the fixture, built by hand.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| rm.tokenizer.encode(t).expect("encode")).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let b = pad_to(rm.tokenizer.collate(&seqs), 128, 0);
    let (t_ids, t_mask) = b.to_tensors(dev);
    let padded: Vec<f32> = rm.net.forward(t_ids, t_mask).into_data().try_to_vec().expect("floats");
    for ((row, r), p) in rows.iter().zip(&batched).zip(&padded) {
        let want = row["reward_batched"].as_f64().expect("reward");
        assert!((*r as f64 - want).abs() < 1e-4, "{dev_name}: {}: {r} vs {want}", row["text"]);
        assert!((*p as f64 - want).abs() < 1e-4, "{dev_name}: {}: {p} vs {want}", row["text"]);
    }
}

/// `b` right-padded further, to `len` positions with `pad_id` (as the fixtures padded to 128).
fn pad_to(b: rmtrain_models::Batch, len: usize, pad_id: i64) -> rmtrain_models::Batch {
    let (n, s) = (b.batch, b.seq);
    let (mut ids, mut mask) = (Vec::with_capacity(n * len), Vec::with_capacity(n * len));
    for i in 0..n {
        ids.extend_from_slice(&b.ids[i * s..(i + 1) * s]);
        ids.extend(std::iter::repeat_n(pad_id, len - s));
        mask.extend_from_slice(&b.mask[i * s..(i + 1) * s]);
        mask.extend(std::iter::repeat_n(false, len - s));
    }
    rmtrain_models::Batch { ids, mask, seq: len, ..b }
}

#[test]
fn strict_loading_names_missing_and_unexpected_tensors() {
    let dir = tmp("strict");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny_rm().join(f), dir.join(f)).expect("copy");
    }
    // Rename one tensor: it is then both missing and unexpected.
    let bytes = std::fs::read(tiny_rm().join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    for (name, _) in tensors.iter_mut() {
        if name == "classifier.bias" {
            *name = "classifier.bias_renamed".into();
        }
    }
    let out = safetensors::tensor::serialize(tensors, None).expect("serialize");
    std::fs::write(dir.join("model.safetensors"), out).expect("write");
    let err = RewardModel::load(&dir, 128, &cpu()).err().expect("must fail").to_string();
    assert!(err.contains("classifier.bias: missing"), "{err}");
    assert!(err.contains("classifier.bias_renamed: unexpected"), "{err}");
}

// ---------- losses against losses.json ----------

fn losses_fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("losses.json")).expect("losses.json")).expect("json")
}
fn t1_on(v: &Value, dev: &Device) -> Tensor<1> {
    let xs: Vec<f64> = v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f64")).collect();
    let n = xs.len();
    Tensor::<1>::from_data(TensorData::new(xs.into_iter().map(|x| x as f32).collect::<Vec<_>>(), [n]), dev)
}
fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

#[test]
fn losses_match_reference_values() {
    for (dev_name, dev) in parity_devices() {
        losses_match_on(dev_name, &dev);
    }
}

fn losses_match_on(dev_name: &str, dev: &Device) {
    use rmtrain_train::losses::*;
    let f = losses_fixture();
    let (rc, rr, m) = (t1_on(&f["inputs"]["r_c"], dev), t1_on(&f["inputs"]["r_r"], dev), t1_on(&f["inputs"]["margin"], dev));
    let close = |a: f64, b: &Value, what: &str| {
        let b = b.as_f64().expect("f64");
        assert!((a - b).abs() < 1e-6, "{dev_name}: {what}: {a} vs {b}");
    };
    close(scalar(bradley_terry(rc.clone(), rr.clone(), None)), &f["bradley_terry"]["mean"], "bradley_terry");
    close(scalar(bradley_terry(rc.clone(), rr.clone(), Some(m))), &f["bradley_terry_margin"]["mean"], "margin");
    let eps = f["inputs"]["label_smoothing_eps"].as_f64().expect("eps");
    close(scalar(bradley_terry_smoothed(rc.clone(), rr.clone(), eps)), &f["label_smoothing"]["mean"], "smoothing");
    let coef = f["inputs"]["center_coef"].as_f64().expect("coef");
    close(scalar(center_term(rc.clone(), rr.clone(), coef)), &f["center_term"]["value"], "center");
    close(
        scalar(bradley_terry(rc.clone(), rr.clone(), None) + center_term(rc, rr, coef)),
        &f["bradley_terry_plus_center"],
        "bt + center",
    );
}

#[test]
fn pair_metrics_match_reference_values() {
    let f = losses_fixture();
    let v = |k: &str| -> Vec<f64> { f["inputs"][k].as_array().expect("a").iter().map(|x| x.as_f64().expect("f")).collect() };
    let m = rmtrain_eval::evaluate_pairs(&v("r_c"), &v("r_r"), None, 0);
    assert!((m.accuracy - f["pairwise_accuracy"]["value"].as_f64().expect("acc")).abs() < 1e-12);
    // The headline ECE is the top-label one; ece_p is still computed to match the fixture.
    assert!((m.ece - f["ece_toplabel"]["value"].as_f64().expect("ece")).abs() < 1e-12);
    let d: Vec<f64> = v("r_c").iter().zip(v("r_r")).map(|(c, r)| c - r).collect();
    assert!((rmtrain_eval::ece_p(&d).ece - f["ece_p"]["value"].as_f64().expect("ece")).abs() < 1e-12);
}

// ---------- training ----------

fn tiny_config() -> TrainConfig {
    TrainConfig {
        batch_size: 4,
        lr: 2e-3,
        epochs: 4,
        warmup_ratio: 0.1,
        log_every: 1,
        save_every: 0,
        ..TrainConfig::default()
    }
}

fn request(out: &Path, config: TrainConfig, resume: bool) -> TrainRequest {
    TrainRequest {
        init: tiny_rm(),
        train_pairs: read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs"),
        train_data_sha256: Some("tiny".into()),
        evals: vec![("tiny".into(), read_pairs(&root().join("tests/data/tiny_eval.jsonl")).expect("eval"))],
        config,
        out: out.to_path_buf(),
        resume,
        recipe: Value::Null,
        device: cpu(),
        replica_devices: Vec::new(),
        progress: false,
        trainable: Trainable::All,
    }
}

fn bt_loss(model: &Path, pairs_file: &Path) -> f64 {
    let rm = RewardModel::load(model, 128, &cpu()).expect("load");
    let pairs = read_pairs(pairs_file).expect("pairs");
    let (rc, rr) = rmtrain_train::score_pairs(&rm, &pairs, &ScoreOptions::default()).expect("score");
    rc.iter().zip(&rr).map(|(c, r)| (1.0 + (-(c - r)).exp()).ln()).sum::<f64>() / rc.len() as f64
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let mut v: Vec<_> = st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Tensors whose gradient is mathematically zero under the Bradley–Terry loss: softmax ignores a
/// per-row shift (attention key biases), and r_c − r_r cancels the head's bias. AdamW turns their
/// rounding noise into ±lr steps, so they are bounded, not matched.
fn zero_gradient_under_bt(name: &str) -> bool {
    name.ends_with(".attention.self.key.bias") || name == "classifier.bias"
}

#[test]
fn training_lowers_the_loss_and_moves_every_parameter() {
    let _serial = training_lock();
    let pairs = root().join("tests/data/tiny_pairs.jsonl");
    let before = bt_loss(&tiny_rm(), &pairs);
    let mut finals = Vec::new();
    for (dev_name, device) in parity_devices() {
        let out = tmp(&format!("train-{dev_name}"));
        // Without dropout, so the falling loss is the optimizer's doing alone; without weight decay,
        // so a tensor moves only if its gradient is non-zero.
        let cfg = TrainConfig { epochs: 8, lr: 1e-3, dropout: Some(0.0), weight_decay: 0.0, ..tiny_config() };
        let outcome = rmtrain_train::train(TrainRequest { device, ..request(&out, cfg, false) }).expect("train");
        let after = bt_loss(&outcome.model_dir, &pairs);
        assert!(after < before * 0.5, "{dev_name}: loss {before} -> {after}");
        let init = tensors(&tiny_rm().join("model.safetensors"));
        let trained = tensors(&outcome.model_dir.join("model.safetensors"));
        for ((n, _, a), (_, _, b)) in init.iter().zip(&trained) {
            if !zero_gradient_under_bt(n) {
                assert_ne!(a, b, "{dev_name}: {n} did not move");
            }
        }
        let log = jsonl(&out.join("metrics.jsonl"));
        let first = log.iter().find(|r| r.get("loss").is_some()).expect("a step line");
        for key in ["loss", "accuracy", "margin", "mean_reward", "min_reward", "max_reward", "lr", "tokens_per_second", "grad_norm"] {
            assert!(first.get(key).is_some(), "{dev_name}: metrics.jsonl lacks {key}");
        }
        finals.push((dev_name, after, log));
    }
    // 32 steps on another device: the same loss curve up to float summation order.
    for (dev_name, after, log) in &finals[1..] {
        let (_, after0, log0) = &finals[0];
        assert!((after - after0).abs() < 1e-4, "{dev_name}: final loss {after} vs cpu {after0}");
        for (a, b) in log.iter().zip(log0).filter(|(a, _)| a.get("loss").is_some()) {
            let (la, lb) = (a["loss"].as_f64().expect("loss"), b["loss"].as_f64().expect("loss"));
            assert!((la - lb).abs() < 1e-4, "{dev_name}: step {}: loss {la} vs cpu {lb}", a["step"]);
        }
    }
}

/// One model trained data-parallel over several devices (`TrainRequest::replica_devices`, the
/// CLI's `--device a,b`): replica k of each step runs on device k mod n and its gradients are
/// moved to the model's device. Flex is a single CPU device in Burn, so on flex alone the list
/// `cpu,cpu` must give bitwise the one-device run; with libtorch built in, replica 1 runs on the
/// tch device (a real transfer of gradients between backends) and the loss curve and the final
/// weights equal the one-device run's within float tolerance.
#[test]
fn one_model_trains_data_parallel_over_several_devices() {
    let _serial = training_lock();
    let cfg = TrainConfig { epochs: 4, lr: 1e-3, dropout: Some(0.0), replicas: 2, ..tiny_config() };
    let run = |name: &str, extra: Vec<Device>| {
        let out = tmp(&format!("devices-{name}"));
        let outcome = rmtrain_train::train(TrainRequest { replica_devices: extra, ..request(&out, cfg.clone(), false) }).expect("train");
        (f32_tensors(&outcome.model_dir.join("model.safetensors")), jsonl(&out.join("metrics.jsonl")))
    };
    let (one, one_log) = run("one", Vec::new());
    let (same, _) = run("cpu-cpu", vec![cpu()]);
    assert!(one == same, "cpu,cpu differs from one device");
    let out = tmp("devices-refused");
    let too_few = rmtrain_train::train(TrainRequest { replica_devices: vec![cpu(), cpu()], ..request(&out, cfg.clone(), false) }).err().expect("3 devices, 2 replicas");
    assert!(too_few.to_string().contains("fewer than the 3 devices"), "{too_few}");
    #[cfg(feature = "tch")]
    {
        #[allow(deprecated)]
        let (mixed, mixed_log) = run("cpu-tch", vec![Device::libtorch()]);
        let (mut worst_weight, mut worst_loss) = (0f32, 0f64);
        for ((n, _, a), (_, _, b)) in one.iter().zip(&mixed) {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            let tol = if zero_gradient_under_bt(n) { 2e-2 } else { 1e-4 };
            assert!(worst <= tol, "{n}: cpu,tch is {worst} from one device");
            if !zero_gradient_under_bt(n) {
                worst_weight = worst_weight.max(worst);
            }
        }
        for (a, b) in mixed_log.iter().zip(&one_log).filter(|(a, _)| a.get("loss").is_some()) {
            let (la, lb) = (a["loss"].as_f64().expect("loss"), b["loss"].as_f64().expect("loss"));
            assert!((la - lb).abs() < 1e-4, "step {}: loss {la} on cpu,tch vs {lb}", a["step"]);
            worst_loss = worst_loss.max((la - lb).abs());
        }
        eprintln!("cpu,tch against one device: weights within {worst_weight:e}, step losses within {worst_loss:e}");
    }
    let _ = one_log;
}

#[test]
fn every_parameter_gets_a_gradient_except_the_bt_invariant_ones() {
    // One backward pass of the BT loss on the tiny model: every tensor's gradient is non-zero,
    // except the two families the loss is mathematically blind to (whose gradient is rounding noise).
    use burn::optim::GradientsParams;
    let ad = cpu().autodiff();
    let rm = RewardModel::load(&tiny_rm(), 128, &ad).expect("load");
    let pairs = read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs");
    let ids: Vec<Vec<u32>> = pairs.iter().flat_map(|p| [p.chosen_text(), p.rejected_text()]).map(|t| rm.tokenizer.encode(&t).expect("encode")).collect();
    let (chosen, rejected): (Vec<&[u32]>, Vec<&[u32]>) = ids.chunks(2).map(|c| (c[0].as_slice(), c[1].as_slice())).unzip();
    let seqs: Vec<&[u32]> = chosen.iter().chain(&rejected).copied().collect();
    let (t_ids, t_mask) = rm.tokenizer.collate(&seqs).to_tensors(&ad);
    let r = rm.net.forward(t_ids, t_mask);
    let n = pairs.len();
    let loss = rmtrain_train::losses::bradley_terry(r.clone().narrow(0, 0, n), r.narrow(0, n, n), None);
    let grads = GradientsParams::from_grads(loss.backward(), &rm.net);
    for (name, p) in rm.net.hf_params() {
        let norm: f64 = match p {
            rmtrain_models::HfParam::Vector(t) => grads.get::<1>(t.id).expect("a gradient").square().sum().into_scalar::<f32>() as f64,
            rmtrain_models::HfParam::Matrix(t) | rmtrain_models::HfParam::LinearWeight(t) => {
                grads.get::<2>(t.id).expect("a gradient").square().sum().into_scalar::<f32>() as f64
            }
        }
        .sqrt();
        if zero_gradient_under_bt(&name) {
            assert!(norm < 1e-5, "{name}: gradient norm {norm} should be (numerically) zero");
        } else {
            assert!(norm > 1e-6, "{name}: gradient norm {norm}");
        }
    }
}

// ---------- optimizer-step parity with PyTorch (tests/fixtures/hf/train-steps) ----------

fn steps_fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("train-steps/steps.json")).expect("steps.json")).expect("json")
}

/// The fixture's protocol: pairs in file order, dropout 0, warm-up 1 step then linear decay over
/// 3, clip 0.5, weight decay 0.01 except biases and LayerNorm weights, lr 1e-3, 2 pairs a step.
fn parity_config(grad_accum: usize, replicas: usize) -> TrainConfig {
    let s = &steps_fixture()["settings"];
    TrainConfig {
        epochs: 1,
        batch_size: s["batch"].as_u64().expect("batch") as usize,
        grad_accum,
        replicas,
        lr: s["lr"].as_f64().expect("lr"),
        weight_decay: s["wd"].as_f64().expect("wd"),
        max_grad_norm: s["clip"].as_f64().expect("clip"),
        warmup_steps: Some(s["warmup"].as_u64().expect("warmup")),
        schedule: rmtrain_train::Schedule::Linear,
        shuffle: false,
        dropout: Some(0.0),
        log_every: 1,
        save_every: 0,
        ..TrainConfig::default()
    }
}

fn parity_run(name: &str, grad_accum: usize, replicas: usize, device: &Device) -> (PathBuf, Vec<Value>) {
    let out = tmp(name);
    let req = TrainRequest {
        train_pairs: read_pairs(&fixture("train-steps/pairs.jsonl")).expect("pairs"),
        evals: Vec::new(),
        device: device.clone(),
        replica_devices: Vec::new(),
        ..request(&out, parity_config(grad_accum, replicas), false)
    };
    let outcome = rmtrain_train::train(req).expect("train");
    let steps = jsonl(&out.join("metrics.jsonl")).into_iter().filter(|r| r.get("loss").is_some()).collect();
    (outcome.model_dir, steps)
}

#[test]
fn optimizer_steps_match_pytorch_adamw_step_by_step() {
    let _serial = training_lock();
    let want = steps_fixture();
    let want_steps = want["steps"].as_array().expect("steps");
    let init = f32_tensors(&tiny_rm().join("model.safetensors"));
    let torch = f32_tensors(&fixture("train-steps/final/model.safetensors"));
    let lr_sum: f64 = want_steps.iter().map(|s| s["lr"].as_f64().expect("lr")).sum();
    let mut finals = Vec::new();
    let runs = [("parity-1", 1, 1), ("parity-accum2", 2, 1), ("parity-replicas2", 1, 2)];
    for ((run, accum, replicas), (dev_name, device)) in parity_devices().into_iter().flat_map(|d| runs.map(|r| (r, d.clone()))) {
        let name = &format!("{run}-{dev_name}");
        let (model, got) = parity_run(name, accum, replicas, &device);
        assert_eq!(got.len(), want_steps.len(), "{name}: one metrics line per step");
        for (g, w) in got.iter().zip(want_steps) {
            let step = w["step"].as_u64().expect("step");
            let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
            assert!((f(g, "lr") - f(w, "lr")).abs() < 1e-12, "{name} step {step}: lr {} vs {}", f(g, "lr"), f(w, "lr"));
            assert!((f(g, "loss") - f(w, "loss")).abs() < 1e-5, "{name} step {step}: loss {} vs {}", f(g, "loss"), f(w, "loss"));
            let (gn, wn) = (f(g, "grad_norm"), f(w, "grad_norm_before_clip"));
            assert!((gn - wn).abs() <= 1e-5 * wn, "{name} step {step}: grad norm {gn} vs {wn}");
        }
        let ours = f32_tensors(&model.join("model.safetensors"));
        assert_eq!(ours.len(), torch.len());
        for (((n, sa, a), (m, sb, b)), (_, _, start)) in ours.iter().zip(&torch).zip(&init) {
            assert_eq!((n, sa), (m, sb));
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) as f64;
            if zero_gradient_under_bt(n) {
                // Each run moves these by at most about one lr per step, in any direction.
                for (who, w) in [("ours", a), ("torch", b)] {
                    let moved = w.iter().zip(start).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) as f64;
                    assert!(moved <= lr_sum * 1.01, "{name}: {n} ({who}) moved {moved} > summed lr {lr_sum}");
                }
            } else {
                assert!(worst <= 1e-5, "{name}: {n} differs from torch by {worst}");
            }
        }
        finals.push((dev_name, ours));
    }
    // Accumulation and replicas change only the summation order (on each device).
    for (dev_name, other) in &finals {
        let first = &finals.iter().find(|(d, _)| d == dev_name).expect("the device's first run").1;
        for ((n, _, a), (_, _, b)) in first.iter().zip(other) {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(zero_gradient_under_bt(n) || worst <= 1e-5, "{dev_name}: {n}: {worst} between accumulation/replica settings");
        }
    }
}

#[test]
fn a_run_whose_loss_turns_non_finite_stops_and_saves_nothing() {
    let _serial = training_lock();
    let out = tmp("nan");
    let pairs = root().join("tests/data/tiny_pairs.jsonl").display().to_string();
    let model = tiny_rm().display().to_string();
    let run = out.join("run").display().to_string();
    let (code, stdout, stderr) =
        rmtrain(&["train", "--model", &model, "--train", &pairs, "--out", &run, "--no-progress", "--set", "lr=1e30", "--set", "epochs=8", "--set", "warmup_ratio=0"]);
    assert_ne!(code, 0, "a diverged run must fail: {stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("diverged at step") && stderr.contains("not finite"), "{stderr}");
    assert!(!out.join("run/model").exists(), "no model/ after a diverged run");
    let checkpoints = std::fs::read_dir(out.join("run/checkpoints")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(checkpoints, 0, "no checkpoint after a diverged run");
    // Diverging on the very last step (finite loss, weights that overflow in the forward): the
    // final checkpoint and model/ are refused too.
    let (code, _, stderr) = rmtrain(&[
        "train", "--model", &model, "--train", &pairs, "--out", &run, "--no-progress", "--set", "lr=1e30", "--set", "warmup_ratio=0", "--set", "max_steps=1",
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("diverged at step 1"), "{stderr}");
    assert!(!out.join("run/model").exists());
    assert_eq!(std::fs::read_dir(out.join("run/checkpoints")).map(|d| d.count()).unwrap_or(0), 0);
}

// ---------- loading: bare backbones, pre-training heads ----------

/// A copy of tiny-bert-rm in the layout of the real all-MiniLM-L6-v2 folder: a bare `BertModel`
/// (no `bert.` prefix, no classifier, architectures ["BertModel"]), an integer position_ids buffer.
fn bare_backbone(name: &str) -> PathBuf {
    let dir = tmp(name);
    std::fs::copy(tiny_rm().join("tokenizer.json"), dir.join("tokenizer.json")).expect("tokenizer");
    let mut config: serde_json::Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(tiny_rm().join("config.json")).expect("config")).expect("json");
    config.insert("architectures".into(), serde_json::json!(["BertModel"]));
    for k in ["id2label", "label2id"] {
        config.remove(k);
    }
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).expect("json")).expect("write");
    let mut rows: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors(&tiny_rm().join("model.safetensors"))
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("classifier."))
        .map(|(n, s, b)| (n.strip_prefix("bert.").expect("prefixed").to_string(), safetensors::Dtype::F32, s, b))
        .collect();
    rows.push(("embeddings.position_ids".into(), safetensors::Dtype::I64, vec![1, 128], (0..128i64).flat_map(|i| i.to_le_bytes()).collect()));
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        rows.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"))).collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).expect("ser")).expect("write");
    dir
}

#[test]
fn a_bare_backbone_gets_a_fresh_seeded_head_and_saves_as_a_sequence_classifier() {
    let _serial = training_lock();
    let backbone = bare_backbone("bare");
    let rm = RewardModel::load(&backbone, 128, &cpu()).expect("a bare backbone loads");
    assert_eq!(rm.notes.initialised.len(), 1, "{:?}", rm.notes.initialised);
    assert!(rm.notes.initialised[0].starts_with("classifier."), "{:?}", rm.notes.initialised);
    // Scoring refuses it: its head is random.
    let texts = root().join("tests/data/tiny_eval.jsonl").display().to_string();
    let (code, _, stderr) = rmtrain(&["score", "--model", &backbone.display().to_string(), "--input", &texts]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not a reward model"), "{stderr}");
    // Two runs with one seed get the same new head; another seed, another head.
    let head = |seed: u64, name: &str| {
        let cfg = TrainConfig { seed, max_steps: Some(0), ..tiny_config() };
        let out = tmp(name);
        let outcome = rmtrain_train::train(TrainRequest { init: backbone.clone(), evals: Vec::new(), ..request(&out, cfg, false) }).expect("train");
        tensors(&outcome.model_dir.join("model.safetensors"))
    };
    let (a, b, c) = (head(0, "bare-a"), head(0, "bare-b"), head(1, "bare-c"));
    let classifier = |t: &[(String, Vec<usize>, Vec<u8>)]| t.iter().find(|(n, _, _)| n == "classifier.weight").expect("classifier").2.clone();
    assert_eq!(classifier(&a), classifier(&b), "same seed, same head");
    assert_ne!(classifier(&a), classifier(&c), "another seed, another head");
    // The checkpoint is in BertForSequenceClassification's layout, tensor for tensor the fixture's.
    let names = |t: &[(String, Vec<usize>, Vec<u8>)]| t.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&tensors(&tiny_rm().join("model.safetensors"))));
    // The backbone's weights are carried over unchanged.
    let init = tensors(&tiny_rm().join("model.safetensors"));
    for ((n, _, x), (_, _, y)) in a.iter().zip(&init) {
        if !n.starts_with("classifier.") {
            assert_eq!(x, y, "{n} changed without training");
        }
    }
}

#[test]
fn head_only_training_leaves_every_backbone_tensor_bitwise_unchanged() {
    let _serial = training_lock();
    let out = tmp("head-only");
    let cfg = TrainConfig { epochs: 2, lr: 1e-2, dropout: Some(0.1), ..tiny_config() };
    let outcome = rmtrain_train::train(TrainRequest { trainable: Trainable::HeadOnly, ..request(&out, cfg, false) }).expect("train");
    let init = tensors(&tiny_rm().join("model.safetensors"));
    let trained = tensors(&outcome.model_dir.join("model.safetensors"));
    for ((n, _, a), (_, _, b)) in init.iter().zip(&trained) {
        let head = n.starts_with("bert.pooler.") || n.starts_with("classifier.");
        if head {
            assert!(a != b || zero_gradient_under_bt(n), "head tensor {n} did not move");
        } else {
            assert_eq!(a, b, "backbone tensor {n} moved in a linear probe");
        }
    }
}

#[test]
fn pretraining_heads_are_ignored_and_other_unknown_tensors_still_fail() {
    let with = |name: &str, extra: &[&str]| {
        let dir = tmp(name);
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(tiny_rm().join(f), dir.join(f)).expect("copy");
        }
        let mut rows: Vec<(String, Vec<usize>, Vec<u8>)> = tensors(&tiny_rm().join("model.safetensors"));
        for n in extra {
            rows.push((n.to_string(), vec![4], vec![0u8; 16]));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            rows.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("view"))).collect();
        std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).expect("ser")).expect("write");
        dir
    };
    let heads = with("cls-heads", &["cls.predictions.bias", "cls.predictions.transform.dense.bias", "cls.seq_relationship.bias"]);
    let rm = RewardModel::load(&heads, 128, &cpu()).expect("pre-training heads are tolerated");
    assert_eq!(rm.notes.ignored.len(), 1, "{:?}", rm.notes.ignored);
    assert!(rm.notes.ignored[0].contains("3 tensors"), "{:?}", rm.notes.ignored);
    let texts = root().join("tests/data/tiny_eval.jsonl").display().to_string();
    let (code, _, stderr) = rmtrain(&["eval", "--model", &heads.display().to_string(), "--data", &format!("t={texts}")]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("ignored") && l.contains("cls.predictions")).count(), 1, "one info line: {stderr}");
    let unknown = with("cls-unknown", &["cls.predictions.bias", "foo.bar"]);
    let err = RewardModel::load(&unknown, 128, &cpu()).err().expect("foo.bar must fail").to_string();
    assert!(err.contains("foo.bar: unexpected"), "{err}");
}
#[test]
fn checkpoint_has_the_fixture_tensor_names_and_shapes_and_round_trips_rewards() {
    let _serial = training_lock();
    let out = tmp("roundtrip");
    let cfg = TrainConfig { epochs: 1, ..tiny_config() };
    let outcome = rmtrain_train::train(request(&out, cfg, false)).expect("train");
    let names = |p: &Path| tensors(p).into_iter().map(|(n, s, _)| (n, s)).collect::<Vec<_>>();
    assert_eq!(names(&outcome.model_dir.join("model.safetensors")), names(&tiny_rm().join("model.safetensors")));
    for f in ["config.json", "tokenizer.json", "rmtrain.json"] {
        assert!(outcome.model_dir.join(f).is_file(), "{f} missing");
    }
    // save -> load -> score: identical rewards, and a second save is byte-identical.
    let texts = ["good", "a boring story", "Hello world!"];
    let a = RewardModel::load(&outcome.model_dir, 128, &cpu()).expect("load");
    let ra = a.score_texts(&texts, &ScoreOptions::default()).expect("score");
    let again = tmp("roundtrip2");
    a.save_hf(&again).expect("save");
    let b = RewardModel::load(&again, 128, &cpu()).expect("reload");
    assert_eq!(ra, b.score_texts(&texts, &ScoreOptions::default()).expect("score"));
    assert!(differing_tensors(&outcome.model_dir.join("model.safetensors"), &again.join("model.safetensors")).is_empty());
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(outcome.model_dir.join("rmtrain.json")).expect("m")).expect("json");
    assert_eq!(manifest["step"], 3);
    assert!(manifest["init_weights_sha256"].as_str().is_some_and(|s| s.len() == 64));
}

#[test]
fn resume_after_a_stop_ends_with_the_same_weights_bitwise() {
    let _serial = training_lock();
    // Checkpoints every 2 steps, only the newest kept: the checkpoint a run resumes from is pruned
    // while it goes on (its tokenizer must still reach later checkpoints).
    let cfg = TrainConfig { grad_accum: 2, dropout: Some(0.1), save_every: 2, keep_checkpoints: 1, ..tiny_config() };
    let full = tmp("resume-full");
    let whole = rmtrain_train::train(request(&full, cfg.clone(), false)).expect("uninterrupted");
    let part = tmp("resume-part");
    let stopped = TrainConfig { max_steps: Some(5), ..cfg.clone() };
    rmtrain_train::train(request(&part, stopped, false)).expect("first half");
    let other = TrainConfig { lr: 5e-3, ..cfg.clone() };
    let refused = rmtrain_train::train(request(&part, other, true)).err().expect("other settings must be refused").to_string();
    assert!(refused.contains("training settings"), "{refused}");
    let resumed = rmtrain_train::train(request(&part, cfg, true)).expect("resumed");
    RewardModel::load(&resumed.model_dir, 128, &cpu()).expect("the resumed run's model loads, tokenizer included");
    assert_eq!(resumed.steps, whole.steps);
    let differ = differing_tensors(&whole.model_dir.join("model.safetensors"), &resumed.model_dir.join("model.safetensors"));
    assert!(differ.is_empty(), "resumed run differs in {differ:?}");
    let steps: Vec<u64> = jsonl(&part.join("metrics.jsonl")).iter().filter_map(|r| r.get("loss").and(r["step"].as_u64())).collect();
    assert_eq!(steps, (1..=whole.steps).collect::<Vec<_>>(), "metrics log continues without gaps or repeats");
}

// ---------- the binary ----------

fn rmtrain(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rmtrain")).args(args).current_dir(root()).output().expect("run rmtrain");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn assert_one_line_error(args: &[&str], must_contain: &[&str]) {
    let (code, stdout, stderr) = rmtrain(args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert!(stdout.is_empty(), "{args:?}: partial output {stdout:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one error line, got {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for s in must_contain {
        assert!(stderr.contains(s), "{args:?}: {stderr:?} lacks {s:?}");
    }
}

#[test]
fn bad_input_gives_one_clear_error_line() {
    let dir = tmp("bad");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let model = tiny_rm().display().to_string();
    let malformed = write("malformed.jsonl", "{\"text\": \"fine\"}\n{\"text\": oops}\n");
    assert_one_line_error(&["score", "--model", &model, "--input", &malformed], &["malformed.jsonl:2", "invalid JSON"]);
    let missing = write("missing.jsonl", "{\"chosen\": \"a\", \"rejected\": \"b\"}\n{\"chosen\": \"a\"}\n");
    assert_one_line_error(&["score", "--model", &model, "--input", &missing], &["missing.jsonl:2", "rejected"]);
    let empty = write("empty.jsonl", "{\"chosen\": \"a\", \"rejected\": \"  \"}\n");
    assert_one_line_error(&["score", "--model", &model, "--input", &empty], &["empty.jsonl:1", "rejected", "empty"]);
    let ok = write("ok.jsonl", "{\"text\": \"fine\"}\n");
    assert_one_line_error(&["score", "--model", "/nonexistent/model", "--input", &ok], &["/nonexistent/model"]);
    let recipe = write("bad.toml", "name = \"x\"\nout = \"runs/x\"\n[model]\nbackbone = \"b\"\n[data]\ntrain = \"t\"\n[train]\nlr = 1e-5\nlearning_rate = 2\n");
    assert_one_line_error(&["recipe", &recipe], &["bad.toml:9", "learning_rate"]);
}

#[test]
fn score_keeps_fields_and_adds_rewards() {
    let dir = tmp("score");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"Hello world!\", \"id\": 7}\n{\"chosen\": \"good\", \"rejected\": \"bad\", \"k\": \"v\"}\n").expect("write");
    let (code, stdout, stderr) = rmtrain(&["score", "--model", &tiny_rm().display().to_string(), "--input", &input.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines[0]["id"], 7);
    assert!((lines[0]["reward"].as_f64().expect("reward") - 0.8950643539428711).abs() < 1e-4);
    assert_eq!(lines[1]["k"], "v");
    assert!(lines[1]["reward_chosen"].is_f64() && lines[1]["reward_rejected"].is_f64());
}

#[test]
fn tiny_recipe_runs_end_to_end() {
    let _serial = training_lock();
    let (code, stdout, stderr) = rmtrain(&["recipe", "recipes/tiny.toml", "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("| tiny |"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(root().join("runs/tiny/report.json")).expect("report")).expect("json");
    assert_eq!(report["results"].as_array().expect("results").len(), 2);
    assert!(root().join("runs/tiny/model/model.safetensors").is_file());
}

// ---------- WARM: averaging, ensembles, the recipe ----------

fn warm_member(k: usize) -> PathBuf {
    fixture(&format!("warm/model_{k}"))
}

fn f32_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    tensors(path)
        .into_iter()
        .map(|(n, s, b)| (n, s, b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
        .collect()
}

fn assert_tensors_close(a: &Path, b: &Path, tol: f32) {
    let (ta, tb) = (f32_tensors(a), f32_tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((n, sa, va), (m, sb, vb)) in ta.iter().zip(&tb) {
        assert_eq!((n, sa), (m, sb));
        let worst = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst <= tol, "{n}: max abs diff {worst}");
    }
}

#[test]
fn warm_average_matches_the_fixture_weights_and_rewards() {
    let members: Vec<PathBuf> = (0..3).map(warm_member).collect();
    let rows = jsonl(&fixture("warm/scores.jsonl"));
    for (weights, file, column) in [
        (None, "average.safetensors", "reward_average"),
        (Some(vec![0.5, 0.3, 0.2]), "average_w.safetensors", "reward_average_w"),
    ] {
        let out = tmp(&format!("avg-{column}"));
        let report = rmtrain_merge::average_checkpoints(&members, &out.join("avg"), &rmtrain_merge::AverageOptions { weights, strict: false })
            .expect("average");
        // The fixtures have no rmtrain.json: a shared init cannot be verified, which is a warning.
        assert!(report.warnings.iter().any(|w| w.contains("cannot be verified")), "{:?}", report.warnings);
        assert_tensors_close(&out.join("avg/model.safetensors"), &fixture(&format!("warm/{file}")), 1e-6);
        let rm = RewardModel::load(&out.join("avg"), 128, &cpu()).expect("load average");
        for row in &rows {
            let r = rm.score_texts(&[row["text"].as_str().expect("text")], &ScoreOptions::default()).expect("score")[0] as f64;
            let want = row[column].as_f64().expect("reward");
            assert!((r - want).abs() < 1e-4, "{column}: {r} vs {want}");
        }
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("avg/rmtrain.json")).expect("manifest")).expect("json");
        assert_eq!(manifest["members"].as_array().expect("members").len(), 3);
    }
}

/// A copy of fixture member `k` in a temp folder, for corrupting one aspect of it.
fn member_copy(k: usize, name: &str) -> PathBuf {
    let dir = tmp(name).join("m");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(warm_member(k).join(f), dir.join(f)).expect("copy");
        let mut perm = std::fs::metadata(dir.join(f)).expect("meta").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(dir.join(f), perm).expect("chmod");
    }
    dir
}

fn rewrite_tensors(dir: &Path, edit: impl Fn(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let mut rows: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    edit(&mut rows);
    let views: Vec<(String, safetensors::tensor::TensorView)> = rows
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, None).expect("ser")).expect("write");
}

#[test]
fn averaging_refuses_each_kind_of_mismatch_and_names_it() {
    let ok = warm_member(0);
    let refuse = |other: &Path, expect: &str| {
        let out = tmp("refused").join("avg");
        let err = rmtrain_merge::average_checkpoints(&[ok.clone(), other.to_path_buf()], &out, &Default::default())
            .err()
            .unwrap_or_else(|| panic!("averaging with {} should fail", other.display()))
            .to_string();
        assert!(err.contains(expect), "{err:?} lacks {expect:?}");
        assert!(!out.exists(), "no output folder after a refusal");
    };
    // config
    let d = member_copy(1, "mm-config");
    let text = std::fs::read_to_string(d.join("config.json")).expect("config").replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 2");
    std::fs::write(d.join("config.json"), text).expect("write");
    refuse(&d, "num_attention_heads");
    // tensor names
    let d = member_copy(1, "mm-names");
    rewrite_tensors(&d, |rows| {
        let r = rows.iter_mut().find(|r| r.0 == "classifier.bias").expect("bias");
        r.0 = "classifier.renamed".into();
    });
    refuse(&d, "tensor classifier.bias is in");
    // shapes
    let d = member_copy(1, "mm-shape");
    rewrite_tensors(&d, |rows| {
        let r = rows.iter_mut().find(|r| r.0 == "classifier.weight").expect("classifier");
        r.2 = vec![32, 1];
    });
    refuse(&d, "classifier.weight has shape");
    // dtypes
    let d = member_copy(1, "mm-dtype");
    rewrite_tensors(&d, |rows| {
        let r = rows.iter_mut().find(|r| r.0 == "classifier.bias").expect("bias");
        r.1 = safetensors::Dtype::I32;
    });
    refuse(&d, "classifier.bias has dtype");
    // tokenizer
    let d = member_copy(1, "mm-tok");
    let tok = std::fs::read_to_string(d.join("tokenizer.json")).expect("tok").replacen("[UNK]", "[UNKNOWN]", 1);
    std::fs::write(d.join("tokenizer.json"), tok).expect("write");
    refuse(&d, "tokenizer.json differs");
    // different init weights: a warning, or a refusal under strict
    let (a, b) = (member_copy(0, "init-a"), member_copy(1, "init-b"));
    for (dir, sha) in [(&a, "a".repeat(64)), (&b, "b".repeat(64))] {
        rmtrain_core::Manifest { init_weights_sha256: Some(sha), ..Default::default() }.write(dir).expect("manifest");
    }
    let out = tmp("init").join("avg");
    let report = rmtrain_merge::average_checkpoints(&[a.clone(), b.clone()], &out, &Default::default()).expect("warns only");
    assert!(report.warnings.iter().any(|w| w.contains("different init weights")), "{:?}", report.warnings);
    let strict = rmtrain_merge::AverageOptions { strict: true, ..Default::default() };
    let err = rmtrain_merge::average_checkpoints(&[a, b], &tmp("init-strict").join("avg"), &strict).expect_err("strict refuses").to_string();
    assert!(err.contains("different init weights") && err.contains("--strict"), "{err}");
}

#[test]
fn ensemble_scores_combine_z_normalised_members_by_hand() {
    // Members with known reward statistics: z = (r − mean) / std, then mean / worst / mean − λ·std.
    let dir = tmp("ens");
    let texts = dir.join("t.jsonl");
    std::fs::write(&texts, "{\"text\": \"Hello world!\"}\n{\"text\": \"ok\"}\n").expect("write");
    let mut members = Vec::new();
    for (k, (mean, std)) in [(0.0, 1.0), (0.5, 2.0)].into_iter().enumerate() {
        let m = member_copy(k, &format!("ens-{k}"));
        rmtrain_core::Manifest { reward_mean: Some(mean), reward_std: Some(std), ..Default::default() }.write(&m).expect("manifest");
        members.push((m, mean, std));
    }
    let raw: Vec<Vec<f64>> = members
        .iter()
        .map(|(m, _, _)| {
            let rm = RewardModel::load(m, 128, &cpu()).expect("load");
            rm.score_texts(&["Hello world!", "ok"], &ScoreOptions::default()).expect("score").into_iter().map(f64::from).collect()
        })
        .collect();
    let z: Vec<Vec<f64>> = members.iter().zip(&raw).map(|((_, mean, std), r)| r.iter().map(|x| (x - mean) / std).collect()).collect();
    for (rule, want) in [
        ("mean", [(z[0][0] + z[1][0]) / 2.0, (z[0][1] + z[1][1]) / 2.0]),
        ("worst", [z[0][0].min(z[1][0]), z[0][1].min(z[1][1])]),
        ("uncertainty:2", [(z[0][0] + z[1][0]) / 2.0 - 2.0 * (z[0][0] - z[1][0]).abs() / 2.0, (z[0][1] + z[1][1]) / 2.0 - 2.0 * (z[0][1] - z[1][1]).abs() / 2.0]),
    ] {
        let (m0, m1) = (members[0].0.display().to_string(), members[1].0.display().to_string());
        let (code, stdout, stderr) = rmtrain(&["score", "--model", &m0, "--model", &m1, "--combine", rule, "--input", &texts.display().to_string()]);
        assert_eq!(code, 0, "{stderr}");
        let got: Vec<f64> = stdout.lines().map(|l| serde_json::from_str::<Value>(l).expect("json")["reward"].as_f64().expect("reward")).collect();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{rule}: {g} vs {w}");
        }
    }
}

#[test]
fn tiny_warm_recipe_runs_end_to_end() {
    let _serial = training_lock();
    let _ = std::fs::remove_dir_all(root().join("runs/tiny-warm"));
    let (code, stdout, stderr) = rmtrain(&["recipe", "recipes/tiny_warm.toml", "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    for label in ["| WARM |", "| member-0 |", "| ENS-mean |", "| ENS-worst |", "| ENS-uncertainty:1 |", "| mean member |"] {
        assert!(stdout.contains(label), "report lacks {label}: {stdout}");
    }
    let run = root().join("runs/tiny-warm");
    for f in ["report.md", "report.json", "plots/accuracy.png", "plots/reliability_warm.png", "plots/interpolation.png", "warm/model.safetensors", "shared-init/model/rmtrain.json"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(run.join("warm/rmtrain.json")).expect("m")).expect("json");
    let inits: Vec<&Value> = (0..3).map(|k| &manifest["members"][k]["init_weights_sha256"]).collect();
    assert!(inits.iter().all(|i| *i == inits[0] && i.is_string()), "members share the probed init: {inits:?}");
    // WARM is usable in an ensemble and scores at its members' length.
    assert_eq!(manifest["max_length"], 128);
    assert!(manifest["reward_mean"].is_f64() && manifest["reward_std"].as_f64().is_some_and(|s| s > 0.0), "{manifest}");
    assert!(manifest["recipe"]["reward_stats"].as_str().is_some_and(|s| s.contains("own")), "{manifest}");
    // --member K on a finished run reuses the member and exits without averaging again.
    let (code, _, stderr) = rmtrain(&["recipe", "recipes/tiny_warm.toml", "--no-progress", "--member", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("member 1 already trained"), "{stderr}");
    // Regression: after a change to the recipe, a member whose checkpoints are of the old settings
    // is trained again from scratch (it once tried to resume them and failed).
    let changed = tmp("warm-changed").join("changed.toml");
    let text = std::fs::read_to_string(root().join("recipes/tiny_warm.toml")).expect("recipe").replace("lr = [5e-4, 1e-3, 2e-3]", "lr = [5e-4, 1e-3, 3e-3]");
    std::fs::write(&changed, text).expect("write");
    let (code, _, stderr) = rmtrain(&["recipe", &changed.display().to_string(), "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("member 0 already trained") && stderr.contains("member 2: seed 2") && !stderr.contains("resuming"), "{stderr}");
}

/// tiny_warm.toml with its run folder moved to `out` and `edit` applied to the text.
fn tiny_warm_copy(name: &str, edit: impl Fn(String) -> String) -> (PathBuf, PathBuf) {
    let dir = tmp(name);
    let out = dir.join("run");
    let text = std::fs::read_to_string(root().join("recipes/tiny_warm.toml")).expect("recipe").replace("out = \"runs/tiny-warm\"", &format!("out = {:?}", out.display().to_string()));
    let path = dir.join("recipe.toml");
    std::fs::write(&path, edit(text)).expect("write");
    (path, out)
}

#[test]
fn a_warm_recipe_checks_every_eval_path_before_training() {
    let (recipe, out) = tiny_warm_copy("warm-bad-eval", |t| t.replace("train = \"tests/data/tiny_pairs.jsonl\" }", "nope = \"tests/data/nope.jsonl\" }"));
    assert_one_line_error(&["recipe", &recipe.display().to_string(), "--no-progress"], &["data.eval.nope", "nope.jsonl"]);
    assert!(!out.join("shared-init").exists() && !out.join("members").exists(), "nothing trained before the check");
}

#[test]
fn warm_members_in_parallel_processes_share_one_init() {
    let _serial = training_lock();
    let (recipe, out) = tiny_warm_copy("warm-parallel", |t| t);
    let spawn = |k: &str| {
        Command::new(env!("CARGO_BIN_EXE_rmtrain"))
            .args(["recipe", &recipe.display().to_string(), "--no-progress", "--member", k])
            .current_dir(root())
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("0"));
        let b = s.spawn(|| spawn("1"));
        (a.join().expect("thread").expect("run"), b.join().expect("thread").expect("run"))
    });
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    assert!(a.status.success() && b.status.success(), "{}\n{}", err(&a), err(&b));
    let built = [&a, &b].iter().filter(|o| err(o).contains("warm: shared init: new head")).count();
    assert_eq!(built, 1, "exactly one process builds the shared init:\n{}\n{}", err(&a), err(&b));
    for k in 0..2 {
        let m: Value = serde_json::from_str(&std::fs::read_to_string(out.join(format!("members/member-{k}/model/rmtrain.json"))).expect("manifest")).expect("json");
        let init = rmtrain_core::sha256_file(&out.join("shared-init/model/model.safetensors")).expect("sha");
        assert_eq!(m["init_weights_sha256"], init, "member {k} trained from the shared init");
    }
}

/// WARM as scheduler jobs: init, each member in its own process (its index from --member,
/// SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX), then merge, give bitwise the average of the
/// one-process run; merge refuses to run before the init and every member have finished.
#[test]
fn warm_stages_as_separate_jobs_reproduce_the_one_process_run_bitwise() {
    let _serial = training_lock();
    let no_interp = |t: String| t.replace("interpolate = { members = [0, 2], steps = 3, set = \"tiny\" }", "");
    let (recipe, out) = tiny_warm_copy("warm-stages", no_interp);
    // The one-process run also takes the device-list path (`cpu,cpu`: one device in Burn, so
    // bitwise the same numbers).
    let (single, single_out) = tiny_warm_copy("warm-stages-single", |t| no_interp(t).replace("device = \"cpu\"", "device = \"cpu,cpu\""));
    assert!(std::fs::read_to_string(&single).expect("recipe").contains("device = \"cpu,cpu\""));
    let recipe = recipe.display().to_string();
    let stage = |args: &[&str], env: Option<(&str, &str)>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rmtrain"));
        c.args(["recipe", &recipe, "--no-progress"]).args(args).current_dir(root()).env_remove("SLURM_ARRAY_TASK_ID").env_remove("JOB_COMPLETION_INDEX");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let o = c.output().expect("run rmtrain");
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (code, err) = stage(&["--stage", "merge"], None);
    assert!(code != 0 && err.contains("no finished shared init") && err.contains("init stage"), "{err}");
    let (code, err) = stage(&["--stage", "member"], None);
    assert!(code != 0 && err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
    let (code, err) = stage(&["--stage", "init"], None);
    assert!(code == 0 && err.contains("shared init: new head") && !err.contains("member"), "{err}");
    assert!(!out.join("members").exists() && !out.join("report.md").exists());
    let (code, err) = stage(&["--stage", "member"], Some(("SLURM_ARRAY_TASK_ID", "2")));
    assert!(code == 0 && err.contains("training member 2") && !err.contains("shared init: new head"), "{err}");
    let (code, err) = stage(&["--stage", "merge"], None);
    assert!(code != 0 && err.contains("member 0 has not finished"), "{err}");
    let (code, err) = stage(&["--stage", "member"], Some(("JOB_COMPLETION_INDEX", "1")));
    assert!(code == 0 && err.contains("training member 1"), "{err}");
    let (code, err) = stage(&["--member", "0"], None);
    assert!(code == 0 && err.contains("training member 0"), "{err}");
    assert!(!out.join("warm").exists(), "members do not average");
    let (code, err) = stage(&["--stage", "merge"], None);
    assert!(code == 0 && !err.contains("training"), "{err}");
    let (code, _, err) = rmtrain(&["recipe", &single.display().to_string(), "--no-progress"]);
    assert_eq!(code, 0, "{err}");
    for f in ["warm/model.safetensors", "members/member-1/model/model.safetensors", "shared-init/model/model.safetensors"] {
        let (a, b) = (std::fs::read(out.join(f)).expect("staged"), std::fs::read(single_out.join(f)).expect("one process"));
        assert!(a == b, "{f}: the staged run differs from the one-process run");
    }
    let report = |d: &Path| std::fs::read_to_string(d.join("report.md")).expect("report").lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n");
    assert_eq!(report(&out), report(&single_out), "the same evaluation tables");
    // `rmtrain slurm` writes the three jobs and the submit script for this recipe
    let (code, stdout, err) = rmtrain(&["slurm", &recipe, "--cpus", "1", "--sbatch=--account=test"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(PathBuf::from(stdout.trim()), root().join(&out).join("slurm/submit.sh"));
    let members = std::fs::read_to_string(out.join("slurm/members.sbatch")).expect("members job");
    assert!(members.contains("#SBATCH --array=0-2\n") && members.contains("#SBATCH --account=test\n") && members.contains("--stage member"), "{members}");
    let (code, _, err) = rmtrain(&["slurm", "recipes/tiny.toml"]);
    assert!(code != 0 && err.contains("not a WARM recipe"), "{err}");
}

/// The crash harness (scripts/crash-check.py) on the tiny model: `rmtrain train` killed with
/// SIGKILL at 20 random points, resumed after each, ends with bitwise the weights of an
/// uninterrupted run and no temporary file or folder left behind.
#[test]
fn training_killed_at_20_random_points_resumes_to_the_same_weights() {
    let _serial = training_lock();
    let work = tmp("crash");
    let o = Command::new("python3")
        .arg(root().join("scripts/crash-check.py"))
        .args(["--kills", "20", "--seed", "3", "--rmtrain", env!("CARGO_BIN_EXE_rmtrain"), "--out", &work.display().to_string(), "--"])
        .args(["--model", &tiny_rm().display().to_string(), "--train", "tests/data/tiny_pairs.jsonl"])
        .args(["--set", "epochs=12", "--set", "batch_size=4", "--set", "save_every=1", "--set", "keep_checkpoints=2"])
        .current_dir(root())
        .output()
        .expect("python3 runs the harness");
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("one JSON line ({e}): {stdout}\n{stderr}"));
    assert!(o.status.success() && v["failures"].as_array().is_some_and(|f| f.is_empty()), "{v}\n{stderr}");
    assert_eq!(v["kills"], 20, "{v}");
    assert_eq!(v["bitwise_equal"], true, "{v}");
    assert!(v["resumed_processes"].as_u64().is_some_and(|n| n >= 5) && v["completed_chains"].as_u64().is_some_and(|n| n >= 1), "kills must land mid-run: {v}");
}

#[test]
fn a_checkpoint_is_resumable_only_by_the_same_run() {
    let _serial = training_lock();
    let out = tmp("can-resume");
    let full = TrainConfig { save_every: 1, ..tiny_config() };
    rmtrain_train::train(request(&out, TrainConfig { max_steps: Some(2), ..full.clone() }, false)).expect("first part");
    assert!(rmtrain_train::trainer::can_resume(&request(&out, full.clone(), true)).expect("check"), "same settings (max_steps aside)");
    let shorter = TrainConfig { max_steps: Some(1), ..full.clone() };
    assert!(!rmtrain_train::trainer::can_resume(&request(&out, shorter.clone(), true)).expect("check"), "a checkpoint past max_steps");
    let err = rmtrain_train::train(request(&out, shorter, true)).err().expect("--resume past max_steps is refused").to_string();
    assert!(err.contains("past this run's max_steps"), "{err}");
    let changed = TrainConfig { lr: 5e-3, ..full };
    assert!(!rmtrain_train::trainer::can_resume(&request(&out, changed, true)).expect("check"), "another lr");
}

#[test]
fn bench_runs_with_replicas_on_inference_and_training_devices() {
    // Regression: score replicas once asked an inference device for autodiff leaves and panicked.
    let model = tiny_rm().display().to_string();
    for kind in ["score", "train"] {
        let (code, stdout, stderr) = rmtrain(&["bench", kind, "--model", &model, "--batch", "4", "--seq", "16", "--warmup", "1", "--steps", "2", "--replicas", "2"]);
        assert_eq!(code, 0, "bench {kind}: {stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert!(v["pairs_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
        assert_eq!(v["replicas"], 2);
    }
}

#[test]
fn bench_on_real_pairs_counts_every_pair_and_length_grouping_cuts_padding() {
    let model = tiny_rm().display().to_string();
    let pairs = root().join("tests/data/tiny_pairs.jsonl");
    let n = read_pairs(&pairs).expect("pairs").len() as f64;
    let pairs = pairs.display().to_string();
    for kind in ["train", "score"] {
        let run = |grouped: bool| -> Value {
            let mut args = vec!["bench", kind, "--model", &model, "--data", &pairs, "--batch", "3", "--warmup", "1"];
            if grouped {
                args.push("--group-by-length");
            }
            let (code, stdout, stderr) = rmtrain(&args);
            assert_eq!(code, 0, "bench {kind} --data: {stderr}");
            serde_json::from_str(stdout.trim()).expect("one JSON line")
        };
        let (padded, grouped) = (run(false), run(true));
        for v in [&padded, &grouped] {
            // The warm-up batch runs before the timed pass and is not counted.
            assert_eq!(v["pairs"].as_f64(), Some(n), "{kind}: {v}");
            let f = v["pad_fraction"].as_f64().expect("pad_fraction");
            assert!((0.0..1.0).contains(&f), "{kind}: {v}");
            for key in ["pairs_per_s", "tokens_per_s", "gflops_per_s", "peak_rss_mb"] {
                assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{kind}: {key} in {v}");
            }
        }
        let (p, g) = (padded["pad_fraction"].as_f64().expect("f"), grouped["pad_fraction"].as_f64().expect("f"));
        assert!(g < p, "{kind}: grouping by length should pad less: {g} vs {p}");
    }
}

#[test]
fn every_verb_refuses_bad_numbers_with_one_error_line() {
    // Regression: `bench train --batch 0`, `bench score --steps 0` and a `--seq` past the model's
    // position table panicked. clap's own errors end with a "For more information" line, so those
    // are held to: non-zero exit, no stdout, no panic, the flag named on the first line.
    let model = tiny_rm().display().to_string();
    let pairs = root().join("tests/data/tiny_pairs.jsonl").display().to_string();
    let data = format!("x={pairs}");
    let out = tmp("bad-numbers").join("out").display().to_string();
    let m = model.as_str();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // A small bench run with `flag` set to `value` (clap refuses a flag given twice).
    let bench = |kind: &str, flag: &str, value: &str| {
        let mut a = args(&["bench", kind, "--model", m, flag, value]);
        for (f, v) in [("--batch", "2"), ("--seq", "16"), ("--warmup", "0"), ("--steps", "1")] {
            if f != flag {
                a.extend(args(&[f, v]));
            }
        }
        a
    };
    let interpolate = |extra: &[&str]| args(&[&["interpolate", m, m, "--data", &data, "--out", &out], extra].concat());

    let mut refused_by_clap = vec![
        (args(&["data", "vader", "--out", &out, "--threshold", "-1"]), "--threshold"),
        (args(&["data", "vader", "--out", &out, "--threshold", "nan"]), "--threshold"),
        (args(&["data", "vader", "--out", &out, "--train-pairs", "0"]), "--train-pairs"),
        (args(&["data", "vader", "--out", &out, "--valid-pairs", "0"]), "--valid-pairs"),
        (args(&["data", "vader", "--out", &out, "--test-pairs", "0"]), "--test-pairs"),
        (args(&["score", "--model", m, "--input", &pairs, "--batch-size", "0"]), "--batch-size"),
        (args(&["score", "--model", m, "--input", &pairs, "--max-length", "1"]), "--max-length"),
        (args(&["eval", "--model", m, "--data", &data, "--max-length", "0"]), "--max-length"),
        (interpolate(&["--steps", "1"]), "--steps"),
        (interpolate(&["--max-pairs", "0"]), "--max-pairs"),
        (interpolate(&["--max-length", "1"]), "--max-length"),
        (interpolate(&["--t-min", "nan"]), "--t-min"),
        (interpolate(&["--t-max", "inf"]), "--t-max"),
        (args(&["average", m, m, "--out", &out, "--weights", "1,x"]), "--weights"),
    ];
    for kind in ["train", "score"] {
        for (flag, value) in [("--batch", "0"), ("--steps", "0"), ("--seq", "0"), ("--seq", "1"), ("--replicas", "0")] {
            refused_by_clap.push((bench(kind, flag, value), flag));
        }
    }
    for (a, flag) in &refused_by_clap {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = rmtrain(&a);
        assert_ne!(code, 0, "{a:?} should fail");
        assert!(stdout.is_empty(), "{a:?}: output {stdout:?}");
        assert!(!stderr.contains("panicked"), "{a:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: invalid value") && first.contains(flag), "{a:?}: {stderr:?} lacks {flag}");
    }

    // Checks that need the model, or two flags at once, are rmtrain's own one-line errors.
    let refused_by_rmtrain = [
        (bench("score", "--seq", "129"), vec!["--seq 129", "max_position_embeddings = 128"]),
        (bench("train", "--seq", "4096"), vec!["--seq 4096"]),
        (interpolate(&["--t-min", "1", "--t-max", "0.5"]), vec!["--t-min (1) must be below --t-max (0.5)"]),
        (args(&["average", m, m, "--out", &out, "--weights", "-1,2"]), vec!["--weights", "non-negative"]),
        (args(&["average", m, m, "--out", &out, "--weights", "1,nan"]), vec!["--weights"]),
        (args(&["average", m, m, "--out", &out, "--weights", "1"]), vec!["--weights has 1 values for 2 folders"]),
        (args(&["recipe", "recipes/tiny_warm.toml", "--no-progress", "--member", "7"]), vec!["--member 7"]),
    ];
    let train = |set: &str| args(&["train", "--model", m, "--train", &pairs, "--out", &out, "--no-progress", "--set", set]);
    let mut refused_by_rmtrain = refused_by_rmtrain.to_vec();
    for (set, key) in [
        ("replicas=0", "train.replicas"),
        ("batch_size=0", "train.batch_size"),
        ("max_grad_norm=-1", "train.max_grad_norm"),
        ("adam_beta1=1.5", "train.adam_beta1"),
        ("weight_decay=-1", "train.weight_decay"),
        ("log_every=0", "train.log_every"),
        ("keep_checkpoints=0", "train.keep_checkpoints"),
        ("eval_max_pairs=0", "train.eval_max_pairs"),
        ("max_length=1", "train.max_length"),
        ("lr=0", "train.lr"),
        ("loss.center_rewards_coefficient=-1", "center_rewards_coefficient"),
        ("seed=-3", "--set seed=-3"),
    ] {
        refused_by_rmtrain.push((train(set), vec![key]));
    }
    for (a, must_contain) in &refused_by_rmtrain {
        assert_one_line_error(&a.iter().map(String::as_str).collect::<Vec<_>>(), must_contain);
    }

    // A negative --t-min extends the curve: clap must take it as a value, not as a flag.
    let a = interpolate(&["--t-min", "-0.5", "--steps", "2", "--max-pairs", "2"]);
    let (code, _, stderr) = rmtrain(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn texts_longer_than_max_length_are_counted_where_they_are_truncated() {
    let _serial = training_lock();
    let dir = tmp("truncated");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"ok\"}\n{\"text\": \"The quick brown fox jumps over the lazy dog again and again.\"}\n").expect("write");
    let model = tiny_rm().display().to_string();
    let (code, stdout, stderr) = rmtrain(&["score", "--model", &model, "--input", &input.display().to_string(), "--max-length", "6"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 2);
    assert!(stderr.contains("1 of 2 texts are longer than max_length"), "{stderr}");
    // Training counts pairs with a side cut, in the first metrics line and in the outcome.
    let out = dir.join("run");
    let outcome = rmtrain_train::train(request(&out, TrainConfig { max_length: 6, max_steps: Some(1), ..tiny_config() }, false)).expect("train");
    let pairs = read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs");
    let rm = RewardModel::load(&tiny_rm(), 6, &cpu()).expect("load");
    let want = pairs
        .iter()
        .filter(|p| [p.chosen_text(), p.rejected_text()].iter().any(|t| rm.tokenizer.encode_counting(t).expect("encode").1))
        .count();
    assert!(want > 0, "the tiny pairs have texts longer than 6 tokens");
    assert_eq!(outcome.truncated_pairs, want);
    assert_eq!(jsonl(&out.join("metrics.jsonl"))[0]["truncated_pairs"], want);
}

#[test]
fn the_warm_pipeline_runs_as_a_library_call() {
    // What `rmtrain recipe` does, from Rust: read and validate a recipe, run WARM, get the results.
    let _serial = training_lock();
    let (path, out) = tiny_warm_copy("warm-library", |t| t.replace("interpolate = { members = [0, 2], steps = 3, set = \"tiny\" }", ""));
    let recipe = rmtrain_pipeline::read_recipe(&path).expect("a valid recipe");
    let opts = rmtrain_pipeline::warm::WarmOptions { device: &cpu(), replica_devices: &[], stage: rmtrain_pipeline::warm::WarmStage::All, progress: false };
    let runs = rmtrain_pipeline::warm::run_warm(&recipe, &opts).expect("WARM runs");
    assert_eq!(runs.len(), 1, "no noise sweep: one run");
    let (flip, results) = &runs[0];
    assert_eq!(*flip, 0.25);
    let labels: Vec<&str> = results.models.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["shared init (LP)", "member-0", "member-1", "member-2", "WARM", "ENS-mean", "ENS-worst", "ENS-uncertainty:1"]);
    assert_eq!(results.sets, ["tiny", "train"]);
    assert_eq!(results.flipped_pairs, 3);
    assert!(out.join("report.md").is_file() && !out.join("plots/interpolation.png").exists());
    // The same models evaluated again through evaluate_models give the report's numbers.
    let members: Vec<PathBuf> = (0..3).map(|k| out.join(format!("members/member-{k}/model"))).collect();
    let sets = recipe.check_paths().expect("paths");
    let entries = [rmtrain_pipeline::Entry::Ensemble { label: "ENS-mean".into(), members: vec![0, 1, 2], rule: rmtrain_merge::Combine::Mean, normalize: true }];
    let eval_opts = rmtrain_pipeline::EvalOptions { max_length: Some(128), device: &cpu(), seed: 0, progress: false };
    let again = rmtrain_pipeline::evaluate_models(&members, &entries, &sets, &eval_opts).expect("evaluate");
    assert_eq!(again.rows[0].1, results.models[5].1, "ENS-mean recomputed from the member folders");
}

// ---------- preference strength (Secrets of RLHF II, Eq. 4) ----------

/// Pairs in every input format, with metadata to pass through and side means (VADER's) that make
/// the second label wrong; "good and fun" appears in two pairs (scored once, used twice).
const STRENGTH_PAIRS: &str = r#"{"prompt": "Review: ", "chosen": "good and fun", "rejected": "bad and dull", "gold_margin": 2.0, "id": "a", "chosen_mean": 2.5, "rejected_mean": 0.5}
{"chosen": "awful", "rejected": "lovely", "gold_margin": -3.0, "id": "b", "chosen_mean": -2.0, "rejected_mean": 1.0, "flipped": true}
{"chosen": [{"role": "user", "content": "How was it?"}, {"role": "assistant", "content": "Wonderful, loved it."}], "rejected": [{"role": "user", "content": "How was it?"}, {"role": "assistant", "content": "Awful, hated it."}], "gold_margin": 1.0, "id": "c"}
{"chosen": "good and fun", "rejected": "meh", "id": "d", "meta": {"k": [1, 2]}}
"#;

#[test]
fn strength_lines_carry_mean_and_population_std_of_each_members_own_gaps() {
    let dir = tmp("strength");
    let data = dir.join("pairs.jsonl");
    std::fs::write(&data, STRENGTH_PAIRS).expect("write");
    let out = dir.join("out/strength.jsonl");
    let members: Vec<PathBuf> = (0..3).map(warm_member).collect();
    let mut args = vec!["strength".to_string(), "--data".into(), data.display().to_string(), "--out".into(), out.display().to_string(), "--no-progress".into()];
    for m in &members {
        args.extend(["--model".to_string(), m.display().to_string()]);
    }
    let (code, stdout, stderr) = rmtrain(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("pairs: 4, reward models: 3"), "{stdout}");

    // Each member's own rewards, one text at a time, by hand: d_m, μ̂ = mean, σ̂ = sqrt(Σ (d − μ̂)² / M).
    let pairs = read_pairs(&data).expect("pairs");
    let gaps: Vec<Vec<f64>> = pairs
        .iter()
        .map(|p| {
            members
                .iter()
                .map(|m| {
                    let rm = RewardModel::load(m, 128, &cpu()).expect("load member");
                    let r = |t: String| f64::from(rm.score_texts(&[t.as_str()], &ScoreOptions::default()).expect("score")[0]);
                    r(p.chosen_text()) - r(p.rejected_text())
                })
                .collect()
        })
        .collect();
    let input = jsonl(&data);
    let lines = jsonl(&out);
    assert_eq!(lines.len(), input.len());
    let mut spread = 0.0f64;
    for ((line, want_line), d) in lines.iter().zip(&input).zip(&gaps) {
        for (key, value) in want_line.as_object().expect("object") {
            assert_eq!(&line[key], value, "{key} passes through");
        }
        let mu = d.iter().sum::<f64>() / 3.0;
        let sigma = (d.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / 3.0).sqrt();
        let got = |k: &str| line[k].as_f64().unwrap_or_else(|| panic!("{k} in {line}"));
        assert!((got("strength_mean") - mu).abs() < 1e-4, "μ̂ {} vs {mu}", got("strength_mean"));
        assert!((got("strength_std") - sigma).abs() < 1e-4, "σ̂ {} vs {sigma} (population std, ÷ M)", got("strength_std"));
        let line_gaps: Vec<f64> = line["strength_gaps"].as_array().expect("gaps").iter().map(|g| g.as_f64().expect("gap")).collect();
        assert_eq!(line_gaps.len(), 3);
        assert!(line_gaps.iter().zip(d).all(|(a, b)| (a - b).abs() < 1e-4), "gaps in --model order: {line_gaps:?} vs {d:?}");
        spread = spread.max(sigma);
    }
    // Otherwise ÷ M and ÷ (M − 1) could not be told apart.
    assert!(spread > 1e-3, "the members disagree on some pair");

    // The report lands next to --out by default.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/strength.json")).expect("strength.json")).expect("json");
    assert_eq!((report["pairs"].as_u64(), report["models"].as_u64()), (Some(4), Some(3)));
    assert_eq!(report["model_dirs"].as_array().map(Vec::len), Some(3));
    let negative = lines.iter().filter(|l| l["strength_mean"].as_f64().expect("μ̂") < 0.0).count() as f64 / 4.0;
    assert!((report["share_negative"].as_f64().expect("share") - negative).abs() < 1e-12);
    assert_eq!(report["detection"]["labels_wrong"], 1, "only pair b has chosen_mean < rejected_mean");
    assert!(std::fs::read_to_string(dir.join("out/strength.md")).expect("strength.md").contains("Preference strength"));
    for png in ["strength_histogram.png", "strength_deciles.png"] {
        let bytes = std::fs::read(dir.join("out/plots").join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is a PNG");
    }
}

#[test]
fn strength_refuses_one_model_an_untrained_head_and_a_bad_line_and_writes_nothing() {
    let dir = tmp("strength-bad");
    let data = dir.join("pairs.jsonl");
    std::fs::write(&data, STRENGTH_PAIRS).expect("write");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"chosen\": \"a\", \"rejected\": \"b\"}\n{\"chosen\": \"a\"}\n").expect("write");
    let out = dir.join("out.jsonl");
    let (d, o) = (data.display().to_string(), out.display().to_string());
    let (m0, m1) = (warm_member(0).display().to_string(), warm_member(1).display().to_string());
    assert_one_line_error(&["strength", "--model", &m0, "--data", &d, "--out", &o], &["at least 2 models", "got 1"]);
    let backbone = bare_backbone("strength-backbone").display().to_string();
    assert_one_line_error(&["strength", "--model", &m0, "--model", &backbone, "--data", &d, "--out", &o], &[&backbone, "not a reward model"]);
    assert_one_line_error(&["strength", "--model", &m0, "--model", &m1, "--data", &bad.display().to_string(), "--out", &o], &["bad.jsonl:2", "rejected"]);
    assert!(!out.exists() && !dir.join("strength.json").exists(), "a refused run writes nothing");
}
