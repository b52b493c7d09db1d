//! A recipe: one strict TOML file (an unknown key is an error naming it and its line) that says
//! what to train, on what, and how to evaluate it. Without `[members]` it trains one reward model
//! ([`crate::single`]); with `[members]` it runs WARM ([`crate::warm`]). Every setting is checked
//! by [`read_recipe`], every path by [`Recipe::check_paths`], before any training starts. Paths are
//! relative to the directory rmtrain runs in (the repository root in the README's commands).

use crate::settings::parse_toml_strict;
use crate::{config_error, Result};
use rmtrain_data::{Pair, VaderOptions};
use rmtrain_merge::Combine;
use rmtrain_train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    /// Run folder.
    pub out: PathBuf,
    /// cpu | wgpu | tch | cuda | cuda:N (the binary maps it to a Burn device); single and WARM
    /// recipes also take a comma-separated list, training each model data-parallel over the
    /// devices (replica k on device k mod n; `train.replicas` ≥ the number of devices).
    #[serde(default = "default_device")]
    pub device: String,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainConfig,
    /// WARM: train several members from one shared init and average them.
    #[serde(default)]
    pub members: Option<MembersSection>,
    #[serde(default)]
    pub merge: Option<MergeSection>,
    /// Secrets of RLHF II: preference strength by M voter reward models.
    #[serde(default)]
    pub strength: Option<StrengthSection>,
    /// MetaRM's meta set, built from the unlabeled texts of a pair file.
    #[serde(default)]
    pub meta: Option<MetaSection>,
    /// Arms trained on the same data, each with its own settings, over several seeds.
    #[serde(default)]
    pub ablation: Option<AblationSection>,
    /// The init the voters and arms start from (LP-FT), for strength/ablation recipes.
    #[serde(default)]
    pub init: Option<InitSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSection {
    /// Steps of one shared linear probe (head only, backbone frozen) from the backbone with a new
    /// head seeded by train.seed; every voter and arm starts from it (LP-FT, as WARM's members).
    pub linear_probe_steps: u64,
    #[serde(default = "default_probe_lr")]
    pub linear_probe_lr: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrengthSection {
    /// M: voter reward models trained with [train] on the train pairs, voter k with seed and data
    /// seed `first_seed + k` (the paper: 10 models, "training order randomized").
    pub voters: usize,
    #[serde(default = "default_first_seed")]
    pub first_seed: u64,
}

fn default_first_seed() -> u64 {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaSection {
    /// Pair file whose distinct texts (labels ignored) are grouped.
    pub from: PathBuf,
    /// Where the meta set is written (an arm points `metarm.meta_data` at it).
    pub out: PathBuf,
    /// Responses per group (the paper: 5 samples per prompt).
    #[serde(default = "default_meta_k")]
    pub k: usize,
    /// Keep at most this many groups.
    #[serde(default)]
    pub groups: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

fn default_meta_k() -> usize {
    5
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationSection {
    /// Every arm is trained once per seed (seed and data seed).
    pub seeds: Vec<u64>,
    pub arms: Vec<ArmSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSection {
    pub name: String,
    /// `KEY=VALUE` settings over [train], as `rmtrain train --set` takes them.
    #[serde(default)]
    pub set: Vec<String>,
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// HF folder: a backbone (e.g. a BertModel) or a reward model to continue from.
    pub backbone: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: PathBuf,
    /// Named eval sets (`name = "path"`), evaluated in this order; a WARM recipe's first is its
    /// in-domain set.
    #[serde(default)]
    pub eval: toml::Table,
    /// When present, VADER pairs are built first (skipped when `out_dir` already holds them with
    /// the same options).
    pub vader: Option<VaderOptions>,
    /// Label-noise harness: flip this share of the train pairs (chosen <-> rejected), seeded, on
    /// top of the labels' own source.
    #[serde(default)]
    pub flip_fraction: f64,
    #[serde(default)]
    pub flip_seed: u64,
    /// WARM recipes: repeat the whole run at each of these flip shares and plot accuracy
    /// against noise (e.g. [0.0, 0.1, 0.25, 0.4]).
    #[serde(default)]
    pub noise_sweep: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersSection {
    /// One seed per member (dropout, and data order unless `data_seeds` is given): M = its length.
    pub seeds: Vec<u64>,
    /// Data-order seeds per member; empty = each member's seed.
    #[serde(default)]
    pub data_seeds: Vec<u64>,
    /// Learning rate per member; empty = train.lr for all.
    #[serde(default)]
    pub lr: Vec<f64>,
    /// Dropout per member; empty = the model config's.
    #[serde(default)]
    pub dropout: Vec<f64>,
    /// Steps of the shared linear probe (head only, backbone frozen) every member starts from;
    /// 0 = no probe: members still share one new head, seeded by train.seed.
    #[serde(default)]
    pub shared_linear_probe_steps: u64,
    /// The probe's learning rate (constant): the head alone tolerates a large one.
    #[serde(default = "default_probe_lr")]
    pub linear_probe_lr: f64,
}

fn default_probe_lr() -> f64 {
    1e-3
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSection {
    /// Member weights for the average (normalised); None = uniform (WARM's default).
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Prediction ensembles to compare: "mean", "worst", "uncertainty[:λ]".
    #[serde(default = "default_ensembles")]
    pub ensembles: Vec<String>,
    /// Refuse to average members without a shared init.
    #[serde(default)]
    pub strict: bool,
    /// Mode-connectivity curve between two members.
    #[serde(default)]
    pub interpolate: Option<InterpolateSection>,
}

fn default_ensembles() -> Vec<String> {
    vec!["mean".into(), "worst".into(), "uncertainty".into()]
}

impl Default for MergeSection {
    fn default() -> Self {
        Self { weights: None, ensembles: default_ensembles(), strict: false, interpolate: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpolateSection {
    #[serde(default = "default_pair")]
    pub members: [usize; 2],
    /// Points on the curve, ends included.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Eval set to trace it on (default: the first).
    #[serde(default)]
    pub set: Option<String>,
    #[serde(default = "default_curve_pairs")]
    pub max_pairs: usize,
}

fn default_pair() -> [usize; 2] {
    [0, 1]
}
fn default_steps() -> usize {
    5
}
fn default_curve_pairs() -> usize {
    500
}

/// Reads a recipe strictly and checks every setting (not yet the paths: VADER pair files may
/// still have to be built); errors read `FILE:LINE: message` or `FILE: key: message`.
pub fn read_recipe(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(format!("{}: cannot read recipe: {e}", path.display())))?;
    let recipe: Recipe = parse_toml_strict(&text, &path.display().to_string()).map_err(config_error)?;
    recipe.validate().map_err(|m| config_error(format!("{}: {m}", path.display())))?;
    Ok(recipe)
}

impl Recipe {
    /// Eval sets as (name, path), in the recipe's order.
    pub fn eval_paths(&self) -> Vec<(String, PathBuf)> {
        self.data.eval.iter().map(|(n, v)| (n.clone(), PathBuf::from(v.as_str().expect("checked in validate")))).collect()
    }

    pub fn merge(&self) -> MergeSection {
        self.merge.clone().unwrap_or_default()
    }

    /// Every setting that can be checked without touching the disk.
    fn validate(&self) -> std::result::Result<(), String> {
        self.train.validate()?;
        for k in std::iter::once(&self.data.flip_fraction).chain(&self.data.noise_sweep) {
            if !(0.0..=1.0).contains(k) {
                return Err(format!("data.flip_fraction / data.noise_sweep values must be in [0, 1], got {k}"));
            }
        }
        for (name, v) in &self.data.eval {
            if !v.is_str() {
                return Err(format!("data.eval.{name}: expected a path string"));
            }
        }
        if let Some(s) = &self.strength
            && s.voters < 2
        {
            return Err(format!("strength.voters: preference strength needs at least 2 voters (the paper uses 10), got {}", s.voters));
        }
        if let Some(m) = &self.meta
            && m.k < 2
        {
            return Err(format!("meta.k must be at least 2, got {}", m.k));
        }
        let secrets = self.strength.is_some() || self.ablation.is_some() || self.meta.is_some() || self.init.is_some();
        if secrets && self.members.is_some() {
            return Err("[strength], [meta], [ablation] and [init] belong to an ablation recipe; [members] to a WARM recipe: use one kind".into());
        }
        if let Some(i) = &self.init
            && !(i.linear_probe_lr > 0.0 && i.linear_probe_lr.is_finite())
        {
            return Err(format!("init.linear_probe_lr must be positive, got {}", i.linear_probe_lr));
        }
        if let Some(a) = &self.ablation {
            if a.seeds.is_empty() || a.arms.is_empty() {
                return Err("ablation: give at least one seed and one arm".into());
            }
            if self.data.eval.is_empty() {
                return Err("data.eval: an ablation needs at least one eval set".into());
            }
            for (i, arm) in a.arms.iter().enumerate() {
                let folder = crate::secrets::arm_folder(&arm.name);
                if folder.is_empty() || a.arms[..i].iter().any(|b| crate::secrets::arm_folder(&b.name) == folder) {
                    return Err(format!(
                        "ablation.arms[{i}].name: {:?} needs a letter or digit, and a folder name (arms/{folder}) no other arm has",
                        arm.name
                    ));
                }
                if arm.set.iter().any(|s| matches!(s.split_once('=').map(|(k, _)| k.trim()), Some("seed" | "data_seed"))) {
                    return Err(format!("ablation arm {:?}: seed and data_seed come from ablation.seeds, not from an arm's set", arm.name));
                }
                crate::settings::apply_sets(&self.train, &arm.set).map_err(|e| format!("ablation arm {:?}: {e}", arm.name))?;
            }
        }
        let Some(members) = &self.members else {
            if !self.data.noise_sweep.is_empty() {
                return Err("data.noise_sweep needs a [members] section (a WARM recipe)".into());
            }
            if self.merge.is_some() {
                return Err("[merge] needs a [members] section (a WARM recipe)".into());
            }
            return Ok(());
        };
        let m = members.seeds.len();
        if m < 2 {
            return Err(format!("members.seeds: WARM needs at least 2 members, got {m}"));
        }
        for (name, list) in [("data_seeds", members.data_seeds.len()), ("lr", members.lr.len()), ("dropout", members.dropout.len())] {
            if list != 0 && list != m {
                return Err(format!("members.{name} has {list} entries, members.seeds has {m}: give one per member or none"));
            }
        }
        if self.data.eval.is_empty() {
            return Err("data.eval: a WARM recipe needs at least one eval set (the first is the in-domain one)".into());
        }
        for k in 0..m {
            self.member_config(k).validate().map_err(|e| format!("members (member {k}): {e}"))?;
        }
        if !(members.linear_probe_lr > 0.0 && members.linear_probe_lr.is_finite()) {
            return Err(format!("members.linear_probe_lr must be positive, got {}", members.linear_probe_lr));
        }
        let merge = self.merge();
        for e in &merge.ensembles {
            e.parse::<Combine>().map_err(|e| format!("merge.ensembles: {e}"))?;
        }
        if let Some(w) = &merge.weights
            && w.len() != m
        {
            return Err(format!("merge.weights has {} values for {m} members", w.len()));
        }
        if let Some(c) = &merge.interpolate {
            if c.members.iter().any(|&k| k >= m) || c.members[0] == c.members[1] {
                return Err(format!("merge.interpolate.members: {:?} must be two different members of 0..{}", c.members, m - 1));
            }
            if c.steps < 2 {
                return Err(format!("merge.interpolate.steps must be at least 2, got {}", c.steps));
            }
            if c.max_pairs == 0 {
                return Err("merge.interpolate.max_pairs must be at least 1".into());
            }
            if let Some(set) = &c.set
                && !self.data.eval.contains_key(set)
            {
                return Err(format!("merge.interpolate.set: no eval set {set:?} in data.eval"));
            }
        }
        Ok(())
    }

    /// The train settings of WARM member `k`: [train] with the member's seed, data seed, lr and
    /// dropout.
    pub fn member_config(&self, k: usize) -> TrainConfig {
        let s = self.members.as_ref().expect("member_config is asked of WARM recipes");
        let mut cfg = self.train.clone();
        cfg.seed = s.seeds[k];
        cfg.data_seed = s.data_seeds.get(k).copied().or(Some(s.seeds[k]));
        if let Some(lr) = s.lr.get(k) {
            cfg.lr = *lr;
        }
        if let Some(p) = s.dropout.get(k) {
            cfg.dropout = Some(*p);
        }
        cfg
    }

    /// What every runner does first: build the VADER pairs when `[data.vader]` asks for them, then
    /// [`check_paths`](Self::check_paths). Returns the eval sets.
    pub fn prepare_data(&self) -> Result<Vec<(String, Vec<Pair>)>> {
        if let Some(v) = &self.data.vader
            && let Some(summary) = prepare_vader(v)?
        {
            eprintln!("{summary}");
        }
        self.check_paths()
    }

    /// Checks that the backbone folder, the train file and every eval file exist and parse, so a
    /// typo fails before hours of training; returns the eval sets.
    pub fn check_paths(&self) -> Result<Vec<(String, Vec<Pair>)>> {
        let config = self.model.backbone.join("config.json");
        if !config.is_file() {
            return Err(config_error(format!("model.backbone: {}: no config.json (not an HF model folder)", self.model.backbone.display())));
        }
        if !self.data.train.is_file() {
            return Err(config_error(format!("data.train: {}: no such file", self.data.train.display())));
        }
        self.eval_paths()
            .into_iter()
            .map(|(name, path)| {
                if !path.is_file() {
                    return Err(config_error(format!("data.eval.{name}: {}: no such file", path.display())));
                }
                Ok((name, rmtrain_data::read_pairs(&path)?))
            })
            .collect()
    }
}

/// Builds the VADER pair files unless `out_dir/summary.json` shows they were built with these
/// options. Returns the importer's summary when it ran.
pub fn prepare_vader(opts: &VaderOptions) -> Result<Option<rmtrain_data::VaderSummary>> {
    let summary_path = opts.out_dir.join("summary.json");
    let wanted = serde_json::to_value(opts).expect("options serialize");
    if let Ok(text) = std::fs::read_to_string(&summary_path)
        && let Ok(old) = serde_json::from_str::<serde_json::Value>(&text)
        && old.get("options") == Some(&wanted)
    {
        return Ok(None);
    }
    if !opts.raw_dir.is_dir() {
        return Err(config_error(format!("{}: VADER ratings not found; run scripts/fetch-assets.sh first", opts.raw_dir.display())));
    }
    Ok(Some(rmtrain_data::import_vader(opts)?))
}
