//! `rmtrain slurm FILE.toml`: writes a WARM recipe's Slurm jobs (init, a member array, merge) and
//! a `submit.sh` that chains them; `--submit` runs it. See docs/scale.md.

use anyhow::{bail, Context, Result};
use clap::Args;
use rmtrain_pipeline::slurm::{slurm_scripts, SlurmSpec};
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(after_help = "Examples:
  rmtrain slurm recipes/warm.toml --partition cpu --cpus 8 --time 04:00:00
  rmtrain slurm recipes/warm.toml --submit --sbatch=--account=rlhf --max-parallel 4")]
pub struct SlurmArgs {
    /// A WARM recipe (one with a [members] section).
    pub file: PathBuf,
    /// Where the scripts go (default: the recipe's out folder + /slurm); job logs go to its logs/.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub partition: Option<String>,
    /// CPUs per job: the threads one training process uses.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Wall-time limit per job (Slurm's --time, e.g. 04:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Memory per job (Slurm's --mem, e.g. 16G).
    #[arg(long)]
    pub mem: Option<String>,
    /// GPUs per job, for recipes with a GPU device.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// At most this many member jobs at once.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// One more #SBATCH option, verbatim; repeat it (e.g. --sbatch=--account=rlhf).
    #[arg(long = "sbatch", allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// Submit the jobs now (sbatch, chained with --dependency=afterok) and print their ids.
    #[arg(long)]
    pub submit: bool,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().context("the current folder")?.join(p) })
}

pub fn slurm(a: SlurmArgs) -> Result<()> {
    let recipe = rmtrain_pipeline::read_recipe(&a.file)?;
    let Some(members) = recipe.members.as_ref() else {
        bail!("{}: not a WARM recipe (no [members] section): only WARM members run as a job array", a.file.display());
    };
    recipe.check_paths()?;
    if a.cpus == 0 || a.max_parallel == Some(0) {
        bail!("--cpus and --max-parallel take a positive number");
    }
    let dir = absolute(&a.dir.clone().unwrap_or_else(|| recipe.out.join("slurm")))?;
    let spec = SlurmSpec {
        name: recipe.name.clone(),
        members: members.seeds.len(),
        binary: std::env::current_exe().context("the rmtrain binary's path")?,
        recipe: absolute(&a.file)?.canonicalize().with_context(|| a.file.display().to_string())?,
        workdir: std::env::current_dir().context("the current folder")?,
        logs: dir.join("logs"),
        partition: a.partition,
        cpus_per_task: a.cpus,
        time: a.time,
        mem: a.mem,
        gpus_per_task: a.gpus,
        max_parallel: a.max_parallel,
        extra: a.extra,
    };
    for (name, text) in slurm_scripts(&spec) {
        let path = dir.join(&name);
        rmtrain_core::write_atomic(&path, text.as_bytes())?;
        if name.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).with_context(|| path.display().to_string())?;
        }
    }
    let submit = dir.join("submit.sh");
    eprintln!("slurm: {} members of {} -> {}/{{init,members,merge}}.sbatch and submit.sh", spec.members, recipe.name, dir.display());
    if !a.submit {
        println!("{}", submit.display());
        return Ok(());
    }
    let out = std::process::Command::new("bash").arg(&submit).output().with_context(|| format!("running {}", submit.display()))?;
    if !out.status.success() {
        bail!("{} failed ({}): {}", submit.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let ids = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let [init, array, merge] = ids.split_whitespace().collect::<Vec<_>>()[..] else {
        bail!("{}: expected three job ids, got {ids:?}", submit.display());
    };
    println!("{{\"init\": \"{init}\", \"members\": \"{array}\", \"merge\": \"{merge}\"}}");
    eprintln!("slurm: submitted init {init}, members {array} (array 0-{}), merge {merge}; logs in {}", spec.members - 1, spec.logs.display());
    Ok(())
}
