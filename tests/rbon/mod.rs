//! (A module of the `rmtrain` test binary.) Best-of-N selection: `rmtrain bon` against the
//! rbon.json fixture (BoN, RBoN-KL, RBoN-WD picks), sentence embeddings against transformers
//! (mean pooling + L2 normalisation), a sweep with reward models and gold rewards end to end, DPO
//! pairs from the picks, and bad input.

use burn::tensor::Device;
use rmtrain_models::{RewardModel, ScoreOptions};
use serde_json::{json, Value};
use std::path::PathBuf;

use super::{fixture, jsonl, rmtrain, root};

fn tmp(name: &str) -> PathBuf {
    super::tmp(&format!("rbon-{name}"))
}

fn rbon() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("rbon.json")).expect("rbon.json")).expect("json")
}

/// The fixture's prompts as a candidates file: rewards, ref_logprobs and embeddings as columns.
fn candidates_from_fixture(dir: &std::path::Path) -> PathBuf {
    let f = rbon();
    let path = dir.join("cands.jsonl");
    let lines: Vec<String> = f["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| {
            let n = p["rewards"].as_array().expect("rewards").len();
            let responses: Vec<String> = (0..n).map(|i| format!("response {i} of prompt {}", p["prompt_index"])).collect();
            json!({"prompt": format!("prompt {}", p["prompt_index"]), "responses": responses, "rewards": p["rewards"],
                   "ref_logprobs": p["ref_logprobs"], "emb": p["embeddings"], "prompt_index": p["prompt_index"]})
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

#[test]
fn bon_verb_picks_what_rbon_json_picks_and_builds_dpo_pairs_from_the_picks() {
    let f = rbon();
    let dir = tmp("fixture");
    let cands = candidates_from_fixture(&dir);
    let out = dir.join("report");
    let pairs = dir.join("pairs.jsonl");
    let (beta_kl, beta_wd) = (f["beta_kl"].to_string(), f["beta_wd"].to_string());
    let args = [
        "bon", "--input", cands.to_str().expect("utf8"), "--out", out.to_str().expect("utf8"), "--reward-column", "rewards",
        "--embedding-column", "emb", "--beta-kl", &beta_kl, "--beta-wd", &beta_wd, "--pairs-out", pairs.to_str().expect("utf8"),
        "--pair-rule", "wd", "--pair-beta", &beta_wd, "--no-progress",
    ];
    let (code, stdout, stderr) = rmtrain(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("# Best-of-N selection") && stdout.contains("RBoN-WD"), "{stdout}");
    let selections = jsonl(&out.join("selections.jsonl"));
    let prompts = f["prompts"].as_array().expect("prompts");
    assert_eq!(selections.len(), prompts.len());
    let mut differ = [0usize; 2];
    for (line, want) in selections.iter().zip(prompts) {
        assert_eq!(line["prompt_index"], want["prompt_index"]);
        let picks = line["selected"].as_array().expect("selected");
        assert_eq!(picks.len(), 3, "one pick per rule at the one β and N");
        for p in picks {
            let key = format!("selected_{}", p["rule"].as_str().expect("rule"));
            assert_eq!(p["index"], want[&key], "prompt {}: {key}", want["prompt_index"]);
            assert_eq!(p["n"], f["N"]);
        }
        differ[0] += usize::from(want["selected_kl"] != want["selected_bon"]);
        differ[1] += usize::from(want["selected_wd"] != want["selected_bon"]);
    }
    assert!(differ[0] > 0 && differ[1] > 0, "the fixture has prompts where each regulariser changes the pick: {differ:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bon.json")).expect("bon.json")).expect("json");
    assert_eq!(report["points"].as_array().expect("points").len(), 3);
    assert!(report["correlation"].is_null(), "no gold: no correlation");
    // DPO pairs: chosen = the WD pick, rejected = the lowest reward; prompts where they coincide are skipped.
    let lines = jsonl(&pairs);
    let mut k = 0;
    for want in prompts {
        let rewards: Vec<f64> = want["rewards"].as_array().expect("r").iter().map(|v| v.as_f64().expect("f")).collect();
        let worst = (0..rewards.len()).fold(0, |w, i| if rewards[i] < rewards[w] { i } else { w });
        let chosen = want["selected_wd"].as_u64().expect("wd") as usize;
        if chosen == worst {
            continue;
        }
        let l = &lines[k];
        k += 1;
        assert_eq!((l["chosen_index"].as_u64(), l["rejected_index"].as_u64()), (Some(chosen as u64), Some(worst as u64)));
        assert_eq!(l["chosen"], format!("response {chosen} of prompt {}", want["prompt_index"]));
        assert_eq!(l["prompt"], format!("prompt {}", want["prompt_index"]));
    }
    assert_eq!(k, lines.len());
    // The pairs file is a preference file the trainer reads.
    assert_eq!(rmtrain_data::read_pairs(&pairs).expect("TRL pairs").len(), lines.len());
}

