//! The methods of Secrets of RLHF II (Wang et al. 2024) and MetaRM (Dou et al. 2024) against hand
//! computations: the composed pairwise loss, which pairs the strength-based smoothing, margin and
//! flip touch, a MetaRM step recomputed by hand on the tiny BERT, and contrastive training
//! (SimCSE, SwAV) including an exact resume of SwAV's prototypes.

// Per-process temp folders, shared with the other test binary.
mod common;
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use rmtrain_data::{read_pairs, Pair};
use rmtrain_models::{RewardModel, RewardNet};
use rmtrain_train::trainer::{pair_alpha, pair_margin, Trainable};
use rmtrain_train::{AdaptiveMargin, ContrastiveConfig, ContrastiveKind, FlipConfig, MetaRmConfig, Schedule, SmoothingPairs, TrainConfig, TrainRequest};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn tiny_rm() -> PathBuf {
    root().join("tests/fixtures/hf/tiny-bert-rm")
}
fn tmp(name: &str) -> PathBuf {
    common::tmp_dirs::fresh("rmtrain-secrets", name)
}
fn cpu() -> Device {
    Device::flex()
}
fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).expect("read jsonl").lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}
fn t1(xs: &[f64]) -> Tensor<1> {
    Tensor::<1>::from_data(TensorData::new(xs.iter().map(|&x| x as f32).collect::<Vec<_>>(), [xs.len()]), &cpu())
}
fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}
fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f64")).collect()
}

/// Burn seeds one RNG per backend, shared by every thread: tests that train run one at a time.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());
fn training_lock() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|e| e.into_inner())
}

fn pair_with_strength(mu: f64) -> Pair {
    let v = json!({"chosen": "a", "rejected": "b", "strength_mean": mu, "margin": 7.0});
    rmtrain_data::parse_pair_line(v, Path::new("mem"), 1).expect("pair")
}

#[test]
fn composed_loss_is_bt_smoothing_and_margin_of_the_fixture_and_their_hand_composition() {
    use rmtrain_train::losses::preference_loss;
    let f: Value = serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/hf/losses.json")).expect("losses.json")).expect("json");
    let (rc, rr, m) = (f64s(&f["inputs"]["r_c"]), f64s(&f["inputs"]["r_r"]), f64s(&f["inputs"]["margin"]));
    let eps = f["inputs"]["label_smoothing_eps"].as_f64().expect("eps");
    let n = rc.len();
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-6, "{what}: {a} vs {b}");
    close(scalar(preference_loss(t1(&rc), t1(&rr), None, None)), f["bradley_terry"]["mean"].as_f64().expect("bt"), "bt");
    close(scalar(preference_loss(t1(&rc), t1(&rr), Some(t1(&m)), None)), f["bradley_terry_margin"]["mean"].as_f64().expect("m"), "margin");
    close(scalar(preference_loss(t1(&rc), t1(&rr), None, Some(t1(&vec![eps; n])))), f["label_smoothing"]["mean"].as_f64().expect("ls"), "smoothing");
    // Margin inside both terms, smoothing on alternate pairs: −(1−α)·log σ(z) − α·log σ(−z), z = Δ − m.
    let alpha: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 0.2 } else { 0.0 }).collect();
    let log_sig = |x: f64| -(1.0 + (-x).exp()).ln();
    let want = (0..n)
        .map(|i| {
            let z = rc[i] - rr[i] - m[i];
            -(1.0 - alpha[i]) * log_sig(z) - alpha[i] * log_sig(-z)
        })
        .sum::<f64>()
        / n as f64;
    close(scalar(preference_loss(t1(&rc), t1(&rr), Some(t1(&m)), Some(t1(&alpha)))), want, "composed");
    // At Δ = m the loss is log 2 whatever α is.
    close(scalar(preference_loss(t1(&[1.5]), t1(&[0.5]), Some(t1(&[1.0])), Some(t1(&[0.3])))), std::f64::consts::LN_2, "Δ = m");
}

