//! `rmtrain recipe FILE.toml`: runs a recipe through the pipeline library and prints its report.

use crate::device::{parse_device, parse_devices};
use anyhow::{Context, Result};
use clap::Args;
use rmtrain_pipeline::secrets::{run_secrets, SecretsOptions};
use rmtrain_pipeline::single::{run_single, RunOptions};
use rmtrain_pipeline::warm::{run_warm, WarmOptions, WarmStage};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain recipe recipes/single.toml
  rmtrain recipe recipes/single_rater.toml --resume   # continue an interrupted run
  rmtrain recipe recipes/warm.toml --member 2          # WARM: train member 2 only (e.g. one per machine)
  rmtrain recipe recipes/warm.toml --stage init        # WARM as scheduler jobs: init, members, merge
  rmtrain recipe recipes/warm.toml --stage member      #   member K from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX
  rmtrain recipe recipes/warm.toml --stage merge       #   average, evaluate, report (trains nothing)")]
pub struct RecipeArgs {
    pub file: PathBuf,
    /// Continue the recipe's run from its newest checkpoint (WARM members resume by themselves
    /// when their checkpoint is a stop of the same run).
    #[arg(long)]
    pub resume: bool,
    /// WARM recipes: train only member K (then average with a run without --member, or with
    /// --stage merge).
    #[arg(long)]
    pub member: Option<usize>,
    /// WARM recipes: run one stage, as a scheduler job (`rmtrain slurm` writes the jobs). The
    /// member stage takes K from --member, else from SLURM_ARRAY_TASK_ID (a Slurm job array),
    /// else from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    #[arg(long, value_enum)]
    pub stage: Option<Stage>,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    All,
    Init,
    Member,
    Merge,
}

/// The environment variables a scheduler sets to a job array task's index, in the order read.
const INDEX_VARIABLES: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// The WARM stage that `--stage` and `--member` ask for.
fn warm_stage(stage: Option<Stage>, member: Option<usize>, index_from: impl Fn(&str) -> Option<String>) -> Result<WarmStage> {
    Ok(match (stage, member) {
        (None | Some(Stage::All), None) => WarmStage::All,
        (None | Some(Stage::Member), Some(k)) => WarmStage::Member(k),
        (Some(Stage::Member), None) => {
            let Some((var, value)) = INDEX_VARIABLES.iter().find_map(|v| index_from(v).map(|x| (*v, x))) else {
                anyhow::bail!("--stage member: give --member K, or run it as a job array task ({} is unset)", INDEX_VARIABLES.join(" and "));
            };
            WarmStage::Member(value.trim().parse().with_context(|| format!("--stage member: {var}={value:?} is not a member index"))?)
        }
        (Some(Stage::Init), None) => WarmStage::Init,
        (Some(Stage::Merge), None) => WarmStage::Merge,
        (Some(s), Some(k)) => anyhow::bail!("--member {k} goes with --stage member, not --stage {}", format!("{s:?}").to_lowercase()),
    })
}

