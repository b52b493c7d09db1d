//! The WARM recipe (Ramé et al. 2024, arXiv 2401.12187): M reward models fine-tuned from one
//! shared initialisation with diverse hyper-parameters (seed, data order, learning rate, dropout),
//! after one shared linear probe of the head (LP-FT), then averaged in weight space and compared
//! with every member and with prediction ensembles on in-domain and shifted eval sets.
//!
//! Run folder: `shared-init/` (the shared new head, linear-probed), `members/member-K/`, `warm/`
//! (the average), `report.md`, `report.json`, `plots/`. A run is reused only when it finished
//! with exactly the recipe's settings, data and init; a member's checkpoint is resumed only when
//! it is a stop of the same run; anything else starts fresh. The run splits into stages
//! ([`WarmStage`]: init, member K, merge) that a scheduler runs as separate jobs (`rmtrain
//! slurm`): member processes may run at once (even on several machines sharing the run folder);
//! the shared init is built under a lock by whichever comes first, and the others wait for it and
//! reuse it.

use crate::evaluate::{evaluate_models, Entry, EvalOptions, Evaluation};
use crate::interpolate::{barriers, curve_ts, interpolation_curve, plot_curve};
use crate::recipe::Recipe;
use crate::report::{write_noise_report, write_warm_report};
use crate::runs::{finished_run, linear_probe, probe_config, reuse_or_train, FinishedRun};
use crate::scoring::load_reward_model;
use crate::train_set::{prepare_train_set, TrainSet};
use crate::{config_error, Result};
use burn::tensor::Device;
use rmtrain_data::Pair;
use rmtrain_eval::PairMetrics;
use rmtrain_merge::{average_checkpoints, AverageOptions, Combine};
use rmtrain_models::ScoreOptions;
use rmtrain_train::trainer::Trainable;
use rmtrain_train::{TrainConfig, TrainRequest};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct WarmOptions<'a> {
    pub device: &'a Device,
    /// More devices each training's replicas spread over (`TrainRequest::replica_devices`).
    pub replica_devices: &'a [Device],
    pub stage: WarmStage,
    pub progress: bool,
}

/// Which part of a WARM run a process does. A scheduler runs `Init` once, then one `Member(k)`
/// per member (in parallel, anywhere that shares the run folder), then `Merge`; the run folder
/// is the only coupling. `All` does the three in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmStage {
    All,
    /// The shared init (linear probe) only.
    Init,
    /// Member k only (building the shared init under its lock first if no process has).
    Member(usize),
    /// The average, evaluation and report, from a finished shared init and finished members;
    /// trains nothing.
    Merge,
}

/// Results of one WARM run, for the report and the noise sweep.
#[derive(Debug, Clone, Serialize)]
pub struct WarmResults {
    pub sets: Vec<String>,
    /// (model label, per-set metrics in `sets` order): the shared init, each member, WARM, then
    /// each ensemble.
    pub models: Vec<(String, Vec<PairMetrics>)>,
    pub flipped_pairs: usize,
    pub seconds: serde_json::Value,
}

impl WarmResults {
    pub fn accuracies(&self, label: &str) -> Option<Vec<f64>> {
        self.models.iter().find(|(l, _)| l == label).map(|(_, m)| m.iter().map(|x| x.accuracy).collect())
    }

    pub fn member_accuracies(&self) -> Vec<Vec<f64>> {
        self.models.iter().filter(|(l, _)| l.starts_with("member-")).map(|(_, m)| m.iter().map(|x| x.accuracy).collect()).collect()
    }

    /// Per set: the best member's accuracy (an oracle choice) and the members' mean.
    pub fn best_and_mean_member(&self) -> (Vec<f64>, Vec<f64>) {
        let members = self.member_accuracies();
        let n = self.sets.len();
        let best = (0..n).map(|s| members.iter().map(|m| m[s]).fold(f64::NEG_INFINITY, f64::max)).collect();
        let mean = (0..n).map(|s| members.iter().map(|m| m[s]).sum::<f64>() / members.len() as f64).collect();
        (best, mean)
    }
}