#[test]
fn smoothing_and_adaptive_margin_touch_exactly_the_pairs_they_should() {
    let pairs: Vec<Pair> = [-1.5, 0.5, -0.2, 2.0, 0.0].into_iter().map(pair_with_strength).collect();
    let mut cfg = TrainConfig::default();
    cfg.loss.label_smoothing = Some(0.1);
    cfg.loss.smoothing_pairs = SmoothingPairs::NegativeStrength;
    let alphas: Vec<f64> = pairs.iter().map(|p| pair_alpha(&cfg, p)).collect();
    assert_eq!(alphas, vec![0.1, 0.0, 0.1, 0.0, 0.0]); // μ̂ = 0 is not below 0
    cfg.loss.smoothing_pairs = SmoothingPairs::All;
    assert!(pairs.iter().all(|p| pair_alpha(&cfg, p) == 0.1));
    // No strength option: the pair's own margin field only with use_margin.
    assert!(pairs.iter().all(|p| pair_margin(&cfg, p) == 0.0));
    cfg.loss.use_margin = true;
    assert!(pairs.iter().all(|p| pair_margin(&cfg, p) == 7.0));
    cfg.loss.use_margin = false;
    // m = scale·μ̂, then clamp at 0, then the cap.
    cfg.loss.adaptive_margin = Some(AdaptiveMargin { scale: 2.0, clamp_zero: false, cap: None });
    assert_eq!(pairs.iter().map(|p| pair_margin(&cfg, p)).collect::<Vec<_>>(), vec![-3.0, 1.0, -0.4, 4.0, 0.0]);
    cfg.loss.adaptive_margin = Some(AdaptiveMargin { scale: 2.0, clamp_zero: true, cap: Some(3.0) });
    assert_eq!(pairs.iter().map(|p| pair_margin(&cfg, p)).collect::<Vec<_>>(), vec![0.0, 1.0, 0.0, 3.0, 0.0]);
    cfg.loss.adaptive_margin = Some(AdaptiveMargin { scale: 1.0, clamp_zero: false, cap: Some(1.0) });
    assert_eq!(pairs.iter().map(|p| pair_margin(&cfg, p)).collect::<Vec<_>>(), vec![-1.0, 0.5, -0.2, 1.0, 0.0]);
    // The two margins cannot be combined; smoothing_pairs needs a smoothing.
    cfg.loss.use_margin = true;
    assert!(cfg.validate().expect_err("both margins").contains("cannot be combined"));
    let mut bad = TrainConfig::default();
    bad.loss.smoothing_pairs = SmoothingPairs::NegativeStrength;
    assert!(bad.validate().expect_err("no smoothing").contains("needs train.loss.label_smoothing"));
}

fn tiny_request(out: &Path, train_pairs: Vec<Pair>, config: TrainConfig) -> TrainRequest {
    TrainRequest {
        init: tiny_rm(),
        train_pairs,
        train_data_sha256: Some("tiny".into()),
        evals: vec![],
        config,
        out: out.to_path_buf(),
        resume: false,
        recipe: Value::Null,
        device: cpu(),
        replica_devices: Vec::new(),
        progress: false,
        trainable: Trainable::All,
    }
}

/// The tiny pairs with a made-up strength μ̂_i = i − 2.5 (pairs 0, 1, 2 negative).
fn tiny_pairs_with_strength() -> Vec<Pair> {
    let mut pairs = read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs");
    for (i, p) in pairs.iter_mut().enumerate() {
        p.strength = Some(i as f64 - 2.5);
        p.fields.insert("strength_mean".into(), json!(i as f64 - 2.5));
    }
    pairs
}

#[test]
fn a_run_with_flip_refuses_pairs_without_strength_and_logs_what_it_flipped() {
    let _serial = training_lock();
    let out = tmp("flip");
    let cfg = TrainConfig {
        batch_size: 4,
        max_steps: Some(1),
        flip: Some(FlipConfig { bottom_fraction: None, below: Some(0.0) }),
        ..TrainConfig::default()
    };
    let plain = read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs");
    let err = rmtrain_train::train(tiny_request(&out, plain, cfg.clone())).err().expect("no strength").to_string();
    assert!(err.contains("train pairs, line 1: field \"strength_mean\""), "{err}");
    rmtrain_train::train(tiny_request(&out, tiny_pairs_with_strength(), cfg)).expect("train");
    let start = &jsonl(&out.join("metrics.jsonl"))[0];
    assert_eq!(start["flipped_by_strength"], json!(3), "{start}");
}

/// How [`Update`] moves a parameter with gradient g (written here independently of the trainer).
#[derive(Clone, Copy)]
enum Step {
    /// θ + η·g (the MetaRM inner ascent).
    Ascend(f64),
    /// One AdamW step from zero moments with no weight decay: θ − lr·ĝ/(|ĝ| + ε) (bias-corrected
    /// first moment g, second g²).
    FirstAdam { lr: f64, eps: f64 },
}

/// Every parameter with a gradient moved by `step`, as new leaves with the same ids.
struct Update<'a> {
    grads: &'a GradientsParams,
    step: Step,
}
impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let g = self.grads.get::<D>(param.id);
        param.map(|t| {
            let inner = t.inner();
            let moved = match (g, self.step) {
                (Some(g), Step::Ascend(eta)) => inner + g.mul_scalar(eta),
                (Some(g), Step::FirstAdam { lr, eps }) => inner - g.clone().div(g.abs().add_scalar(eps)).mul_scalar(lr),
                (None, _) => inner,
            };
            Tensor::from_inner(moved).require_grad()
        })
    }
}