pub fn run(a: RecipeArgs) -> Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("{}: cannot read recipe", a.file.display()))?;
    let (is_dera, is_rbon) = (rmtrain_pipeline::dera::is_dera_recipe(&text), rmtrain_pipeline::rbon::is_rbon_recipe(&text));
    if is_dera || is_rbon {
        if a.member.is_some() || a.resume || a.stage.is_some() {
            anyhow::bail!("{}: --member, --stage and --resume are for WARM and single recipes (RBoN and DeRa recipes reuse their stages by themselves)", a.file.display());
        }
        let (name, report, seconds) = if is_dera {
            let r = rmtrain_pipeline::dera::read_dera_recipe(&a.file)?;
            let device = parse_device(&r.device).with_context(|| format!("{}: device", a.file.display()))?;
            let o = rmtrain_pipeline::dera::run_dera(&r, &device, !a.no_progress)?;
            (r.name, o.report, o.wall_seconds)
        } else {
            let r = rmtrain_pipeline::rbon::read_rbon_recipe(&a.file)?;
            let device = parse_device(&r.device).with_context(|| format!("{}: device", a.file.display()))?;
            let o = rmtrain_pipeline::rbon::run_rbon(&r, &device, !a.no_progress)?;
            (r.name, o.report, o.wall_seconds)
        };
        println!("{}", std::fs::read_to_string(&report).with_context(|| format!("{}: report", report.display()))?);
        eprintln!("recipe {name}: done in {seconds:.0} s; report in {}", report.display());
        return Ok(());
    }
    let recipe = rmtrain_pipeline::read_recipe(&a.file)?;
    let mut devices = parse_devices(&recipe.device).with_context(|| format!("{}: device", a.file.display()))?;
    let device = devices.remove(0);
    if recipe.ablation.is_some() || recipe.strength.is_some() || recipe.meta.is_some() || recipe.init.is_some() {
        if !devices.is_empty() {
            anyhow::bail!("{}: device {:?}: a list of devices is for single and WARM recipes", a.file.display(), recipe.device);
        }
        if a.member.is_some() || a.resume || a.stage.is_some() {
            anyhow::bail!("{}: --member, --stage and --resume are for WARM and single recipes (an ablation reuses and resumes its runs by itself)", a.file.display());
        }
        run_secrets(&recipe, &SecretsOptions { device: &device, progress: !a.no_progress })?;
        println!("{}", std::fs::read_to_string(recipe.out.join("report.md")).with_context(|| format!("{}: report", recipe.out.display()))?);
        eprintln!("recipe {}: done in {:.0} s; report in {}", recipe.name, started.elapsed().as_secs_f64(), recipe.out.join("report.md").display());
        return Ok(());
    }
    if recipe.members.is_some() {
        let stage = warm_stage(a.stage, a.member, |v| std::env::var(v).ok()).with_context(|| a.file.display().to_string())?;
        let all = run_warm(&recipe, &WarmOptions { device: &device, replica_devices: &devices, stage, progress: !a.no_progress })?;
        if !all.is_empty() {
            println!("{}", std::fs::read_to_string(recipe.out.join("report.md")).with_context(|| format!("{}: report", recipe.out.display()))?);
        }
        eprintln!("recipe {}: done in {:.0} s; report in {}", recipe.name, started.elapsed().as_secs_f64(), recipe.out.join("report.md").display());
        return Ok(());
    }
    if a.member.is_some() || a.stage.is_some() {
        anyhow::bail!("{}: --member and --stage need a recipe with a [members] section (WARM)", a.file.display());
    }
    let report = run_single(&recipe, &RunOptions { device: &device, replica_devices: &devices, resume: a.resume, progress: !a.no_progress })?;
    println!("{}", std::fs::read_to_string(recipe.out.join("report.md")).with_context(|| format!("{}: report", recipe.out.display()))?);
    eprintln!(
        "recipe {}: done in {:.0} s; model in {}, report in {}",
        recipe.name,
        report.wall_seconds,
        report.outcome.model_dir.display(),
        recipe.out.join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_from_flags_and_scheduler_variables() {
        let none = |_: &str| None;
        assert_eq!(warm_stage(None, None, none).expect("a stage"), WarmStage::All);
        assert_eq!(warm_stage(None, Some(2), none).expect("a stage"), WarmStage::Member(2));
        assert_eq!(warm_stage(Some(Stage::Init), None, none).expect("a stage"), WarmStage::Init);
        assert_eq!(warm_stage(Some(Stage::Merge), None, none).expect("a stage"), WarmStage::Merge);
        assert_eq!(warm_stage(Some(Stage::Member), Some(1), |_| Some("7".into())).expect("a stage"), WarmStage::Member(1), "--member wins");
        let slurm = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "3".to_string());
        assert_eq!(warm_stage(Some(Stage::Member), None, slurm).expect("a stage"), WarmStage::Member(3));
        let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "0\n".to_string());
        assert_eq!(warm_stage(Some(Stage::Member), None, k8s).expect("a stage"), WarmStage::Member(0));
        let e = warm_stage(Some(Stage::Member), None, none).expect_err("refused").to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID") && e.contains("--member K"), "{e}");
        let e = format!("{:#}", warm_stage(Some(Stage::Member), None, |_| Some("x1".into())).expect_err("refused"));
        assert!(e.contains("SLURM_ARRAY_TASK_ID=\"x1\""), "{e}");
        let e = warm_stage(Some(Stage::Merge), Some(1), none).expect_err("refused").to_string();
        assert!(e.contains("--stage member, not --stage merge"), "{e}");
    }
}
