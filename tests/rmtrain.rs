//! End-to-end tests of rmtrain: the BERT reward model against the PyTorch + transformers fixtures,
//! the losses against their reference values, training (loss falls, every parameter moves, exact
//! resume), checkpoint round trips, bad input through the binary, and a recipe end to end.

use burn::tensor::{Device, Tensor, TensorData};
use rmtrain_data::read_pairs;
use rmtrain_models::{RewardModel, ScoreOptions};
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
    let d = std::env::temp_dir().join(format!("rmtrain-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}
fn cpu() -> Device {
    Device::flex()
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
    let rm = RewardModel::load(&tiny_rm(), 128, &cpu()).expect("load");
    for row in jsonl(&fixture("tiny-bert-rm/scores.jsonl")) {
        let text = row["text"].as_str().expect("text");
        let ids: Vec<u32> = row["input_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
        assert_eq!(rm.tokenizer.encode(text).expect("encode"), ids, "token ids of {text:?}");
        let r = rm.score_texts(&[text], &ScoreOptions { batch_size: 1, threads: 1 }).expect("score")[0] as f64;
        let want = row["reward"].as_f64().expect("reward");
        assert!((r - want).abs() < 1e-4, "{text:?}: {r} vs {want}");
    }
}

#[test]
fn tiny_bert_rewards_match_transformers_in_one_padded_batch() {
    let rm = RewardModel::load(&tiny_rm(), 128, &cpu()).expect("load");
    let rows = jsonl(&fixture("tiny-bert-rm/scores_batched.jsonl"));
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().expect("text")).collect();
    // One batch padded to the longest text (ours) ...
    let batched = rm.score_texts(&texts, &ScoreOptions { batch_size: 64, threads: 1 }).expect("score");
    // ... and one padded to 128 like the fixture, built by hand.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| rm.tokenizer.encode(t).expect("encode")).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let mut b = rm.tokenizer.collate(&seqs);
    let (n, s) = (b.batch, b.seq);
    let mut pid = Vec::new();
    let mut pmask = Vec::new();
    for i in 0..n {
        pid.extend_from_slice(&b.ids[i * s..(i + 1) * s]);
        pid.extend(std::iter::repeat_n(0i64, 128 - s));
        pmask.extend_from_slice(&b.mask[i * s..(i + 1) * s]);
        pmask.extend(std::iter::repeat_n(false, 128 - s));
    }
    b.ids = pid;
    b.mask = pmask;
    b.seq = 128;
    let (t_ids, t_mask) = b.to_tensors(&cpu());
    let padded: Vec<f32> = rm.net.forward(t_ids, t_mask).into_data().try_to_vec().expect("floats");
    for ((row, r), p) in rows.iter().zip(&batched).zip(&padded) {
        let want = row["reward_batched"].as_f64().expect("reward");
        assert!((*r as f64 - want).abs() < 1e-4, "{}: {r} vs {want}", row["text"]);
        assert!((*p as f64 - want).abs() < 1e-4, "{}: {p} vs {want}", row["text"]);
    }
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
    let out = safetensors::tensor::serialize(tensors, &None).expect("serialize");
    std::fs::write(dir.join("model.safetensors"), out).expect("write");
    let err = RewardModel::load(&dir, 128, &cpu()).err().expect("must fail").to_string();
    assert!(err.contains("classifier.bias: missing"), "{err}");
    assert!(err.contains("classifier.bias_renamed: unexpected"), "{err}");
}

// ---------- losses against losses.json ----------

fn losses_fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("losses.json")).expect("losses.json")).expect("json")
}
fn t1(v: &Value) -> Tensor<1> {
    let xs: Vec<f64> = v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f64")).collect();
    let n = xs.len();
    Tensor::<1>::from_data(TensorData::new(xs.into_iter().map(|x| x as f32).collect::<Vec<_>>(), [n]), &cpu())
}
fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

#[test]
fn losses_match_reference_values() {
    use rmtrain_train::losses::*;
    let f = losses_fixture();
    let (rc, rr, m) = (t1(&f["inputs"]["r_c"]), t1(&f["inputs"]["r_r"]), t1(&f["inputs"]["margin"]));
    let close = |a: f64, b: &Value, what: &str| {
        let b = b.as_f64().expect("f64");
        assert!((a - b).abs() < 1e-6, "{what}: {a} vs {b}");
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

#[test]
fn training_lowers_the_loss_and_moves_every_parameter() {
    let _serial = training_lock();
    let out = tmp("train");
    let pairs = root().join("tests/data/tiny_pairs.jsonl");
    let before = bt_loss(&tiny_rm(), &pairs);
    // Without dropout, so the falling loss is the optimizer's doing alone.
    let cfg = TrainConfig { epochs: 8, lr: 1e-3, dropout: Some(0.0), ..tiny_config() };
    let outcome = rmtrain_train::train(request(&out, cfg, false)).expect("train");
    let after = bt_loss(&outcome.model_dir, &pairs);
    assert!(after < before * 0.5, "loss {before} -> {after}");
    let init = tensors(&tiny_rm().join("model.safetensors"));
    let trained = tensors(&outcome.model_dir.join("model.safetensors"));
    for ((n, _, a), (_, _, b)) in init.iter().zip(&trained) {
        assert_ne!(a, b, "{n} did not move");
    }
    let log = jsonl(&out.join("metrics.jsonl"));
    for key in ["loss", "accuracy", "margin", "mean_reward", "min_reward", "max_reward", "lr", "tokens_per_second", "grad_norm"] {
        assert!(log[0].get(key).is_some(), "metrics.jsonl lacks {key}");
    }
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
    std::fs::write(dir.join("model.safetensors"), safetensors::tensor::serialize(views, &None).expect("ser")).expect("write");
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
    let err = rmtrain_merge::average_checkpoints(&[a, b], &tmp("init-strict").join("avg"), &strict).err().expect("strict refuses").to_string();
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
    // --member K on a finished run reuses the member and exits without averaging again.
    let (code, _, stderr) = rmtrain(&["recipe", "recipes/tiny_warm.toml", "--no-progress", "--member", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("member 1 already trained"), "{stderr}");
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
