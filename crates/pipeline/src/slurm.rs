//! A WARM recipe as Slurm batch jobs: the shared init as one job, the members as a job array
//! (`--array=0-(M-1)`, `SLURM_ARRAY_TASK_ID` → member), the merge (average, evaluation, report)
//! after both, chained with `--dependency=afterok`. The run folder on a shared filesystem is the
//! only coupling between the jobs; each is `rmtrain recipe FILE --stage …`
//! ([`crate::warm::WarmStage`]). Member jobs are `--requeue`able: a member that dies (node failure,
//! preemption, `scontrol requeue`) is run again by Slurm and resumes from its newest checkpoint.

use std::fmt::Write as _;
use std::path::PathBuf;

/// What the scripts run and ask Slurm for.
#[derive(Debug, Clone)]
pub struct SlurmSpec {
    /// The recipe's name (job names) and member count (the array).
    pub name: String,
    pub members: usize,
    /// Absolute paths: the rmtrain binary, the recipe, the folder the recipe's relative paths
    /// start from (`--chdir`), and where the job logs go.
    pub binary: PathBuf,
    pub recipe: PathBuf,
    pub workdir: PathBuf,
    pub logs: PathBuf,
    pub partition: Option<String>,
    pub cpus_per_task: u32,
    pub time: Option<String>,
    pub mem: Option<String>,
    pub gpus_per_task: Option<u32>,
    /// How many member jobs may run at once (the array's `%` limit).
    pub max_parallel: Option<usize>,
    /// More `#SBATCH` options, verbatim (e.g. `--account=rlhf`).
    pub extra: Vec<String>,
}

/// The files of a Slurm submission: (file name, contents), the `submit.sh` last.
pub fn slurm_scripts(spec: &SlurmSpec) -> Vec<(String, String)> {
    let array = match spec.max_parallel {
        Some(p) => format!("0-{}%{p}", spec.members - 1),
        None => format!("0-{}", spec.members - 1),
    };
    let jobs = [
        ("init", "init", vec![], "--stage init".to_string()),
        ("members", "member-%a", vec![format!("--array={array}"), "--requeue".into()], "--stage member --member \"$SLURM_ARRAY_TASK_ID\"".to_string()),
        ("merge", "merge", vec![], "--stage merge".to_string()),
    ];
    let mut files: Vec<(String, String)> = jobs.iter().map(|(job, log, options, stage)| (format!("{job}.sbatch"), batch_script(spec, job, log, options, stage))).collect();
    files.push(("submit.sh".into(), submit_script(spec)));
    files
}

fn batch_script(spec: &SlurmSpec, job: &str, log: &str, options: &[String], stage: &str) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut option = |o: String| writeln!(s, "#SBATCH {o}").expect("a String takes writes");
    option(format!("--job-name=rmtrain-{}-{job}", spec.name));
    option(format!("--chdir={}", spec.workdir.display()));
    option(format!("--output={}/{log}-%j.out", spec.logs.display()));
    option("--ntasks=1".into());
    option(format!("--cpus-per-task={}", spec.cpus_per_task));
    if let Some(p) = &spec.partition {
        option(format!("--partition={p}"));
    }
    if let Some(t) = &spec.time {
        option(format!("--time={t}"));
    }
    if let Some(m) = &spec.mem {
        option(format!("--mem={m}"));
    }
    if let Some(g) = spec.gpus_per_task {
        option(format!("--gpus-per-task={g}"));
    }
    for o in options.iter().chain(&spec.extra) {
        option(o.clone());
    }
    writeln!(s, "set -euo pipefail").expect("a String takes writes");
    writeln!(s, "exec {} recipe {} {stage} --no-progress", quote(&spec.binary.display().to_string()), quote(&spec.recipe.display().to_string())).expect("a String takes writes");
    s
}

fn submit_script(spec: &SlurmSpec) -> String {
    format!(
        r#"#!/bin/bash
# Submits the WARM recipe {name} as three chained Slurm jobs; prints "init members merge" job ids.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p {logs}
init=$(sbatch --parsable "$here/init.sbatch")
members=$(sbatch --parsable --dependency=afterok:"$init" "$here/members.sbatch")
merge=$(sbatch --parsable --dependency=afterok:"$members" "$here/merge.sbatch")
echo "$init $members $merge"
"#,
        name = spec.name,
        logs = quote(&spec.logs.display().to_string()),
    )
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SlurmSpec {
        SlurmSpec {
            name: "tiny-warm".into(),
            members: 3,
            binary: "/opt/rmtrain/bin/rmtrain".into(),
            recipe: "/work/my recipes/warm's.toml".into(),
            workdir: "/work".into(),
            logs: "/work/runs/tiny-warm/slurm/logs".into(),
            partition: Some("cpu".into()),
            cpus_per_task: 4,
            time: Some("02:00:00".into()),
            mem: None,
            gpus_per_task: None,
            max_parallel: Some(2),
            extra: vec!["--account=rlhf".into()],
        }
    }

    #[test]
    fn the_jobs_are_init_an_array_of_members_and_merge() {
        let files = slurm_scripts(&spec());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["init.sbatch", "members.sbatch", "merge.sbatch", "submit.sh"]);
        let members = &files[1].1;
        for line in ["#SBATCH --array=0-2%2", "#SBATCH --requeue", "#SBATCH --cpus-per-task=4", "#SBATCH --partition=cpu", "#SBATCH --time=02:00:00", "#SBATCH --account=rlhf", "#SBATCH --chdir=/work"] {
            assert!(members.lines().any(|l| l == line), "{line} missing from\n{members}");
        }
        assert!(members.contains("--output=/work/runs/tiny-warm/slurm/logs/member-%a-%j.out"));
        assert!(members.ends_with("exec /opt/rmtrain/bin/rmtrain recipe '/work/my recipes/warm'\\''s.toml' --stage member --member \"$SLURM_ARRAY_TASK_ID\" --no-progress\n"), "{members}");
        assert!(files[0].1.contains("--stage init --no-progress") && !files[0].1.contains("--array"));
        assert!(files[2].1.contains("--stage merge --no-progress") && !files[2].1.contains("--requeue"));
        assert!(!files.iter().any(|(_, s)| s.contains("#SBATCH --mem") || s.contains("#SBATCH --gpus")));
        let submit = &files[3].1;
        assert!(submit.contains(r#"--dependency=afterok:"$init""#) && submit.contains(r#"--dependency=afterok:"$members""#));
    }

    #[test]
    fn one_member_is_an_array_of_one() {
        let s = SlurmSpec { members: 1, max_parallel: None, ..spec() };
        assert!(slurm_scripts(&s)[1].1.contains("#SBATCH --array=0-0\n"));
    }
}
