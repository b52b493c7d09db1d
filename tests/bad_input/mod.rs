//! The bad-input corpus: one table over every verb. Each case feeds a verb one broken file (a
//! JSONL line of the wrong shape, invalid JSON, an unknown recipe key, a corrupt config,
//! tokenizer or weights file) and must exit ≠ 0 with exactly one error line on stderr that names
//! the file (with the line and field where the file has them), print nothing on stdout, and leave
//! no output behind at the path it was asked to write.

use super::{rmtrain, root, tiny_rm, tmp};
use std::path::{Path, PathBuf};

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Substrings of the error line: the file, its line and the field.
    names: Vec<String>,
    /// Paths the verb was asked to write: none may exist afterwards.
    outputs: Vec<PathBuf>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn every_verb_names_the_bad_file_line_and_field() {
    let dir = tmp("bad-corpus");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let s = |p: &Path| p.display().to_string();
    let tiny = s(&tiny_rm());
    let lm = s(&root().join("tests/fixtures/hf/tiny-llama-lm"));
    let good = "{\"chosen\": \"good\", \"rejected\": \"bad\"}\n";
    let pairs = write("pairs.jsonl", &format!("{good}{good}{{\"chosen\": \"fine\", \"rejected\": 5}}\n"));
    let not_json = write("notjson.jsonl", &format!("{good}{{\"chosen\": \"a\", \"rejected\": \"b\"\n"));
    let good_pairs = write("good.jsonl", &good.repeat(4));
    let good_texts = write("good_texts.jsonl", "{\"text\": \"fine\"}\n");
    let texts = write("texts.jsonl", "{\"text\": \"fine\"}\n{\"txt\": \"a typo\"}\n");
    let prompts = write("prompts.jsonl", "{\"prompt\": \"Hi\", \"response\": \" there\"}\n{\"prompt\": 7, \"response\": \"x\"}\n");
    let dpo = write("dpo.jsonl", "{\"prompt\": \"Hi\", \"chosen\": \" a\", \"rejected\": \" b\"}\n{\"prompt\": \"Hi\", \"chosen\": \" a\"}\n");
    let cands = write("cands.jsonl", "{\"prompt\": \"p\", \"responses\": [\"a\", \"b\"], \"r\": [1, 2], \"g\": [0, 1]}\n{\"prompt\": \"p\", \"responses\": [\"a\", \"b\"], \"r\": [1, \"x\"], \"g\": [0, 1]}\n");
    let recipe_out = dir.join("out/recipe");
    let recipe_text = std::fs::read_to_string(root().join("recipes/tiny_warm.toml"))
        .expect("recipe")
        .replace("out = \"runs/tiny-warm\"", &format!("out = {:?}", s(&recipe_out)))
        .replace("batch_size = 4", "batch_size = 4\nbatch_sise = 8");
    assert!(recipe_text.contains(&s(&recipe_out)));
    let recipe_line = recipe_text.lines().position(|l| l.starts_with("batch_sise")).expect("the typo") + 1;
    let recipe = write("recipe.toml", &recipe_text);
    let bad_config = dir.join("bad-config");
    copy_dir(&tiny_rm(), &bad_config);
    let config = std::fs::read_to_string(bad_config.join("config.json")).expect("config");
    let config = regex_like_replace(&config, "\"hidden_size\":", "\"hidden_size\": \"wide\", \"was_hidden_size\":");
    std::fs::write(bad_config.join("config.json"), config).expect("write config");
    let bad_weights = dir.join("bad-weights");
    copy_dir(&tiny_rm(), &bad_weights);
    let w = std::fs::read(bad_weights.join("model.safetensors")).expect("weights");
    std::fs::write(bad_weights.join("model.safetensors"), &w[..w.len() / 2]).expect("truncate");
    let bad_tokenizer = dir.join("bad-tokenizer");
    copy_dir(&tiny_rm(), &bad_tokenizer);
    std::fs::write(bad_tokenizer.join("tokenizer.json"), "{\"model\": {\"type\": \"WordPiece\", \"vocab\": 3}}").expect("tokenizer");
    let out = |name: &str| dir.join("out").join(name);
    let a = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let at = |p: &Path, line: usize| format!("{}:{line}", p.file_name().expect("name").to_string_lossy());
    let data = |p: &Path| format!("x={}", s(p));

    let cases = vec![
        Case { name: "train: a pair's field of the wrong type", args: a(&["train", "--model", &tiny, "--train", &s(&pairs), "--out", &s(&out("train"))]), names: vec![at(&pairs, 3), "rejected".into()], outputs: vec![out("train")] },
        Case { name: "train: invalid JSON", args: a(&["train", "--model", &tiny, "--train", &s(&not_json), "--out", &s(&out("train2"))]), names: vec![at(&not_json, 2), "invalid JSON".into()], outputs: vec![out("train2")] },
        Case { name: "train: a config field of the wrong type", args: a(&["train", "--model", &s(&bad_config), "--train", &s(&good_pairs), "--out", &s(&out("train3"))]), names: vec!["config.json".into(), "hidden_size".into()], outputs: vec![out("train3")] },
        Case { name: "score: a line with no text", args: a(&["score", "--model", &tiny, "--input", &s(&texts)]), names: vec![at(&texts, 2)], outputs: vec![] },
        Case { name: "score: truncated weights", args: a(&["score", "--model", &s(&bad_weights), "--input", &s(&good_texts)]), names: vec!["model.safetensors".into()], outputs: vec![] },
        Case { name: "score: a broken tokenizer", args: a(&["score", "--model", &s(&bad_tokenizer), "--input", &s(&good_texts)]), names: vec!["tokenizer.json".into()], outputs: vec![] },
        Case { name: "eval", args: a(&["eval", "--model", &tiny, "--data", &data(&pairs)]), names: vec![at(&pairs, 3), "rejected".into()], outputs: vec![] },
        Case { name: "strength", args: a(&["strength", "--model", &tiny, "--model", &tiny, "--data", &s(&pairs), "--out", &s(&out("strength/s.jsonl")), "--no-progress"]), names: vec![at(&pairs, 3), "rejected".into()], outputs: vec![out("strength")] },
        Case { name: "average: truncated weights", args: a(&["average", &tiny, &s(&bad_weights), "--out", &s(&out("avg"))]), names: vec!["model.safetensors".into()], outputs: vec![out("avg")] },
        Case { name: "interpolate", args: a(&["interpolate", &tiny, &tiny, "--data", &data(&not_json), "--out", &s(&out("interp"))]), names: vec![at(&not_json, 2)], outputs: vec![out("interp")] },
        Case { name: "recipe: an unknown key", args: a(&["recipe", &s(&recipe), "--no-progress"]), names: vec![at(&recipe, recipe_line), "batch_sise".into()], outputs: vec![recipe_out.clone()] },
        Case { name: "slurm: an unknown key", args: a(&["slurm", &s(&recipe), "--dir", &s(&out("slurm"))]), names: vec![at(&recipe, recipe_line), "batch_sise".into()], outputs: vec![out("slurm")] },
        Case { name: "logprobs: a prompt of the wrong type", args: a(&["logprobs", "--model", &lm, "--input", &s(&prompts), "--out", &s(&out("lp.jsonl"))]), names: vec![at(&prompts, 2), "prompt".into()], outputs: vec![out("lp.jsonl")] },
        Case { name: "generate", args: a(&["generate", "--model", &lm, "--input", &s(&prompts), "--out", &s(&out("gen.jsonl")), "--no-progress"]), names: vec![at(&prompts, 2), "prompt".into()], outputs: vec![out("gen.jsonl")] },
        Case { name: "dpo: a pair without rejected", args: a(&["dpo", "--model", &lm, "--train", &s(&dpo), "--out", &s(&out("dpo")), "--no-progress"]), names: vec![at(&dpo, 2), "rejected".into()], outputs: vec![out("dpo")] },
        Case { name: "bon: a reward that is not a number", args: a(&["bon", "--input", &s(&cands), "--reward-column", "r", "--gold-column", "g", "--n", "2", "--out", &s(&out("bon")), "--no-progress"]), names: vec![at(&cands, 2), "r[1]".into()], outputs: vec![out("bon")] },
        Case { name: "bench on real pairs", args: a(&["bench", "train", "--model", &tiny, "--data", &s(&pairs), "--batch", "2", "--warmup", "0"]), names: vec![at(&pairs, 3), "rejected".into()], outputs: vec![] },
        Case { name: "data vader: no raw folder", args: a(&["data", "vader", "--raw", &s(&dir.join("no-such-raw")), "--out", &s(&out("vader"))]), names: vec!["no-such-raw".into()], outputs: vec![out("vader")] },
    ];
    let verbs: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.args[0].as_str()).collect();
    for verb in ["train", "score", "eval", "strength", "average", "interpolate", "recipe", "slurm", "logprobs", "generate", "dpo", "bon", "bench", "data"] {
        assert!(verbs.contains(verb), "the corpus has no case for {verb}");
    }
    let mut failures = Vec::new();
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = rmtrain(&args);
        let mut problems = Vec::new();
        if code == 0 {
            problems.push("exit 0".to_string());
        }
        if !stdout.is_empty() {
            problems.push(format!("stdout {stdout:?}"));
        }
        if stderr.trim_end().lines().count() != 1 || stderr.contains("panicked") {
            problems.push(format!("not one error line: {stderr:?}"));
        }
        for n in &c.names {
            if !stderr.contains(n.as_str()) {
                problems.push(format!("{n:?} not named in {:?}", stderr.trim_end()));
            }
        }
        for o in &c.outputs {
            if o.exists() {
                problems.push(format!("left {} behind", o.display()));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// `text` with the first `from` replaced by `to` (fails the test when `from` is missing).
fn regex_like_replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from} not in {text}");
    text.replacen(from, to, 1)
}