/// Runs a WARM recipe: one run, or one per `data.noise_sweep` level. Returns the results of
/// each run (none when only one member was asked for).
pub fn run_warm(recipe: &Recipe, opts: &WarmOptions) -> Result<Vec<(f64, WarmResults)>> {
    let members = recipe.members.as_ref().ok_or_else(|| config_error(format!("recipe {}: not a WARM recipe (no [members])", recipe.name)))?;
    if let WarmStage::Member(k) = opts.stage
        && k >= members.seeds.len()
    {
        return Err(config_error(format!("--member {k}: the recipe has members 0..{}", members.seeds.len() - 1)));
    }
    let eval_sets = recipe.prepare_data()?;
    let levels: Vec<(f64, PathBuf)> = if recipe.data.noise_sweep.is_empty() {
        vec![(recipe.data.flip_fraction, recipe.out.clone())]
    } else {
        recipe.data.noise_sweep.iter().map(|&k| (k, recipe.out.join(format!("noise-{k:.3}")))).collect()
    };
    let mut all = Vec::new();
    for (flip, out) in levels {
        if !recipe.data.noise_sweep.is_empty() {
            eprintln!("warm: noise level {:.0}% of train labels flipped -> {}", flip * 100.0, out.display());
        }
        let mut run = WarmRun::new(recipe, out, flip, opts)?;
        if let Some(results) = run.run(&eval_sets, opts.stage)? {
            write_warm_report(recipe, &run.out, &results)?;
            all.push((flip, results));
        }
    }
    if !recipe.data.noise_sweep.is_empty() && !all.is_empty() {
        write_noise_report(recipe, &all)?;
    }
    Ok(all)
}

/// One WARM run into `out` at one label-noise level.
struct WarmRun<'a> {
    recipe: &'a Recipe,
    out: PathBuf,
    set: TrainSet,
    device: &'a Device,
    replica_devices: &'a [Device],
    progress: bool,
    recipe_json: serde_json::Value,
    timings: serde_json::Map<String, serde_json::Value>,
}

impl<'a> WarmRun<'a> {
    fn new(recipe: &'a Recipe, out: PathBuf, flip_fraction: f64, opts: &WarmOptions<'a>) -> Result<Self> {
        let set = prepare_train_set(&recipe.data.train, recipe.train.max_train_pairs, flip_fraction, recipe.data.flip_seed)?;
        Ok(Self {
            recipe,
            out,
            set,
            device: opts.device,
            replica_devices: opts.replica_devices,
            progress: opts.progress,
            recipe_json: serde_json::to_value(recipe).expect("a recipe serializes"),
            timings: Default::default(),
        })
    }

    fn member_dir(&self, k: usize) -> PathBuf {
        self.out.join("members").join(format!("member-{k}"))
    }

    fn time(&mut self, what: &str, since: Instant) {
        self.timings.insert(what.into(), since.elapsed().as_secs_f64().into());
    }

    /// shared init → members → average → evaluation → interpolation, or the part `stage` asks
    /// for. None unless the stage writes the report (All, Merge).
    fn run(&mut self, eval_sets: &[(String, Vec<Pair>)], stage: WarmStage) -> Result<Option<WarmResults>> {
        let started = Instant::now();
        let m = self.recipe.members.as_ref().expect("a WARM recipe").seeds.len();
        let init = if stage == WarmStage::Merge { self.finished_init()? } else { self.shared_init()? };
        self.time("linear_probe", started);
        match stage {
            WarmStage::Init => return Ok(None),
            WarmStage::Member(k) => {
                self.train_member(k, &init)?;
                return Ok(None);
            }
            WarmStage::All => {
                for k in 0..m {
                    self.train_member(k, &init)?;
                }
            }
            WarmStage::Merge => {
                for k in 0..m {
                    self.check_member_finished(k, &init)?;
                }
            }
        }
        let members: Vec<PathBuf> = (0..m).map(|k| self.member_dir(k).join("model")).collect();
        let warm = self.average(&members)?;
        let evaluation = self.evaluate(&init, &members, &warm, eval_sets)?;
        self.interpolate(&members, eval_sets)?;
        self.time("total", started);
        // Reliability of WARM on the first (in-domain) set, top-label: confidence max(p, 1 − p)
        // of p = σ(r_c − r_r) against how often the preferred side is the gold one.
        let warm_row = evaluation.rows.iter().position(|(l, _)| l == "WARM").expect("WARM is evaluated");
        let bins = rmtrain_eval::ece_toplabel(&evaluation.gaps[warm_row][0]).bins;
        rmtrain_eval::reliability_diagram(&self.out.join("plots/reliability_warm.png"), &format!("WARM on {}, top-label", evaluation.sets[0]), &bins)?;
        Ok(Some(WarmResults {
            sets: evaluation.sets,
            models: evaluation.rows,
            flipped_pairs: self.set.flipped,
            seconds: serde_json::Value::Object(self.timings.clone()),
        }))
    }