fn embedding_case(name: &str, model: PathBuf) {
    let want: Value = serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/embeddings").join(name)).expect("fixture")).expect("json");
    let texts: Vec<&str> = want["texts"].as_array().expect("texts").iter().map(|t| t.as_str().expect("text")).collect();
    let max_length = want["max_length"].as_u64().expect("max_length") as usize;
    let rm = RewardModel::load(&model, max_length, &Device::flex()).expect("load");
    for (t, ids) in texts.iter().zip(want["input_ids"].as_array().expect("ids")) {
        let ids: Vec<u32> = ids.as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
        assert_eq!(rm.tokenizer.encode(t).expect("encode"), ids, "{t:?}");
    }
    for batch in [1, 8] {
        let (got, _) = rm.embed_texts(&texts, &ScoreOptions { batch_size: batch, threads: 2 }).expect("embed");
        for ((g, w), t) in got.iter().zip(want["embeddings"].as_array().expect("embeddings")).zip(&texts) {
            let w: Vec<f64> = w.as_array().expect("row").iter().map(|v| v.as_f64().expect("f")).collect();
            assert_eq!(g.len(), w.len());
            let worst = g.iter().zip(&w).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-5, "{name}, batch {batch}, {t:?}: off by {worst}");
            let norm: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "unit length: {norm}");
        }
    }
}

/// Mean pooling over the attention mask and L2 normalisation, as sentence-transformers'
/// all-MiniLM-L6-v2 computes them (scripts/make_embedding_fixture.py), alone and in padded batches.
#[test]
fn sentence_embeddings_match_transformers_mean_pooling() {
    embedding_case("tiny-bert.json", fixture("tiny-bert-rm"));
    let minilm = root().join("assets/all-MiniLM-L6-v2");
    if minilm.is_dir() {
        embedding_case("minilm.json", minilm);
    } else {
        eprintln!("SKIPPED: {} is missing (scripts/fetch-assets.sh fetches it)", minilm.display());
    }
}

/// A sweep with a reward model as proxy, gold rewards from a column, embeddings from an encoder:
/// every (rule, β, N) point, the baselines, the correlation, the plots; bad input is refused
/// with the file, line and field.
#[test]
fn bon_sweep_with_models_gold_and_an_encoder_writes_its_report() {
    let dir = tmp("sweep");
    let cands = dir.join("cands.jsonl");
    let words = ["great", "awful", "fine", "superb", "boring", "moving", "dull", "fun"];
    let lines: Vec<String> = (0..6)
        .map(|p| {
            let responses: Vec<String> = (0..8).map(|i| format!("a {} film, {} acting", words[(p + i) % 8], words[(p * 3 + i) % 8])).collect();
            let gold: Vec<f64> = (0..8).map(|i| ((p * 7 + i * 3) % 11) as f64 / 10.0).collect();
            let lps: Vec<f64> = (0..8).map(|i| -5.0 - i as f64).collect();
            json!({"prompt": format!("Write a review {p}."), "responses": responses, "gold": gold, "ref_logprobs": lps}).to_string()
        })
        .collect();
    std::fs::write(&cands, lines.join("\n")).expect("write");
    let out = dir.join("report");
    let (c, o) = (cands.to_str().expect("utf8"), out.to_str().expect("utf8"));
    let model = "tests/fixtures/hf/tiny-bert-rm";
    let base = ["bon", "--input", c, "--out", o, "--model", model, "--gold-column", "gold", "--embedder", model, "--no-progress"];
    let (code, stdout, stderr) = rmtrain(&[&base[..], &["--n", "2,4,8", "--beta-kl", "0.01,1", "--beta-wd", "0.5,2", "--draws", "3", "--rm-input", "prompt+response"]].concat());
    assert_eq!(code, 0, "{stderr}");
    for n in ["## N = 2", "## N = 4", "## N = 8", "random pick", "gold-best pick (oracle)", "Spearman"] {
        assert!(stdout.contains(n), "{n} missing from {stdout}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bon.json")).expect("json")).expect("json");
    let points = report["points"].as_array().expect("points");
    assert_eq!(points.len(), 3 * (1 + 2 + 2), "3 N × (BoN + 2 KL β + 2 WD β)");
    for b in report["baselines"].as_array().expect("baselines") {
        let (rnd, best) = (b["random_gold"].as_f64().expect("r"), b["oracle_gold"].as_f64().expect("o"));
        assert!(rnd <= best, "{b}");
        for p in points.iter().filter(|p| p["n"] == b["n"]) {
            assert!(p["gold"].as_f64().expect("gold") <= best + 1e-12, "no rule beats the gold-best pick: {p}");
        }
    }
    // At N = 8 (every candidate) the first draw's subset is the whole set: BoN picks the argmax proxy.
    let sel = jsonl(&out.join("selections.jsonl"));
    for line in &sel {
        let proxy: Vec<f64> = line["proxy_rewards"].as_array().expect("proxy").iter().map(|v| v.as_f64().expect("f")).collect();
        let best = (0..8).fold(0, |b, i| if proxy[i] > proxy[b] { i } else { b });
        let bon8 = line["selected"].as_array().expect("sel").iter().find(|p| p["rule"] == "bon" && p["n"] == 8).expect("bon@8");
        assert_eq!(bon8["index"].as_u64(), Some(best as u64));
    }
    for plot in ["plots/gold_vs_beta_kl.png", "plots/gold_vs_beta_wd.png", "plots/gold_vs_n.png", "bon.md"] {
        assert!(out.join(plot).is_file(), "{plot}");
    }
    // Bad input: one line naming file, line and field; the earlier report stays as it was.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"responses\": [\"a\"], \"gold\": [1]}}\n", lines[0])).expect("write");
    let before = std::fs::read(out.join("bon.json")).expect("read");
    let b = bad.to_str().expect("utf8");
    for (args, must) in [
        (vec!["bon", "--input", b, "--out", o, "--model", model, "--gold-column", "gold", "--rules", "bon", "--no-progress"], "bad.jsonl:2: field \"responses\": 1 responses, but line 1 has 8"),
        (vec!["bon", "--input", c, "--out", o, "--reward-column", "gold", "--rules", "bon,kl", "--ref-logprobs-column", "lp", "--no-progress"], "cands.jsonl:1: field \"lp\": missing"),
        (vec!["bon", "--input", c, "--out", o, "--reward-column", "gold", "--rules", "bon", "--n", "9", "--no-progress"], "N = 9"),
        (vec!["bon", "--input", c, "--out", o, "--rules", "bon", "--no-progress"], "--model"),
    ] {
        let (code, stdout, stderr) = rmtrain(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(must), "{stderr} lacks {must}");
    }
    assert_eq!(std::fs::read(out.join("bon.json")).expect("read"), before, "a failed run leaves the report alone");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty(), "temp folders left behind");
}

