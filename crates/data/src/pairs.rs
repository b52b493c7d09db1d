//! Preference pairs and their JSONL readers, in TRL's preference formats
//! (https://huggingface.co/docs/trl/dataset_formats#preference):
//!
//! - standard: `{"prompt": str, "chosen": str, "rejected": str}`
//! - implicit prompt: `{"chosen": str, "rejected": str}`
//! - conversational: `prompt` (optional), `chosen`, `rejected` are lists of `{"role", "content"}`
//!   messages; `prompt` holds the earlier turns, `chosen`/`rejected` the assistant turn(s).
//!
//! Formats may be mixed across lines. Our reward models are encoders with no chat template, so a
//! message list is rendered as one `"{role}: {content}"` line per message. The text the RM scores
//! ([`Pair::chosen_text`]) is prompt + response: plain strings are concatenated with no separator,
//! exactly as TRL's RewardTrainer does (`prompt + chosen`), while rendered conversations are joined
//! with "\n" so the last prompt turn and the first response turn stay on separate lines.
//!
//! Every field of the line, known or not, is kept in `fields` and written back as is, so metadata
//! (ids, ratings, `flipped`) passes through training and scoring untouched.

use crate::DataError;
use serde_json::{Map, Value};
use std::path::Path;

/// One preference: the same prompt answered twice, `chosen` preferred over `rejected`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Rendered prompt, if the line has one.
    pub prompt: Option<String>,
    /// Rendered response only (the prompt is not included; see [`Pair::chosen_text`]).
    pub chosen: String,
    pub rejected: String,
    /// TRL's `margin` (Llama-2's margin loss): how strongly chosen is preferred.
    pub margin: Option<f64>,
    /// The true preference strength where it is known (e.g. the difference of mean human ratings),
    /// for evaluation: training on it would leak the gold label.
    pub gold_margin: Option<f64>,
    /// Preference strength μ̂ (`strength_mean`, Secrets of RLHF II Eq. 4: the mean reward gap of M
    /// voter reward models), written by `rmtrain strength`; read by the strength-based flip,
    /// smoothing and adaptive margin.
    pub strength: Option<f64>,
    pub domain: Option<String>,
    pub label_source: Option<String>,
    /// The original JSON object, every field, in file order. [`write_pairs_jsonl`] writes this.
    pub fields: Map<String, Value>,
    /// 1-based line of the file the pair was read from (for error messages).
    pub line: usize,
}

impl Pair {
    /// Full text the reward model scores for the chosen side: prompt + chosen.
    pub fn chosen_text(&self) -> String {
        self.full_text(&self.chosen)
    }

    /// Full text the reward model scores for the rejected side: prompt + rejected.
    pub fn rejected_text(&self) -> String {
        self.full_text(&self.rejected)
    }

    /// Whether the line was in the conversational format. Read from `fields` (where the message
    /// lists are kept) rather than stored twice, so the struct stays the plain rendered view.
    pub fn is_conversational(&self) -> bool {
        self.fields.get("chosen").is_some_and(Value::is_array)
    }

    fn full_text(&self, response: &str) -> String {
        match &self.prompt {
            None => response.to_string(),
            Some(prompt) if self.is_conversational() => format!("{prompt}\n{response}"),
            Some(prompt) => format!("{prompt}{response}"),
        }
    }
}

/// What a scoring line asks for: one text, or both sides of a pair.
#[derive(Debug, Clone, PartialEq)]
// One per input line, read once: boxing the pair would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ScoreInput {
    Text(String),
    Pair(Pair),
}

/// One line of a scoring input file, with its line number and all its fields for pass-through.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    pub line: usize,
    pub input: ScoreInput,
    pub fields: Map<String, Value>,
}

/// Reads a preference JSONL file (any mix of the supported formats). Blank lines are skipped; a
/// file without any record is an error.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, DataError> {
    read_json_lines(path)?.into_iter().map(|(line, value)| parse_pair_line(value, path, line)).collect()
}