    fn request(&self, config: TrainConfig, init: PathBuf, run: PathBuf, trainable: Trainable) -> TrainRequest {
        TrainRequest {
            init,
            train_pairs: self.set.pairs.clone(),
            train_data_sha256: Some(self.set.data_sha256.clone()),
            evals: Vec::new(),
            config,
            out: run,
            resume: false,
            recipe: self.recipe_json.clone(),
            device: self.device.clone(),
            replica_devices: self.replica_devices.to_vec(),
            progress: self.progress,
            trainable,
        }
    }

    /// 1. The init every member starts from: the backbone with one seeded new head,
    ///    linear-probed on the frozen backbone for `shared_linear_probe_steps` (LP-FT; 0 = none).
    ///    Built under a lock, reused when it matches.
    fn shared_init(&self) -> Result<PathBuf> {
        let members = self.recipe.members.as_ref().expect("a WARM recipe");
        let probe = probe_config(&self.recipe.train, members.shared_linear_probe_steps, members.linear_probe_lr);
        linear_probe(self.request(probe, self.recipe.model.backbone.clone(), self.out.join("shared-init"), Trainable::HeadOnly), "warm")
    }

    /// The merge stage's shared init: it must be finished with this recipe's settings (the init
    /// stage's job), since rebuilding it would invalidate every member.
    fn finished_init(&self) -> Result<PathBuf> {
        let members = self.recipe.members.as_ref().expect("a WARM recipe");
        let probe = probe_config(&self.recipe.train, members.shared_linear_probe_steps, members.linear_probe_lr);
        let init = self.out.join("shared-init").join("model");
        match finished_run(&init, &probe, &self.set.data_sha256, &self.recipe.model.backbone)? {
            FinishedRun::Matches => Ok(init),
            FinishedRun::Differs => Err(config_error(format!("stage merge: {} was trained with other settings, data or init than this recipe's: run the init stage again", init.display()))),
            FinishedRun::Missing => Err(config_error(format!("stage merge: no finished shared init in {}: run the init stage first", init.display()))),
        }
    }

    /// The merge stage's check that member `k` finished with this recipe's settings, data and
    /// shared init.
    fn check_member_finished(&self, k: usize, init: &Path) -> Result<()> {
        let model = self.member_dir(k).join("model");
        match finished_run(&model, &self.recipe.member_config(k), &self.set.data_sha256, init)? {
            FinishedRun::Matches => Ok(()),
            FinishedRun::Differs => Err(config_error(format!("stage merge: member {k} ({}) was trained with other settings, data or init: run its member stage again", model.display()))),
            FinishedRun::Missing => Err(config_error(format!("stage merge: member {k} has not finished ({} is missing): run its member stage first", model.display()))),
        }
    }

    /// 2. Member `k` from the shared init: reused when it finished with these settings, resumed
    ///    when its newest checkpoint is a stop of this run, else trained fresh.
    fn train_member(&mut self, k: usize, init: &Path) -> Result<()> {
        let cfg = self.recipe.member_config(k);
        let started = Instant::now();
        let detail = format!(
            ": seed {}, data seed {}, lr {}, dropout {}",
            cfg.seed,
            cfg.data_seed.unwrap_or(cfg.seed),
            cfg.lr,
            cfg.dropout.map_or("as the model config".to_string(), |p| p.to_string())
        );
        let req = self.request(cfg, init.to_path_buf(), self.member_dir(k), Trainable::All);
        if reuse_or_train(req, "warm", &format!("member {k}"), &detail, &self.recipe.data.train)? {
            self.time(&format!("member_{k}"), started);
        }
        Ok(())
    }