fn collate(rm: &RewardModel, texts: &[String], device: &Device) -> (Tensor<2, burn::tensor::Int>, Tensor<2, burn::tensor::Bool>) {
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| rm.tokenizer.encode(t).expect("encode")).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    rm.tokenizer.collate(&seqs).to_tensors(device)
}

fn mean_j<N: RewardNet>(net: &N, rm: &RewardModel, groups: &[Vec<String>], device: &Device) -> Tensor<1> {
    let parts: Vec<Tensor<1>> = groups
        .iter()
        .map(|g| {
            let (ids, mask) = collate(rm, g, device);
            let rewards = net.forward(ids, mask);
            let r: Vec<Tensor<1>> = (0..g.len()).map(|i| rewards.clone().narrow(0, i, 1)).collect();
            // J = (2/k²)·Σ_{i<j} σ(|r_i − r_j|), written out pair by pair.
            let k = g.len();
            let mut terms = Vec::new();
            for i in 0..k {
                for j in i + 1..k {
                    terms.push(burn::tensor::activation::sigmoid((r[i].clone() - r[j].clone()).abs()));
                }
            }
            Tensor::cat(terms, 0).sum().mul_scalar(2.0 / (k * k) as f64)
        })
        .collect();
    Tensor::cat(parts, 0).mean()
}

fn bt_grads<M: Module, N: RewardNet>(module: &M, net: &N, rm: &RewardModel, pairs: &[Pair], device: &Device) -> GradientsParams {
    let texts: Vec<String> = pairs.iter().map(|p| p.chosen_text()).chain(pairs.iter().map(|p| p.rejected_text())).collect();
    let (ids, mask) = collate(rm, &texts, device);
    let r = net.forward(ids, mask);
    let n = pairs.len();
    let loss = burn::tensor::activation::log_sigmoid(r.clone().narrow(0, 0, n) - r.narrow(0, n, n)).neg().mean();
    GradientsParams::from_grads(loss.backward(), module)
}

fn max_abs_diff(a: &[(String, Vec<usize>, Vec<f32>)], b: &[(String, Vec<usize>, Vec<f32>)]) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for ((n, _, x), (_, _, y)) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            let d = (p - q).abs() as f64;
            if d > worst.0 {
                worst = (d, n.clone());
            }
        }
    }
    worst
}

