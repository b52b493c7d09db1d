//! TOML settings with errors that point at the line: recipes (`FILE:LINE: message`) and the
//! `--set KEY=VALUE` overrides of `rmtrain train` (`--set FRAGMENT: message`).

use crate::{config_error, PipelineError};
use rmtrain_train::TrainConfig;
use serde::de::DeserializeOwned;

/// Parses `text` strictly into `T`; an error reads `LABEL:LINE: message` (or `LABEL: message`
/// when TOML gives no position).
pub fn parse_toml_strict<T: DeserializeOwned>(text: &str, label: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| match error_line(text, &e) {
        Some(line) => format!("{label}:{line}: {}", e.message()),
        None => format!("{label}: {}", e.message()),
    })
}

/// 1-based line of a TOML error.
fn error_line(text: &str, e: &toml::de::Error) -> Option<usize> {
    e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
}

/// A [`TrainConfig`] from `KEY=VALUE` fragments (`lr=2e-5`, `loss.label_smoothing=0.1`,
/// `schedule=linear`), strictly: an unknown key is an error naming its fragment. A value that is
/// not valid TOML is taken as a bare string, so `schedule=linear` needs no quotes.
pub fn train_config_from_sets(sets: &[String]) -> Result<TrainConfig, PipelineError> {
    let mut lines = Vec::with_capacity(sets.len());
    for s in sets {
        let (key, value) = s
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| config_error(format!("--set {s:?}: expected KEY=VALUE")))?;
        let value = if toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok() {
            value.to_string()
        } else {
            toml::Value::String(value.to_string()).to_string()
        };
        lines.push(format!("{key} = {value}"));
    }
    let text = lines.join("\n");
    let cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
        let fragment = error_line(&text, &e).and_then(|l| sets.get(l - 1));
        match fragment {
            Some(f) => config_error(format!("--set {f}: {}", e.message())),
            None => config_error(format!("--set: {}", e.message())),
        }
    })?;
    cfg.validate().map_err(|m| config_error(format!("--set: {m}")))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmtrain_train::Schedule;

    fn sets(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bare_strings_numbers_and_dotted_keys() {
        let cfg = train_config_from_sets(&sets(&["schedule=linear", "lr=2e-5", "loss.label_smoothing=0.1", "shuffle=false"])).expect("valid");
        assert_eq!(cfg.schedule, Schedule::Linear);
        assert_eq!(cfg.lr, 2e-5);
        assert_eq!(cfg.loss.label_smoothing, Some(0.1));
        assert!(!cfg.shuffle);
        let quoted = train_config_from_sets(&sets(&["schedule=\"cosine\""])).expect("quoted");
        assert_eq!(quoted.schedule, Schedule::Cosine);
    }

    #[test]
    fn errors_name_the_fragment() {
        let err = train_config_from_sets(&sets(&["lr=1e-5", "learning_rate=2"])).expect_err("unknown key").to_string();
        assert!(err.starts_with("--set learning_rate=2: unknown field"), "{err}");
        let err = train_config_from_sets(&sets(&["seed=abc"])).expect_err("a string seed").to_string();
        assert!(err.starts_with("--set seed=abc:"), "{err}");
        let err = train_config_from_sets(&sets(&["lr"])).expect_err("no value").to_string();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn recipe_errors_carry_the_line() {
        let err = parse_toml_strict::<TrainConfig>("lr = 1e-5\nlearning_rate = 2\n", "x.toml").expect_err("unknown");
        assert!(err.starts_with("x.toml:2: unknown field `learning_rate`"), "{err}");
    }
}
