//! `rmtrain`: train reward models for RLHF on Burn. Argument parsing and printing only: the work
//! is done by the library crates (`rmtrain-pipeline` for recipes and evaluation). `main` prints
//! the error chain on one line and returns a non-zero exit code.

mod bench;
mod bon_verb;
mod device;
mod dpo_verb;
mod lm_verbs;
mod merge_verbs;
mod recipe;
mod slurm_verb;
mod strength_verb;
mod verbs;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "rmtrain", version, about = "Reward-model training for RLHF on Burn (Bradley–Terry RMs, WARM, ensembles)")]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Verb {
    /// Build preference-pair files from a data source.
    #[command(subcommand)]
    Data(verbs::DataVerb),
    /// Train one reward model from an HF folder on a JSONL pair file.
    Train(verbs::TrainArgs),
    /// Score texts or pairs from a JSONL file; JSONL with rewards on stdout.
    Score(verbs::ScoreArgs),
    /// Evaluate a reward model on named pair sets: accuracy, ECE, Brier, Spearman vs gold margin.
    Eval(verbs::EvalArgs),
    /// Average checkpoints in weight space (WARM), streaming tensor by tensor.
    Average(merge_verbs::AverageArgs),
    /// Loss and accuracy along the line between two checkpoints (mode connectivity).
    Interpolate(merge_verbs::InterpolateArgs),
    /// Preference strength of each pair: mean and std of the reward gap over several models.
    Strength(strength_verb::StrengthArgs),
    /// Run a recipe (TOML): data preparation, training, evaluation, report.
    Recipe(recipe::RecipeArgs),
    /// Write (and with --submit, submit) a WARM recipe as Slurm jobs: init, a member array, merge.
    ///
    /// Example: rmtrain slurm recipes/warm.toml --partition cpu --cpus 8 --submit
    Slurm(slurm_verb::SlurmArgs),
    /// Teacher-forced log-probs of responses under a causal LM (HF folder or GGUF).
    ///
    /// Example: rmtrain logprobs --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --input pairs.jsonl --chat
    Logprobs(lm_verbs::LogprobsArgs),
    /// Sample N responses per prompt from a causal LM (KV cache, padded batches), with their log-probs.
    ///
    /// Example: rmtrain generate --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --input prompts.jsonl --n 8 --chat --out cands.jsonl
    Generate(lm_verbs::GenerateArgs),
    /// Best-of-N and regularised BoN (RBoN-KL, RBoN-WD) over candidate responses, swept over β and N.
    ///
    /// Example: rmtrain bon --input cands.jsonl --model runs/proxy/model --gold runs/gold/model --n 4,8,16 --out runs/bon
    Bon(bon_verb::BonArgs),
    /// Direct Preference Optimization of a causal LM (sigmoid, conservative or IPO loss) with a frozen reference.
    ///
    /// Example: rmtrain dpo --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --train pairs.jsonl --chat --out runs/dpo
    Dpo(dpo_verb::DpoArgs),
    /// Measure training or scoring throughput on synthetic ids (same protocol as ../shared/bench).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::Data(v) => verbs::data(v),
        Verb::Train(a) => verbs::train(a),
        Verb::Score(a) => verbs::score(a),
        Verb::Eval(a) => verbs::eval(a),
        Verb::Average(a) => merge_verbs::average(a),
        Verb::Interpolate(a) => merge_verbs::interpolate(a),
        Verb::Strength(a) => strength_verb::strength(a),
        Verb::Recipe(a) => recipe::run(a),
        Verb::Slurm(a) => slurm_verb::slurm(a),
        Verb::Logprobs(a) => lm_verbs::logprobs(a),
        Verb::Generate(a) => lm_verbs::generate(a),
        Verb::Bon(a) => bon_verb::bon(a),
        Verb::Dpo(a) => dpo_verb::dpo(a),
        Verb::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("rmtrain: error: {}", chain.join(": ").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