#[test]
fn a_metarm_step_is_the_bt_gradient_at_the_ascended_weights_applied_to_the_original_ones() {
    let _serial = training_lock();
    let out = tmp("metarm");
    let groups: Vec<Vec<String>> = vec![
        vec!["a fine film".into(), "dull and slow".into(), "the plot holds".into()],
        vec!["loved every minute".into(), "hated the ending".into(), "it was a movie".into(), "superb acting".into()],
    ];
    let meta_path = out.join("meta.jsonl");
    let meta: Vec<rmtrain_data::MetaGroup> = groups.iter().map(|g| rmtrain_data::MetaGroup { prompt: None, responses: g.clone() }).collect();
    rmtrain_data::write_meta_groups(&meta_path, &meta).expect("meta");
    let pairs: Vec<Pair> = read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs").into_iter().take(2).collect();
    let (lr, eps, eta) = (0.05, 1.0, 40.0);
    // Adam's ε = 1 makes the first step lr·g/(|g| + 1): it keeps the gradient's size, so a
    // gradient taken at the wrong weights shows.
    let cfg = TrainConfig {
        batch_size: 2,
        epochs: 1,
        lr,
        adam_epsilon: eps,
        weight_decay: 0.0,
        warmup_steps: Some(0),
        schedule: Schedule::Constant,
        max_grad_norm: 0.0,
        dropout: Some(0.0),
        replicas: 1,
        shuffle: false,
        metarm: Some(MetaRmConfig { meta_data: meta_path.clone(), eta, groups_per_step: 2 }),
        ..TrainConfig::default()
    };
    let outcome = rmtrain_train::train(tiny_request(&out, pairs.clone(), cfg.clone())).expect("train");
    let trained = RewardModel::load(&outcome.model_dir, 128, &cpu()).expect("load").net.hf_tensors();

    // By hand: ∇J at θ, θ' = θ + η∇J, the BT gradient at θ', one AdamW step from θ.
    let ad = cpu().autodiff();
    let rm = RewardModel::load_with_dropout(&tiny_rm(), 128, &ad, Some(0.0)).expect("load");
    let theta = rm.net.clone();
    let j = mean_j(&theta, &rm, &groups, &ad);
    let j_before = j.clone().into_scalar::<f32>() as f64;
    let g_j = GradientsParams::from_grads(j.backward(), &theta);
    let theta_prime = theta.clone().map(&mut Update { grads: &g_j, step: Step::Ascend(eta) });
    let j_after = mean_j(&theta_prime.valid(), &rm, &groups, &cpu()).into_scalar::<f32>() as f64;
    assert!(j_after > j_before, "J must rise after the inner ascent step: {j_before} -> {j_after}");
    let g_l = bt_grads(&theta_prime, &theta_prime, &rm, &pairs, &ad);
    let by_hand = theta.clone().map(&mut Update { grads: &g_l, step: Step::FirstAdam { lr, eps } }).hf_tensors();
    let (diff, name) = max_abs_diff(&trained, &by_hand);
    assert!(diff < 2e-5, "trainer vs hand MetaRM step: {diff} in {name}");

    // The test can tell: the vanilla step (BT gradient at θ) and the step applied at θ' differ.
    let g_vanilla = bt_grads(&theta, &theta, &rm, &pairs, &ad);
    let vanilla = theta.clone().map(&mut Update { grads: &g_vanilla, step: Step::FirstAdam { lr, eps } }).hf_tensors();
    let at_prime = theta_prime.clone().map(&mut Update { grads: &g_l, step: Step::FirstAdam { lr, eps } }).hf_tensors();
    assert!(max_abs_diff(&trained, &vanilla).0 > 50.0 * 2e-5, "MetaRM indistinguishable from a plain step");
    assert!(max_abs_diff(&trained, &at_prime).0 > 50.0 * 2e-5, "the update must apply to θ, not θ'");

    // The log carries J before and after and the step size.
    let log = jsonl(&out.join("metrics.jsonl"));
    let line = log.iter().find(|r| r.get("metarm_j_before").is_some()).expect("a MetaRM line");
    let logged = |k: &str| line[k].as_f64().expect(k);
    assert!((logged("metarm_j_before") - j_before).abs() < 1e-5, "{line}");
    assert!((logged("metarm_j_after") - j_after).abs() < 1e-5, "{line}");
    assert!((logged("metarm_step_norm") - eta * logged("metarm_grad_norm")).abs() < 1e-9 * eta);
    // η = 0 is the plain Bradley–Terry step.
    let out0 = tmp("metarm0");
    let cfg0 = TrainConfig { metarm: Some(MetaRmConfig { meta_data: meta_path, eta: 0.0, groups_per_step: 2 }), ..cfg };
    let plain = rmtrain_train::train(tiny_request(&out0, pairs, cfg0)).expect("train");
    let plain = RewardModel::load(&plain.model_dir, 128, &cpu()).expect("load").net.hf_tensors();
    assert!(max_abs_diff(&plain, &vanilla).0 < 2e-5);
}

fn contrastive_config(kind: ContrastiveKind, samples: rmtrain_train::contrastive::ContrastiveSamples) -> TrainConfig {
    let mut cfg = TrainConfig { batch_size: 4, epochs: 2, lr: 1e-3, log_every: 1, replicas: 1, dropout: Some(0.1), ..TrainConfig::default() };
    cfg.loss.contrastive = Some(ContrastiveConfig {
        kind,
        samples,
        beta: 0.5,
        temperature: None,
        prototypes: Some(4),
        sinkhorn_epsilon: 0.05,
        sinkhorn_iterations: 3,
    });
    cfg
}