/// recipes/tiny_rbon.toml end to end: proxy and gold reward models trained, candidates written by
/// the tiny LM, the sweep, the DPO pairs, the report; a second run reuses every stage; a bad
/// recipe is one line naming the key.
#[test]
fn tiny_rbon_recipe_runs_end_to_end_and_reuses_its_stages() {
    let _serial = super::training_lock();
    let dir = tmp("recipe");
    let out = dir.join("run");
    let text = std::fs::read_to_string(root().join("recipes/tiny_rbon.toml")).expect("recipe").replace("out = \"runs/tiny-rbon\"", &format!("out = {:?}", out.display().to_string()));
    let recipe = dir.join("rbon.toml");
    std::fs::write(&recipe, &text).expect("write");
    let r = recipe.to_str().expect("utf8");
    let (code, stdout, stderr) = rmtrain(&["recipe", r, "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    for label in ["## Reward models", "| proxy: tiny_pairs.jsonl |", "### N = 2", "### N = 4", "| RBoN-WD | 2 |", "gold-best pick (oracle)", "DPO pairs for the DeRa recipe"] {
        assert!(stdout.contains(label), "report lacks {label}: {stdout}");
    }
    for f in ["report.md", "report.json", "candidates.jsonl", "dpo_pairs.jsonl", "bon/bon.json", "bon/plots/gold_vs_n.png", "proxy/model/model.safetensors", "gold/model/model.safetensors", "gold/train.jsonl"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let cands = jsonl(&out.join("candidates.jsonl"));
    assert_eq!(cands.len(), 3);
    assert!(cands.iter().all(|c| c["responses"].as_array().is_some_and(|r| r.len() == 4) && c["ref_logprobs"].as_array().is_some_and(|r| r.len() == 4)));
    // The gold model's train file interleaves its two files line by line.
    let gold_train = std::fs::read_to_string(out.join("gold/train.jsonl")).expect("gold train");
    let first = |p: &str| std::fs::read_to_string(root().join(p)).expect("read").lines().next().expect("a line").to_string();
    let lines: Vec<&str> = gold_train.lines().collect();
    assert_eq!((lines[0], lines[1]), (first("tests/data/tiny_eval.jsonl").as_str(), first("tests/data/tiny_pairs.jsonl").as_str()));
    let pairs = rmtrain_data::read_pairs(&out.join("dpo_pairs.jsonl")).expect("DPO pairs are TRL pairs");
    assert!(!pairs.is_empty());
    // Again: every stage reused, the same candidates and picks.
    let before = std::fs::read(out.join("bon/selections.jsonl")).expect("selections");
    let (code, _, stderr) = rmtrain(&["recipe", r, "--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    for reused in ["proxy already trained", "gold already trained", "candidates already generated"] {
        assert!(stderr.contains(reused), "{reused}: {stderr}");
    }
    assert_eq!(std::fs::read(out.join("bon/selections.jsonl")).expect("selections"), before);
    // A bad key and an N above policy.n: one line each.
    for (edit, must) in [(("n = [2, 4]", "n = [2, 8]"), "bon.n: 8"), (("draws = 2", "draws = 2\nbeta = 1"), "unknown field `beta`")] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text.replace(edit.0, edit.1)).expect("write");
        let (code, stdout, stderr) = rmtrain(&["recipe", bad.to_str().expect("utf8"), "--no-progress"]);
        assert_ne!(code, 0);
        assert!(stdout.is_empty() && stderr.trim_end().lines().count() == 1 && stderr.contains(must), "{stderr}");
    }
}
