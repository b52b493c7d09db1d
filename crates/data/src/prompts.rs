//! Prompt files for causal LMs (`rmtrain generate`, `rmtrain logprobs`): JSONL lines with a
//! `prompt` (a string, or a conversation: a list of `{"role", "content"}` messages, which goes
//! through the model's chat template) or `messages` (a conversation), and for log-probs a
//! `response` string. Every other field is kept for the output line.

use crate::pairs::{read_json_lines, At};
use crate::DataError;
use serde_json::{Map, Value};
use std::path::Path;

/// What a line asks the model to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Plain text (through the chat template only when asked: `--chat`).
    Text(String),
    /// A conversation, always through the chat template.
    Messages(Value),
}

#[derive(Debug, Clone)]
pub struct PromptRecord {
    pub line: usize,
    pub prompt: PromptInput,
    pub response: Option<String>,
    /// The whole input object.
    pub fields: Map<String, Value>,
}

pub(crate) fn messages(v: &Value, field: &str, at: &At) -> Result<Value, DataError> {
    let Value::Array(items) = v else { return Err(at.field(field, "expected a string or a list of {\"role\", \"content\"} messages")) };
    if items.is_empty() {
        return Err(at.field(field, "an empty conversation"));
    }
    for (i, m) in items.iter().enumerate() {
        let ok = m.get("role").is_some_and(Value::is_string) && m.get("content").is_some_and(Value::is_string);
        if !ok {
            return Err(at.field(format!("{field}[{i}]"), "a message needs string \"role\" and \"content\""));
        }
    }
    Ok(v.clone())
}

/// Reads a prompt file; `need_response` makes `response` (a string) required.
pub fn read_prompt_records(path: &Path, need_response: bool) -> Result<Vec<PromptRecord>, DataError> {
    let mut out = Vec::new();
    for (line, value) in read_json_lines(path)? {
        let at = At { path, line };
        let fields = at.object(value)?;
        let prompt = match (fields.get("prompt"), fields.get("messages")) {
            (Some(_), Some(_)) => return Err(at.field("messages", "a line holds either \"prompt\" or \"messages\", not both")),
            (Some(Value::String(s)), None) => PromptInput::Text(s.clone()),
            (Some(v), None) => PromptInput::Messages(messages(v, "prompt", &at)?),
            (None, Some(v)) => PromptInput::Messages(messages(v, "messages", &at)?),
            (None, None) => return Err(at.field("prompt", "missing (a line holds \"prompt\" or \"messages\")")),
        };
        let response = match fields.get("response") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(at.field("response", "not a string")),
            None if need_response => return Err(at.field("response", "missing")),
            None => None,
        };
        out.push(PromptRecord { line, prompt, response, fields });
    }
    if out.is_empty() {
        return Err(DataError::NoRecords { path: path.to_path_buf() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, need_response: bool) -> Result<Vec<PromptRecord>, String> {
        let dir = std::env::temp_dir().join(format!("rmtrain-prompts-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("p.jsonl");
        std::fs::write(&p, text).expect("write");
        let r = read_prompt_records(&p, need_response).map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).expect("cleanup");
        r
    }

    #[test]
    fn prompts_are_text_or_conversations_and_errors_name_line_and_field() {
        let ok = read("{\"prompt\": \"Hi\", \"id\": 3}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"Yo\"}]}\n", false).expect("ok");
        assert_eq!(ok[0].prompt, PromptInput::Text("Hi".into()));
        assert_eq!(ok[0].fields["id"], 3);
        assert!(matches!(ok[1].prompt, PromptInput::Messages(_)) && ok[1].line == 3);
        let e = read("{\"prompt\": \"Hi\"}\n", true).expect_err("response");
        assert!(e.ends_with(":1: field \"response\": missing"), "{e}");
        let e = read("{\"prompt\": \"a\"}\n{\"messages\": [{\"role\": \"user\"}]}\n", false).expect_err("content");
        assert!(e.contains(":2: field \"messages[0]\""), "{e}");
        let e = read("{\"text\": \"a\"}\n", false).expect_err("prompt");
        assert!(e.contains(":1: field \"prompt\": missing"), "{e}");
    }
}