    /// 3. WARM: the weight average of the members.
    fn average(&mut self, members: &[PathBuf]) -> Result<PathBuf> {
        let started = Instant::now();
        let merge = self.recipe.merge();
        let warm = self.out.join("warm");
        let report = average_checkpoints(members, &warm, &AverageOptions { weights: merge.weights.clone(), strict: merge.strict })?;
        for w in &report.warnings {
            eprintln!("rmtrain: warning: {w}");
        }
        // The average's own reward statistics on the members' reference sample (the first 512
        // train pairs), replacing the weighted mean of the members' the merge carries over, so
        // WARM can itself join a z-normalised ensemble.
        let rm = load_reward_model(&warm, Some(self.recipe.train.max_length), self.device)?;
        let (mean, std) = rmtrain_train::trainer::reward_stats(&rm, &self.set.pairs, &ScoreOptions::default())?;
        let mut manifest = rmtrain_core::Manifest::read(&warm)?;
        manifest.reward_mean = Some(mean);
        manifest.reward_std = Some(std);
        if let Some(r) = manifest.recipe.as_object_mut() {
            r.insert("reward_stats".into(), "the average's own, on the members' reference sample (the first 512 train pairs)".into());
        }
        manifest.write(&warm)?;
        self.time("average", started);
        Ok(warm)
    }

    /// 4. The shared init, every member, WARM and each ensemble of the members on every eval set;
    ///    each distinct text scored once per model.
    fn evaluate(&mut self, init: &Path, members: &[PathBuf], warm: &Path, sets: &[(String, Vec<Pair>)]) -> Result<Evaluation> {
        let started = Instant::now();
        let probe_steps = self.recipe.members.as_ref().expect("a WARM recipe").shared_linear_probe_steps;
        let mut models = vec![init.to_path_buf()];
        models.extend(members.iter().cloned());
        models.push(warm.to_path_buf());
        let m = members.len();
        let mut entries = vec![Entry::Model {
            label: if probe_steps > 0 { "shared init (LP)".into() } else { "shared init (new head)".into() },
            model: 0,
        }];
        entries.extend((0..m).map(|k| Entry::Model { label: format!("member-{k}"), model: k + 1 }));
        entries.push(Entry::Model { label: "WARM".into(), model: m + 1 });
        for e in &self.recipe.merge().ensembles {
            let rule: Combine = e.parse().map_err(|e| config_error(format!("merge.ensembles: {e}")))?;
            entries.push(Entry::Ensemble { label: format!("ENS-{rule}"), members: (1..=m).collect(), rule, normalize: true });
        }
        eprintln!("warm: scoring the eval texts with {m} members, WARM and the shared init");
        let opts = EvalOptions { max_length: Some(self.recipe.train.max_length), device: self.device, seed: self.recipe.train.seed, progress: self.progress };
        let evaluation = evaluate_models(&models, &entries, sets, &opts)?;
        if evaluation.truncated_texts > 0 {
            eprintln!(
                "warm: {} of {} distinct eval texts are longer than max_length = {} tokens and were scored truncated",
                evaluation.truncated_texts, evaluation.distinct_texts, self.recipe.train.max_length
            );
        }
        self.time("evaluation", started);
        Ok(evaluation)
    }

    /// 5. The mode-connectivity curve between two members, when the recipe asks for it.
    fn interpolate(&mut self, members: &[PathBuf], sets: &[(String, Vec<Pair>)]) -> Result<()> {
        let Some(c) = self.recipe.merge().interpolate else { return Ok(()) };
        let started = Instant::now();
        let [a, b] = c.members;
        let set_name = c.set.clone().unwrap_or_else(|| sets[0].0.clone());
        let pairs: Vec<Pair> = sets.iter().find(|(n, _)| *n == set_name).expect("validated").1.iter().take(c.max_pairs).cloned().collect();
        let curve = interpolation_curve(&members[a], &members[b], &curve_ts(c.steps, 0.0, 1.0), &[(set_name.clone(), pairs)], Some(self.recipe.train.max_length), self.device)?;
        plot_curve(&self.out.join("plots/interpolation.png"), &format!("member-{a} to member-{b} on {set_name}"), &curve)?;
        let json = serde_json::json!({"members": [a, b], "points": curve, "barrier": barriers(&curve)});
        rmtrain_core::write_json_atomic(&self.out.join("interpolation.json"), &json)?;
        self.time("interpolation", started);
        Ok(())
    }
}