/// Reads a scoring JSONL file: each line is `{"text": ...}` (a string or a message list) or a pair
/// in any supported format.
pub fn read_score_records(path: &Path) -> Result<Vec<ScoreRecord>, DataError> {
    let mut records = Vec::new();
    for (line, value) in read_json_lines(path)? {
        let at = At { path, line };
        let fields = at.object(value)?;
        let is_pair = fields.contains_key("chosen") || fields.contains_key("rejected");
        let input = match (fields.get("text"), is_pair) {
            (Some(_), true) => {
                return Err(
                    at.field("text", "a line holds either \"text\" or a pair (\"chosen\"/\"rejected\"), not both")
                );
            }
            (Some(text), false) => ScoreInput::Text(render(text, "text", &at)?.text),
            (None, true) => ScoreInput::Pair(pair_from_object(fields.clone(), &at)?),
            (None, false) => {
                return Err(
                    at.field("text", "missing (a scoring line holds \"text\" or a pair \"chosen\"/\"rejected\")")
                );
            }
        };
        records.push(ScoreRecord { line, input, fields });
    }
    Ok(records)
}

/// Parses one JSON line into a [`Pair`]; `path` and `line` only serve the error messages.
pub fn parse_pair_line(value: Value, path: &Path, line: usize) -> Result<Pair, DataError> {
    let at = At { path, line };
    pair_from_object(at.object(value)?, &at)
}

/// Writes each pair's `fields` as one JSON line, atomically. `fields` must hold the whole record
/// (it does for pairs read from a file); the struct's fields are not merged back in.
pub fn write_pairs_jsonl(path: &Path, pairs: &[Pair]) -> Result<(), DataError> {
    if let Some(index) =
        pairs.iter().position(|p| !(p.fields.contains_key("chosen") && p.fields.contains_key("rejected")))
    {
        let problem = "`fields` holds no \"chosen\"/\"rejected\": build it with the whole record before writing".into();
        return Err(DataError::InvalidPair { index, problem });
    }
    write_jsonl(path, pairs.iter().map(|p| &p.fields))
}

/// Writes JSON objects one a line, atomically.
pub(crate) fn write_jsonl<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = &'a Map<String, Value>>,
) -> Result<(), DataError> {
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut out, row).expect("a map of JSON values always serializes");
        out.push(b'\n');
    }
    Ok(rmtrain_core::write_atomic(path, &out)?)
}

/// Non-blank lines of a JSONL file, parsed, with their 1-based line numbers.
pub(crate) fn read_json_lines(path: &Path) -> Result<Vec<(usize, Value)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line).map_err(|e| DataError::Json {
            path: path.into(),
            line: i + 1,
            message: json_message(&e),
        })?;
        values.push((i + 1, value));
    }
    if values.is_empty() {
        return Err(DataError::NoRecords { path: path.into() });
    }
    Ok(values)
}

/// serde_json's message with "line 1" dropped (each line is parsed on its own).
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())) {
        Some(message) => format!("{message} at column {}", e.column()),
        None => full,
    }
}

fn pair_from_object(fields: Map<String, Value>, at: &At) -> Result<Pair, DataError> {
    let chosen = render(fields.get("chosen").ok_or_else(|| at.field("chosen", "missing"))?, "chosen", at)?;
    let rejected = render(fields.get("rejected").ok_or_else(|| at.field("rejected", "missing"))?, "rejected", at)?;
    at.same_format(&rejected, "rejected", chosen.conversational)?;
    let prompt = match fields.get("prompt") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let prompt = render(value, "prompt", at)?;
            at.same_format(&prompt, "prompt", chosen.conversational)?;
            Some(prompt.text)
        }
    };
    Ok(Pair {
        prompt,
        chosen: chosen.text,
        rejected: rejected.text,
        margin: optional_number(&fields, "margin", at)?,
        gold_margin: optional_number(&fields, "gold_margin", at)?,
        strength: optional_number(&fields, "strength_mean", at)?,
        domain: optional_string(&fields, "domain", at)?,
        label_source: optional_string(&fields, "label_source", at)?,
        fields,
        line: at.line,
    })
}

/// A prompt or response rendered to text, remembering which format it came in.
struct Rendered {
    text: String,
    conversational: bool,
}

/// Renders a string as is and a message list as `"{role}: {content}"` lines.
fn render(value: &Value, key: &str, at: &At) -> Result<Rendered, DataError> {
    match value {
        Value::String(text) => Ok(Rendered { text: at.non_empty(text, key)?.to_string(), conversational: false }),
        Value::Array(messages) if messages.is_empty() => Err(at.field(key, "empty message list")),
        Value::Array(messages) => {
            let mut lines = Vec::with_capacity(messages.len());
            for (i, message) in messages.iter().enumerate() {
                let Some(message) = message.as_object() else {
                    return Err(at.field(format!("{key}[{i}]"), "expected a {role, content} message"));
                };
                let part = |name: &str| {
                    let field = format!("{key}[{i}].{name}");
                    match message.get(name) {
                        None => Err(at.field(field, "missing")),
                        Some(Value::String(text)) => at.non_empty(text, &field),
                        Some(_) => Err(at.field(field, "expected a string")),
                    }
                };
                lines.push(format!("{}: {}", part("role")?, part("content")?));
            }
            Ok(Rendered { text: lines.join("\n"), conversational: true })
        }
        _ => Err(at.field(key, "expected a string or a list of {role, content} messages")),
    }
}

