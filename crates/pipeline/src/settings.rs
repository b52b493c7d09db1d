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
    let (_, cfg): (_, TrainConfig) = checked_sets(sets)?;
    cfg.validate().map_err(|m| config_error(format!("--set: {m}")))?;
    Ok(cfg)
}

/// A [`rmtrain_train::DpoConfig`] from `KEY=VALUE` fragments (`beta=0.1`, `loss=ipo`, `lr=5e-6`),
/// strictly, as [`train_config_from_sets`].
pub fn dpo_config_from_sets(sets: &[String]) -> Result<rmtrain_train::DpoConfig, PipelineError> {
    let (_, cfg): (_, rmtrain_train::DpoConfig) = checked_sets(sets)?;
    cfg.validate().map_err(|m| config_error(format!("--set: {m}")))?;
    Ok(cfg)
}

/// `base` with the `KEY=VALUE` fragments applied on top (dotted keys reach into tables:
/// `loss.adaptive_margin.scale=2`, `flip.below=0`): an ablation arm's settings. The fragments are
/// merged in order into `base`'s table (a key of a table `base` already has, such as
/// `loss.contrastive.beta=0.5`, needs none of its other keys) and the result is read strictly and
/// validated; an error names the first fragment that alone over `base` gives it. A fragment cannot
/// remove a setting of `base` (TOML has no null).
pub fn apply_sets(base: &TrainConfig, sets: &[String]) -> Result<TrainConfig, PipelineError> {
    let toml::Value::Table(base) = toml::Value::try_from(base).map_err(|e| config_error(format!("settings: {e}")))? else {
        unreachable!("a struct serializes to a table")
    };
    let over_base = |over: toml::Table| {
        let mut merged = base.clone();
        merge_tables(&mut merged, over);
        toml::Value::Table(merged).try_into::<TrainConfig>().map_err(|e| e.message().to_string())
    };
    let mut overs = Vec::with_capacity(sets.len());
    for s in sets {
        overs.push(toml::from_str::<toml::Table>(&sets_text(std::slice::from_ref(s))?).map_err(|e| config_error(format!("--set {s}: {}", e.message())))?);
    }
    let mut all = toml::Table::new();
    for over in &overs {
        merge_tables(&mut all, over.clone());
    }
    let cfg = over_base(all).map_err(|message| {
        match sets.iter().zip(overs).find(|(_, over)| over_base(over.clone()).err().as_deref() == Some(message.as_str())) {
            Some((s, _)) => config_error(format!("--set {s}: {message}")),
            None => config_error(format!("--set: {message}")),
        }
    })?;
    cfg.validate().map_err(|m| config_error(format!("--set: {m}")))?;
    Ok(cfg)
}

fn merge_tables(into: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_tables(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The fragments' TOML text and the [`TrainConfig`] they make over the defaults (not yet
/// validated); an unknown key or a bad value is an error naming its fragment.
fn checked_sets<T: serde::de::DeserializeOwned>(sets: &[String]) -> Result<(String, T), PipelineError> {
    let text = sets_text(sets)?;
    let cfg = toml::from_str(&text).map_err(|e| {
        let fragment = error_line(&text, &e).and_then(|l| sets.get(l - 1));
        match fragment {
            Some(f) => config_error(format!("--set {f}: {}", e.message())),
            None => config_error(format!("--set: {}", e.message())),
        }
    })?;
    Ok((text, cfg))
}

/// One TOML line per fragment; a value that is not valid TOML becomes a bare string.
fn sets_text(sets: &[String]) -> Result<String, PipelineError> {
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
    Ok(lines.join("\n"))
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
    fn sets_apply_on_top_of_a_base_and_reach_into_tables() {
        let mut base = TrainConfig { lr: 7e-5, ..TrainConfig::default() };
        base.loss.label_smoothing = Some(0.2);
        let cfg = apply_sets(&base, &sets(&["flip.bottom_fraction=0.1", "loss.adaptive_margin.scale=2", "seed=3"])).expect("valid");
        assert_eq!((cfg.lr, cfg.seed, cfg.loss.label_smoothing), (7e-5, 3, Some(0.2)));
        assert_eq!(cfg.flip.and_then(|f| f.bottom_fraction), Some(0.1));
        assert_eq!(cfg.loss.adaptive_margin.map(|m| (m.scale, m.clamp_zero)), Some((2.0, false)));
        let err = apply_sets(&base, &sets(&["loss.adaptive_margin.scael=2"])).expect_err("typo").to_string();
        assert!(err.starts_with("--set loss.adaptive_margin.scael=2: unknown field"), "{err}");
        let err = apply_sets(&base, &sets(&["flip.bottom_fraction=0.1", "flip.below=0"])).expect_err("two rules").to_string();
        assert!(err.contains("exactly one of bottom_fraction, below"), "{err}");
        // A key of a table the base has needs none of its other keys.
        let mut swav = base.clone();
        swav.metarm = Some(rmtrain_train::MetaRmConfig { meta_data: "m.jsonl".into(), eta: 1.0, groups_per_step: 4 });
        let cfg = apply_sets(&swav, &sets(&["metarm.eta=2"])).expect("eta alone");
        assert_eq!(cfg.metarm.map(|m| (m.eta, m.groups_per_step)), Some((2.0, 4)));
        assert_eq!(apply_sets(&base, &[]).expect("no change").lr, 7e-5);
    }

    #[test]
    fn recipe_errors_carry_the_line() {
        let err = parse_toml_strict::<TrainConfig>("lr = 1e-5\nlearning_rate = 2\n", "x.toml").expect_err("unknown");
        assert!(err.starts_with("x.toml:2: unknown field `learning_rate`"), "{err}");
    }
}
