//! Candidate files for Best-of-N selection (`rmtrain bon`): JSONL lines with N responses to one
//! prompt, as `rmtrain generate --n N` writes them, or the user's own. A line holds
//! - `prompt` (a string or a conversation) or `messages`: optional, needed only when the reward
//!   model scores prompt and response together;
//! - `responses`: a list of N strings;
//! - optional per-candidate columns, each a list of N numbers: `ref_logprobs` (log π_ref of each
//!   response), gold rewards, precomputed proxy rewards, under names the caller chooses;
//! - optionally a column of N embeddings (lists of numbers of one length).
//!
//! Every other field is kept. Errors name the file, the line and the field.

use crate::pairs::{read_json_lines, At};
use crate::prompts::PromptInput;
use crate::DataError;
use serde_json::{Map, Value};
use std::path::Path;

/// Which columns to read, besides `prompt`/`messages` and `responses`.
#[derive(Debug, Clone, Default)]
pub struct CandidateColumns {
    /// Lists of N numbers, all required on every line: e.g. the proxy rewards, the gold rewards.
    pub required_numbers: Vec<String>,
    /// Lists of N numbers read where present (e.g. `ref_logprobs`); a line without one gets None.
    pub optional_numbers: Vec<String>,
    /// A column of N embeddings, required on every line.
    pub embeddings: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CandidateRecord {
    pub line: usize,
    pub prompt: Option<PromptInput>,
    pub responses: Vec<String>,
    /// The number columns asked for, in the order of `required_numbers` then `optional_numbers`.
    pub numbers: Vec<Option<Vec<f64>>>,
    pub embeddings: Option<Vec<Vec<f64>>>,
    /// The whole input object.
    pub fields: Map<String, Value>,
}

fn number_list(v: &Value, field: &str, n: usize, at: &At) -> Result<Vec<f64>, DataError> {
    let Value::Array(items) = v else { return Err(at.field(field, format!("expected a list of {n} numbers (one per response)"))) };
    if items.len() != n {
        return Err(at.field(field, format!("{} values for {n} responses", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| match x.as_f64() {
            Some(f) if f.is_finite() => Ok(f),
            _ => Err(at.field(format!("{field}[{i}]"), "expected a finite number")),
        })
        .collect()
}

/// Reads a candidates file. Every line must have the same number of responses unless
/// `same_n` is false.
pub fn read_candidate_records(path: &Path, columns: &CandidateColumns, same_n: bool) -> Result<Vec<CandidateRecord>, DataError> {
    let mut out: Vec<CandidateRecord> = Vec::new();
    for (line, value) in read_json_lines(path)? {
        let at = At { path, line };
        let fields = at.object(value)?;
        let prompt = match (fields.get("prompt"), fields.get("messages")) {
            (Some(_), Some(_)) => return Err(at.field("messages", "a line holds either \"prompt\" or \"messages\", not both")),
            (Some(Value::String(s)), None) => Some(PromptInput::Text(s.clone())),
            (Some(v), None) => Some(PromptInput::Messages(crate::prompts::messages(v, "prompt", &at)?)),
            (None, Some(v)) => Some(PromptInput::Messages(crate::prompts::messages(v, "messages", &at)?)),
            (None, None) => None,
        };
        let responses: Vec<String> = match fields.get("responses") {
            None => return Err(at.field("responses", "missing (a list of response strings)")),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, r)| r.as_str().map(str::to_string).ok_or_else(|| at.field(format!("responses[{i}]"), "expected a string")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(at.field("responses", "expected a non-empty list of strings")),
        };
        let n = responses.len();
        if let Some(first) = out.first().filter(|f| same_n && f.responses.len() != n) {
            return Err(at.field("responses", format!("{n} responses, but line {} has {}", first.line, first.responses.len())));
        }
        let mut numbers = Vec::new();
        for name in &columns.required_numbers {
            let v = fields.get(name.as_str()).ok_or_else(|| at.field(name.as_str(), format!("missing (a list of {n} numbers)")))?;
            numbers.push(Some(number_list(v, name, n, &at)?));
        }
        for name in &columns.optional_numbers {
            numbers.push(match fields.get(name.as_str()) {
                None | Some(Value::Null) => None,
                Some(v) => Some(number_list(v, name, n, &at)?),
            });
        }
        let embeddings = match &columns.embeddings {
            None => None,
            Some(name) => {
                let v = fields.get(name.as_str()).ok_or_else(|| at.field(name.as_str(), format!("missing (a list of {n} embeddings)")))?;
                let Value::Array(rows) = v else { return Err(at.field(name.as_str(), "expected a list of embeddings")) };
                if rows.len() != n {
                    return Err(at.field(name.as_str(), format!("{} embeddings for {n} responses", rows.len())));
                }
                let mut e: Vec<Vec<f64>> = Vec::with_capacity(n);
                for (i, row) in rows.iter().enumerate() {
                    let field = format!("{name}[{i}]");
                    let dim = row.as_array().map_or(0, Vec::len);
                    let r = number_list(row, &field, dim.max(1), &at)?;
                    if let Some(first) = e.first().filter(|f| f.len() != r.len()) {
                        return Err(at.field(field, format!("{} dimensions, but {name}[0] has {}", r.len(), first.len())));
                    }
                    e.push(r);
                }
                Some(e)
            }
        };
        out.push(CandidateRecord { line, prompt, responses, numbers, embeddings, fields });
    }
    if out.is_empty() {
        return Err(DataError::NoRecords { path: path.to_path_buf() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, columns: &CandidateColumns) -> Result<Vec<CandidateRecord>, String> {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("c.jsonl");
        std::fs::write(&p, text).expect("write");
        read_candidate_records(&p, columns, true).map_err(|e| e.to_string())
    }

    #[test]
    fn candidates_with_columns_and_errors_that_name_line_and_field() {
        let cols = CandidateColumns {
            required_numbers: vec!["gold".into()],
            optional_numbers: vec!["ref_logprobs".into()],
            embeddings: Some("emb".into()),
        };
        let ok = read(
            "{\"prompt\": \"P\", \"responses\": [\"a\", \"b\"], \"gold\": [1, 2], \"emb\": [[1, 0], [0, 1]], \"id\": 7}\n\
             {\"responses\": [\"c\", \"d\"], \"gold\": [0.5, -1], \"ref_logprobs\": [-3, -4], \"emb\": [[1, 1], [2, 2]]}\n",
            &cols,
        )
        .expect("ok");
        assert_eq!(ok[0].prompt, Some(PromptInput::Text("P".into())));
        assert_eq!(ok[0].numbers, vec![Some(vec![1.0, 2.0]), None]);
        assert_eq!(ok[1].numbers[1], Some(vec![-3.0, -4.0]));
        assert_eq!(ok[1].embeddings.as_ref().expect("emb")[1], vec![2.0, 2.0]);
        assert_eq!(ok[0].fields["id"], 7);
        let cases = [
            ("{\"responses\": [\"a\"], \"gold\": [1, 2], \"emb\": [[1]]}\n", ":1: field \"gold\": 2 values for 1 responses"),
            ("{\"responses\": [\"a\"], \"gold\": [\"x\"], \"emb\": [[1]]}\n", ":1: field \"gold[0]\": expected a finite number"),
            ("{\"responses\": [\"a\"], \"emb\": [[1]]}\n", ":1: field \"gold\": missing"),
            ("{\"responses\": [], \"gold\": []}\n", ":1: field \"responses\": expected a non-empty list"),
            ("{\"responses\": [\"a\", 3]}\n", ":1: field \"responses[1]\": expected a string"),
            ("{\"responses\": [\"a\", \"b\"], \"gold\": [1, 2], \"emb\": [[1, 2], [3]]}\n", ":1: field \"emb[1]\": 1 dimensions, but emb[0] has 2"),
            (
                "{\"responses\": [\"a\"], \"gold\": [1], \"emb\": [[1]]}\n{\"responses\": [\"a\", \"b\"], \"gold\": [1, 2], \"emb\": [[1], [2]]}\n",
                ":2: field \"responses\": 2 responses, but line 1 has 1",
            ),
        ];
        for (text, want) in cases {
            let e = read(text, &cols).expect_err(want);
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }
}