fn optional_number(fields: &Map<String, Value>, key: &str, at: &At) -> Result<Option<f64>, DataError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or_else(|| at.field(key, "expected a number")),
    }
}

fn optional_string(fields: &Map<String, Value>, key: &str, at: &At) -> Result<Option<String>, DataError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(at.field(key, "expected a string")),
    }
}

/// Where a line came from, to build its errors.
pub(crate) struct At<'a> {
    pub(crate) path: &'a Path,
    pub(crate) line: usize,
}

impl At<'_> {
    pub(crate) fn field(&self, field: impl Into<String>, problem: impl Into<String>) -> DataError {
        DataError::Field { path: self.path.into(), line: self.line, field: field.into(), problem: problem.into() }
    }

    pub(crate) fn object(&self, value: Value) -> Result<Map<String, Value>, DataError> {
        match value {
            Value::Object(fields) => Ok(fields),
            other => {
                let kind = match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                Err(DataError::Line {
                    path: self.path.into(),
                    line: self.line,
                    problem: format!("expected a JSON object, got {kind}"),
                })
            }
        }
    }

    fn non_empty<'t>(&self, text: &'t str, field: &str) -> Result<&'t str, DataError> {
        if text.trim().is_empty() { Err(self.field(field, "empty text")) } else { Ok(text) }
    }

    /// TRL requires one format per line: a string prompt before message-list responses (or the
    /// reverse) has no single rendering.
    fn same_format(&self, part: &Rendered, key: &str, conversational: bool) -> Result<(), DataError> {
        match (part.conversational, conversational) {
            (true, false) => Err(self.field(key, "expected a string, as \"chosen\" is a string")),
            (false, true) => Err(self.field(key, "expected a list of messages, as \"chosen\" is a list of messages")),
            _ => Ok(()),
        }
    }
}

