//! `rmtrain recipe FILE.toml`: runs a recipe through the pipeline library and prints its report.

use crate::device::parse_device;
use anyhow::{Context, Result};
use clap::Args;
use rmtrain_pipeline::secrets::{run_secrets, SecretsOptions};
use rmtrain_pipeline::single::{run_single, RunOptions};
use rmtrain_pipeline::warm::{run_warm, WarmOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain recipe recipes/single.toml
  rmtrain recipe recipes/single_rater.toml --resume   # continue an interrupted run
  rmtrain recipe recipes/warm.toml --member 2          # WARM: train member 2 only (e.g. one per machine)")]
pub struct RecipeArgs {
    pub file: PathBuf,
    /// Continue the recipe's run from its newest checkpoint (WARM members resume by themselves
    /// when their checkpoint is a stop of the same run).
    #[arg(long)]
    pub resume: bool,
    /// WARM recipes: train only member K (then average with a run without --member).
    #[arg(long)]
    pub member: Option<usize>,
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(a: RecipeArgs) -> Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("{}: cannot read recipe", a.file.display()))?;
    let (is_dera, is_rbon) = (rmtrain_pipeline::dera::is_dera_recipe(&text), rmtrain_pipeline::rbon::is_rbon_recipe(&text));
    if is_dera || is_rbon {
        if a.member.is_some() || a.resume {
            anyhow::bail!("{}: --member and --resume are for WARM and single recipes (RBoN and DeRa recipes reuse their stages by themselves)", a.file.display());
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
    let device = parse_device(&recipe.device).with_context(|| format!("{}: device", a.file.display()))?;
    if recipe.ablation.is_some() || recipe.strength.is_some() || recipe.meta.is_some() || recipe.init.is_some() {
        if a.member.is_some() || a.resume {
            anyhow::bail!("{}: --member and --resume are for WARM and single recipes (an ablation reuses and resumes its runs by itself)", a.file.display());
        }
        run_secrets(&recipe, &SecretsOptions { device: &device, progress: !a.no_progress })?;
        println!("{}", std::fs::read_to_string(recipe.out.join("report.md")).with_context(|| format!("{}: report", recipe.out.display()))?);
        eprintln!("recipe {}: done in {:.0} s; report in {}", recipe.name, started.elapsed().as_secs_f64(), recipe.out.join("report.md").display());
        return Ok(());
    }
    if recipe.members.is_some() {
        let all = run_warm(&recipe, &WarmOptions { device: &device, only_member: a.member, progress: !a.no_progress })?;
        if !all.is_empty() {
            println!("{}", std::fs::read_to_string(recipe.out.join("report.md")).with_context(|| format!("{}: report", recipe.out.display()))?);
        }
        eprintln!("recipe {}: done in {:.0} s; report in {}", recipe.name, started.elapsed().as_secs_f64(), recipe.out.join("report.md").display());
        return Ok(());
    }
    if a.member.is_some() {
        anyhow::bail!("{}: --member needs a recipe with a [members] section", a.file.display());
    }
    let report = run_single(&recipe, &RunOptions { device: &device, resume: a.resume, progress: !a.no_progress })?;
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