#[test]
fn contrastive_training_logs_its_loss_and_swav_resumes_exactly() {
    use rmtrain_train::contrastive::ContrastiveSamples;
    let _serial = training_lock();
    let pairs = read_pairs(&root().join("tests/data/tiny_pairs.jsonl")).expect("pairs");
    for (kind, samples) in [(ContrastiveKind::Simcse, ContrastiveSamples::Pairs), (ContrastiveKind::Swav, ContrastiveSamples::Difference)] {
        let out = tmp(&format!("cl-{kind:?}"));
        rmtrain_train::train(tiny_request(&out, pairs.clone(), contrastive_config(kind, samples))).expect("train");
        let log = jsonl(&out.join("metrics.jsonl"));
        let cl: Vec<f64> = log.iter().filter_map(|r| r.get("contrastive_loss").and_then(Value::as_f64)).collect();
        assert!(!cl.is_empty() && cl.iter().all(|x| x.is_finite() && *x > 0.0), "{kind:?}: {cl:?}");
    }
    // SwAV: stop after step 2 (checkpoint with the prototypes), resume, and land on the same weights.
    let cfg = || TrainConfig { save_every: 1, keep_checkpoints: 5, ..contrastive_config(ContrastiveKind::Swav, ContrastiveSamples::Pairs) };
    let full = tmp("swav-full");
    let a = rmtrain_train::train(tiny_request(&full, pairs.clone(), cfg())).expect("full");
    let part = tmp("swav-part");
    rmtrain_train::train(tiny_request(&part, pairs.clone(), TrainConfig { max_steps: Some(2), ..cfg() })).expect("part");
    assert!(part.join("checkpoints/step-000002/state/prototypes.json").is_file());
    let mut resumed = tiny_request(&part, pairs, cfg());
    resumed.resume = true;
    let b = rmtrain_train::train(resumed).expect("resume");
    let bytes = |p: &Path| std::fs::read(p.join("model.safetensors")).expect("weights");
    assert!(bytes(&a.model_dir) == bytes(&b.model_dir), "a resumed SwAV run must match the uninterrupted one bit for bit");
}

fn rmtrain(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmtrain")).args(args).current_dir(root()).output().expect("run rmtrain");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn tiny_secrets_recipe_runs_end_to_end_and_reuses_its_runs() {
    let _serial = training_lock();
    let run = root().join("runs/tiny-secrets");
    let _ = std::fs::remove_dir_all(&run);
    let (code, stdout, stderr) = rmtrain(&["recipe", "recipes/tiny_secrets.toml", "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    for arm in ["| BT |", "| +flip |", "| +smoothing |", "| +margin |", "| +flip+margin |", "| +SimCSE |", "| +SwAV |", "| +MetaRM |"] {
        assert!(stdout.contains(arm), "report lacks {arm}: {stdout}");
    }
    assert!(stdout.contains("Preference strength (2 voters"), "{stdout}");
    for f in ["report.md", "report.json", "plots/accuracy.png", "meta.jsonl", "strength/train.strength.jsonl", "strength/strength.json", "strength/plots/strength_histogram.png"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // Every arm × seed trained; the arms' train file is the voters' strength file.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).expect("report")).expect("json");
    let arms = report["results"]["arms"].as_array().expect("arms");
    assert_eq!(arms.len(), 8);
    for arm in arms {
        for set in arm["sets"].as_array().expect("sets") {
            assert_eq!(set["per_seed_accuracy"].as_array().expect("seeds").len(), 2, "{arm}");
        }
    }
    // The flip arm flipped round(0.25 · 12) = 3 pairs: the three of lowest μ̂ in the strength file.
    let strength = jsonl(&run.join("strength/train.strength.jsonl"));
    assert_eq!(strength.len(), 12);
    assert_eq!(arms[1]["flipped_pairs"], json!(3));
    let below_zero = strength.iter().filter(|l| l["strength_mean"].as_f64().expect("mu") < 0.0).count();
    assert_eq!(arms[4]["flipped_pairs"], json!(below_zero));
    // MetaRM logged its inner step; SwAV its contrastive loss.
    let log = jsonl(&run.join("arms/metarm/seed-0/metrics.jsonl"));
    assert!(log.iter().any(|l| l["metarm_step_norm"].as_f64().is_some_and(|x| x > 0.0)), "no MetaRM step logged");
    let log = jsonl(&run.join("arms/swav/seed-1/metrics.jsonl"));
    assert!(log.iter().any(|l| l["contrastive_loss"].as_f64().is_some()), "no SwAV loss logged");
    // A second run reuses every voter and arm.
    let (code, _, stderr) = rmtrain(&["recipe", "recipes/tiny_secrets.toml", "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("secrets: training"), "{stderr}");
    assert_eq!(stderr.matches("already trained").count(), 2 + 16, "{stderr}");
}

#[test]
fn an_ablation_arm_with_a_typo_fails_before_any_training() {
    let dir = tmp("bad-arm");
    let text = std::fs::read_to_string(root().join("recipes/tiny_secrets.toml"))
        .expect("recipe")
        .replace("out = \"runs/tiny-secrets\"", &format!("out = {:?}", dir.join("run").display().to_string()))
        .replace("loss.adaptive_margin.scale=0.5\"] }", "loss.adaptive_margin.scael=0.5\"] }");
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).expect("write");
    let (code, _, stderr) = rmtrain(&["recipe", &path.display().to_string(), "--no-progress"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("ablation arm \"+margin\"") && stderr.contains("scael"), "{stderr}");
    assert!(!dir.join("run").exists(), "nothing trained before the check");
}