/// The distinct full texts of several pair sets, and for each pair of each set the indices of its
/// (chosen, rejected) text in that list: evaluation scores each distinct text once, since pairs
/// drawn from a pool of snippets share most of their texts.
pub fn distinct_texts(sets: &[&[Pair]]) -> (Vec<String>, Vec<Vec<(usize, usize)>>) {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut texts: Vec<String> = Vec::new();
    let mut slot = |t: String| {
        let next = texts.len();
        *index.entry(t).or_insert_with_key(|t| {
            texts.push(t.clone());
            next
        })
    };
    let slots = sets
        .iter()
        .map(|pairs| pairs.iter().map(|p| (slot(p.chosen_text()), slot(p.rejected_text()))).collect())
        .collect();
    (texts, slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, body).expect("write test file");
        path
    }

    fn read_err(body: &str) -> (String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(&dir, body);
        let err = read_pairs(&path).expect_err("this line must be rejected").to_string();
        (err, path.display().to_string())
    }

    #[test]
    fn standard_implicit_and_conversational_lines_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(
            &dir,
            concat!(
                r#"{"prompt": "Q: 2+2? A:", "chosen": " 4", "rejected": " 5", "margin": 1, "id": 7}"#,
                "\n\n",
                r#"{"chosen": "good", "rejected": "bad", "gold_margin": 0.5, "domain": "movie", "label_source": "mean"}"#,
                "\n",
                r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]}"#,
                "\n",
            ),
        );
        let pairs = read_pairs(&path).expect("valid file");
        assert_eq!(pairs.len(), 3);

        assert_eq!(pairs[0].chosen, " 4");
        assert_eq!(pairs[0].chosen_text(), "Q: 2+2? A: 4");
        assert_eq!(pairs[0].rejected_text(), "Q: 2+2? A: 5");
        assert_eq!(pairs[0].margin, Some(1.0));
        assert_eq!(pairs[0].fields["id"], 7);

        assert_eq!(pairs[1].prompt, None);
        assert_eq!(pairs[1].chosen_text(), "good");
        assert_eq!(pairs[1].gold_margin, Some(0.5));
        assert_eq!(pairs[1].domain.as_deref(), Some("movie"));
        assert_eq!(pairs[1].label_source.as_deref(), Some("mean"));

        assert!(pairs[2].is_conversational());
        assert_eq!(pairs[2].chosen, "assistant: Hello!");
        assert_eq!(pairs[2].chosen_text(), "user: Hi\nassistant: Hello!");
        assert_eq!(pairs[2].rejected_text(), "user: Hi\nassistant: Go away.");
    }

    #[test]
    fn written_pairs_read_back_with_every_field_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = r#"{"zeta":1,"chosen":"a","extra":{"k":[1,2]},"rejected":"b","alpha":null}"#;
        let pairs = read_pairs(&file(&dir, &format!("{line}\n"))).expect("valid");
        let out = dir.path().join("out.jsonl");
        write_pairs_jsonl(&out, &pairs).expect("write");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), format!("{line}\n"));
    }

    #[test]
    fn score_records_hold_texts_and_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file(&dir, "{\"text\": \"one\", \"id\": 1}\n{\"chosen\": \"a\", \"rejected\": \"b\"}\n");
        let records = read_score_records(&path).expect("valid");
        assert_eq!(records[0].input, ScoreInput::Text("one".into()));
        assert_eq!(records[0].fields["id"], 1);
        assert_eq!(records[1].line, 2);
        assert!(matches!(&records[1].input, ScoreInput::Pair(p) if p.chosen == "a"));

        std::fs::write(&path, "{\"id\": 1}\n").expect("write");
        let err = read_score_records(&path).expect_err("neither text nor pair").to_string();
        assert!(err.contains(":1: field \"text\": missing"), "{err}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            ("{\"chosen\": \"a\", \"rejected\": \"b\"}\n\n{\"rejected\": \"b\"}\n", ":3: field \"chosen\": missing"),
            ("{\"chosen\": \"a\", \"rejected\": \"b\"}\n@oops\n", ":2: invalid JSON: expected value at column 1"),
            ("{\"chosen\": \"a\", \"rejected\": \"  \"}\n", ":1: field \"rejected\": empty text"),
            (
                "{\"chosen\": 3, \"rejected\": \"b\"}\n",
                ":1: field \"chosen\": expected a string or a list of {role, content} messages",
            ),
            (
                "{\"chosen\": [{\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"user\"}], \"rejected\": []}\n",
                ":1: field \"chosen[1].content\": missing",
            ),
            (
                "{\"prompt\": \"Hi\", \"chosen\": [{\"role\": \"assistant\", \"content\": \"a\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"b\"}]}\n",
                ":1: field \"prompt\": expected a list of messages",
            ),
            (
                "{\"chosen\": \"a\", \"rejected\": \"b\", \"margin\": \"big\"}\n",
                ":1: field \"margin\": expected a number",
            ),
            ("[1, 2]\n", ":1: expected a JSON object, got an array"),
        ];
        for (body, expected) in cases {
            let (err, path) = read_err(body);
            assert!(err.starts_with(&path) && err.contains(expected), "{body:?}: got {err:?}, want {expected:?}");
        }
    }

    #[test]
    fn empty_and_missing_files_are_errors_naming_the_path() {
        let (err, path) = read_err("\n  \n");
        assert_eq!(err, format!("{path}: no records"));
        let missing = std::env::temp_dir().join("rmtrain-data-no-such-file.jsonl");
        let err = read_pairs(&missing).expect_err("missing file").to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
    }

    /// The hand-written samples in data/samples/, with the texts data/README.md says they build:
    /// every file there must be listed here, so the README's examples cannot rot.
    #[test]
    fn every_sample_file_in_data_parses_to_the_documented_texts() {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/samples");
        let mut names: Vec<String> = std::fs::read_dir(&samples)
            .expect("data/samples exists")
            .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["conversational.jsonl", "implicit.jsonl", "standard.jsonl", "texts.jsonl"],
            "a new sample file needs its expected texts in this test"
        );
        let texts = |name: &str| -> Vec<Pair> { read_pairs(&samples.join(name)).unwrap_or_else(|e| panic!("{e}")) };
        let rendered = |pairs: &[Pair]| -> Vec<(String, String)> {
            pairs.iter().map(|p| (p.chosen_text(), p.rejected_text())).collect()
        };
        let owned = |expected: &[(&str, &str)]| -> Vec<(String, String)> {
            expected.iter().map(|(c, r)| (c.to_string(), r.to_string())).collect()
        };

        let standard = texts("standard.jsonl");
        assert_eq!(
            rendered(&standard),
            owned(&[
                ("Q: What is the capital of France?\nA: Paris.", "Q: What is the capital of France?\nA: Lyon."),
                (
                    "Review the film in one line: A warm, funny and beautifully acted story.",
                    "Review the film in one line: Two hours I will never get back."
                ),
                ("Translate 'merci' into English: thank you", "Translate 'merci' into English: please"),
            ])
        );
        assert_eq!((standard[1].margin, &standard[1].fields["id"]), (Some(2.5), &Value::from("film-7")));
        assert_eq!(standard[2].domain.as_deref(), Some("translation"));
        assert_eq!(standard[2].label_source.as_deref(), Some("annotator-3"));

        let implicit = texts("implicit.jsonl");
        assert_eq!(
            rendered(&implicit),
            owned(&[
                ("The soundtrack alone is worth the ticket.", "The plot collapses in the second act."),
                ("Arrived early and works perfectly.", "Broke after two days."),
                ("Sunny day, coffee in hand :)", "Missed the bus again."),
            ])
        );
        assert!(implicit.iter().all(|p| p.prompt.is_none()));
        assert_eq!(implicit[1].gold_margin, Some(2.85));
        assert_eq!(
            (implicit[1].domain.as_deref(), implicit[1].label_source.as_deref()),
            (Some("amazon"), Some("mean"))
        );
        assert_eq!(
            (&implicit[1].fields["chosen_mean"], &implicit[1].fields["rejected_mean"]),
            (&Value::from(2.6), &Value::from(-0.25))
        );
        assert_eq!((implicit[2].margin, &implicit[2].fields["rater"]), (Some(1.0), &Value::from(12)));

        let conversational = texts("conversational.jsonl");
        assert!(conversational.iter().all(Pair::is_conversational));
        assert_eq!(
            rendered(&conversational),
            owned(&[
                (
                    "user: Hi, can you recommend a film?\nassistant: Try Spirited Away: gentle, strange and beautiful.",
                    "user: Hi, can you recommend a film?\nassistant: No."
                ),
                (
                    "user: Is it going to rain?\nassistant: The forecast says showers after 3 pm.",
                    "user: Is it going to rain?\nassistant: Who knows."
                ),
                (
                    "system: Answer briefly.\nuser: 2 + 2?\nassistant: 4",
                    "system: Answer briefly.\nuser: 2 + 2?\nassistant: 5"
                ),
            ])
        );
        assert_eq!(conversational[1].margin, Some(1.5));

        let records = read_score_records(&samples.join("texts.jsonl")).unwrap_or_else(|e| panic!("{e}"));
        let inputs: Vec<ScoreInput> = records.iter().map(|r| r.input.clone()).collect();
        assert_eq!(
            inputs[..3],
            [
                ScoreInput::Text("A warm, funny and beautifully acted story.".into()),
                ScoreInput::Text("Two hours I will never get back.".into()),
                ScoreInput::Text("user: Is it going to rain?\nassistant: The forecast says showers after 3 pm.".into()),
            ]
        );
        assert!(
            matches!(&inputs[3], ScoreInput::Pair(p) if p.chosen_text() == "Arrived early and works perfectly." && p.rejected_text() == "Broke after two days.")
        );
        assert!(records.iter().enumerate().all(|(i, r)| r.fields["id"] == i + 1), "ids pass through");

        // Every JSON example of data/README.md is a line of a sample file, checked above.
        let readme = std::fs::read_to_string(samples.join("../README.md")).expect("data/README.md");
        let sample_lines: Vec<String> = names
            .iter()
            .flat_map(|n| {
                std::fs::read_to_string(samples.join(n)).expect("sample").lines().map(String::from).collect::<Vec<_>>()
            })
            .collect();
        let examples: Vec<&str> =
            readme.split("```json\n").skip(1).map(|block| block.split("```").next().unwrap_or_default()).collect();
        assert!(!examples.is_empty(), "data/README.md shows its formats in ```json blocks");
        for line in examples.iter().flat_map(|block| block.lines()).map(str::trim).filter(|l| !l.is_empty()) {
            assert!(sample_lines.iter().any(|s| s == line), "data/README.md example is no sample line: {line}");
        }
    }
}
