//! MetaRM's meta set (Secrets of RLHF II §3.2): groups of several unlabeled responses to one
//! prompt, `{"prompt": str (optional), "responses": [str, ...]}` per JSONL line. The difference
//! loss J rewards the reward model for telling a group's responses apart, so no label is needed.

use crate::pairs::write_jsonl;
use crate::DataError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct MetaGroup {
    pub prompt: Option<String>,
    pub responses: Vec<String>,
}

impl MetaGroup {
    /// The texts the reward model scores: prompt + response, concatenated with no separator as
    /// for plain-string pairs ([`crate::Pair::chosen_text`]).
    pub fn texts(&self) -> Vec<String> {
        let prompt = self.prompt.as_deref().unwrap_or("");
        self.responses.iter().map(|r| format!("{prompt}{r}")).collect()
    }
}

/// Reads a meta set; an error names the file, the line and the field.
pub fn read_meta_groups(path: &Path) -> Result<Vec<MetaGroup>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let mut groups = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let field = |field: &str, problem: String| DataError::Field { path: path.into(), line: line_no, field: field.into(), problem };
        let value: Value = serde_json::from_str(line)
            .map_err(|e| DataError::Json { path: path.into(), line: line_no, message: e.to_string() })?;
        let Value::Object(obj) = value else {
            return Err(DataError::Line { path: path.into(), line: line_no, problem: "expected a JSON object".into() });
        };
        let prompt = match obj.get("prompt") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(field("prompt", "expected a string".into())),
        };
        let Some(Value::Array(items)) = obj.get("responses") else {
            return Err(field("responses", "missing, or not a list of strings".into()));
        };
        let mut responses = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if !s.trim().is_empty() => responses.push(s.to_string()),
                _ => return Err(field("responses", format!("item {k}: expected a non-empty string"))),
            }
        }
        if responses.len() < 2 {
            return Err(field("responses", format!("a group needs at least 2 responses, got {}", responses.len())));
        }
        groups.push(MetaGroup { prompt, responses });
    }
    if groups.is_empty() {
        return Err(DataError::NoRecords { path: path.into() });
    }
    Ok(groups)
}

/// Groups of `k` distinct texts drawn without replacement in a seeded random order (a final short
/// group is dropped): the meta set built from unlabeled snippets when there is no policy to sample.
pub fn meta_groups_from_texts(texts: &[String], k: usize, max_groups: Option<usize>, seed: u64) -> Result<Vec<MetaGroup>, DataError> {
    if k < 2 {
        return Err(DataError::InvalidOption(format!("meta groups need at least 2 responses each, got k = {k}")));
    }
    let mut pool: Vec<&String> = texts.iter().collect();
    pool.sort();
    pool.dedup();
    pool.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut groups: Vec<MetaGroup> =
        pool.chunks_exact(k).map(|c| MetaGroup { prompt: None, responses: c.iter().map(|s| s.to_string()).collect() }).collect();
    if let Some(n) = max_groups {
        groups.truncate(n);
    }
    if groups.is_empty() {
        return Err(DataError::InvalidOption(format!("{} distinct texts make no group of {k}", pool.len())));
    }
    Ok(groups)
}

/// Writes a meta set atomically, one group per line.
pub fn write_meta_groups(path: &Path, groups: &[MetaGroup]) -> Result<(), DataError> {
    let lines: Vec<Map<String, Value>> = groups
        .iter()
        .map(|g| {
            let mut m = Map::new();
            if let Some(p) = &g.prompt {
                m.insert("prompt".into(), json!(p));
            }
            m.insert("responses".into(), json!(g.responses));
            m
        })
        .collect();
    write_jsonl(path, lines.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_and_bad_lines_name_their_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let texts: Vec<String> = (0..11).map(|i| format!("snippet {i}")).collect();
        let groups = meta_groups_from_texts(&texts, 5, None, 3).expect("groups");
        assert_eq!(groups.len(), 2); // 11 texts: two groups of 5, one left over
        let mut seen: Vec<&String> = groups.iter().flat_map(|g| &g.responses).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 10);
        let path = dir.path().join("meta.jsonl");
        write_meta_groups(&path, &groups).expect("write");
        assert_eq!(read_meta_groups(&path).expect("read"), groups);
        assert_ne!(meta_groups_from_texts(&texts, 5, None, 4).expect("groups"), groups);

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"responses\": [\"a\", \"b\"]}\n{\"responses\": [\"a\"]}\n").expect("write");
        let err = read_meta_groups(&bad).expect_err("one response").to_string();
        assert!(err.contains("bad.jsonl:2: field \"responses\": a group needs at least 2"), "{err}");
        std::fs::write(&bad, "{\"prompt\": 3, \"responses\": [\"a\", \"b\"]}\n").expect("write");
        assert!(read_meta_groups(&bad).expect_err("prompt").to_string().contains(":1: field \"prompt\""));
        let g = MetaGroup { prompt: Some("Q: ".into()), responses: vec!["a".into(), "b".into()] };
        assert_eq!(g.texts(), vec!["Q: a".to_string(), "Q: b".to_string()]);
    }
}
