//! The verb `dpo`: Direct Preference Optimization of a causal LM on preference pairs (TRL
//! formats); argument parsing and printing, the work is `rmtrain_train::dpo`.

use crate::device::parse_device;
use anyhow::{Context, Result};
use clap::Args;
use rmtrain_data::read_pairs;
use rmtrain_models::CausalLm;
use rmtrain_train::{encode_dpo_pairs, train_dpo, DpoRequest};
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Settings (--set KEY=VALUE, TOML values): beta (0.1), loss (sigmoid | ipo), label_smoothing (0;
conservative DPO), lr (1e-6), epochs (1), batch_size (8 pairs), grad_accum (1), warmup_ratio (0.1),
schedule (linear | cosine | constant), weight_decay (0), max_grad_norm (1; 0 = off), max_length
(512 tokens of prompt + response), max_steps, seed (0), save_every (0 = only the end),
keep_checkpoints (1), log_every (1), adam_beta1/adam_beta2/adam_epsilon.
The reference is --model itself (frozen); its log-probs are computed once before training.
--out gets metrics.jsonl (TRL's names: loss, rewards/chosen, rewards/rejected,
rewards/accuracies, rewards/margins, logps/chosen, logps/rejected), checkpoints/step-N/ and
model/: HF folders (config.json with LlamaForCausalLM, model.safetensors, tokenizer files) that
transformers and `rmtrain generate` load.
Examples:
  rmtrain dpo --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --train pairs.jsonl --chat --out runs/dpo --set beta=0.1 --set lr=5e-6
  rmtrain dpo --model runs/dpo/model --train pairs.jsonl --out runs/dpo-ipo --set loss=ipo --set beta=0.5")]
pub struct DpoArgs {
    /// The reference and starting policy: an HF folder (Llama family) or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Preference pairs (TRL standard, implicit-prompt or conversational; `rmtrain bon --pairs-out`
    /// writes them).
    #[arg(long)]
    pub train: PathBuf,
    /// Run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// A DPO setting KEY=VALUE (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Put string prompts through the chat template as one user message (conversational lines
    /// always use it).
    #[arg(long)]
    pub chat: bool,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub no_progress: bool,
}

pub fn dpo(a: DpoArgs) -> Result<()> {
    let config = rmtrain_pipeline::dpo_config_from_sets(&a.set)?;
    let pairs = read_pairs(&a.train)?;
    let device = parse_device(&a.device)?;
    let tokenizer_source = CausalLm::load(&a.model, &device)?;
    let examples = encode_dpo_pairs(&tokenizer_source, &pairs, a.chat).map_err(|e| e.in_file(&a.train))?;
    drop(tokenizer_source);
    let outcome = train_dpo(DpoRequest {
        init: a.model.clone(),
        examples,
        out: a.out.clone(),
        config,
        device,
        resume: a.resume,
        progress: !a.no_progress,
        train_data_sha256: Some(rmtrain_core::sha256_file(&a.train).with_context(|| a.train.display().to_string())?),
    })?;
    let get = |k: &str| outcome.last.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    eprintln!(
        "dpo: {} steps in {:.1} s; last step: loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.4}{}; model in {}",
        outcome.steps,
        outcome.wall_seconds,
        get("loss"),
        get("rewards/accuracies"),
        get("rewards/margins"),
        if outcome.truncated_pairs > 0 { format!(" ({} pairs cut at max_length)", outcome.truncated_pairs) } else { String::new() },
        outcome.model_dir.display()
    );
    Ok(())
}
