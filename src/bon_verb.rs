//! The verb `bon`: Best-of-N and regularised Best-of-N selection (RBoN-KL, RBoN-WD) over a
//! candidates file, swept over β and N; argument parsing and printing, the work is
//! `rmtrain_pipeline::bon::run_bon`.

use crate::device::parse_device;
use crate::verbs::{at_least, finite};
use anyhow::{bail, Result};
use clap::Args;
use rmtrain_eval::bon::{Rule, Sweep};
use rmtrain_merge::Combine;
use rmtrain_pipeline::bon::{run_bon, BonRequest, EmbeddingSource, PairsSpec, RewardSource, RmInput};
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Input lines: `responses` (N strings), optionally `prompt` (or `messages`), `ref_logprobs`
(N numbers, as `rmtrain generate` writes them; RBoN-KL needs them) and any columns named below.
Rules: bon = argmax r; kl = argmax r + β·log π_ref(y|x); wd = argmax r − β·(1/N)·Σ_j (1 − cos(e_i, e_j))
(j over all N, i included; e = mean-pooled, L2-normalised embeddings of the responses).
For each N, every prompt's candidates are drawn in a seeded random order and the first N taken
(nested subsets); --draws averages over several orders.
--out gets bon.json, bon.md, selections.jsonl (each line with the picks of draw 0) and, with gold
rewards, plots/gold_vs_beta_{kl,wd}.png and plots/gold_vs_n.png.
Examples:
  rmtrain bon --input cands.jsonl --model runs/proxy/model --gold runs/gold/model --n 4,8,16,32 --out runs/bon
  rmtrain bon --input cands.jsonl --reward-column rewards --embedding-column emb --rules bon,wd --beta-wd 0.5 --out r
  rmtrain bon --input cands.jsonl --model m --pairs-out dpo_pairs.jsonl --pair-rule wd --pair-beta 0.5 --out r")]
pub struct BonArgs {
    /// Candidates JSONL (from `rmtrain generate --n N`, or your own).
    #[arg(long)]
    pub input: PathBuf,
    /// Report folder (written whole, replacing an earlier one).
    #[arg(long)]
    pub out: PathBuf,
    /// Proxy reward model folder (repeat for an ensemble; a WARM average is one folder).
    #[arg(long = "model", conflicts_with = "reward_column")]
    pub models: Vec<PathBuf>,
    /// How an ensemble combines its members (z-normalised with each one's rmtrain.json statistics).
    #[arg(long, default_value = "mean")]
    pub combine: Combine,
    /// Combine raw member rewards, without z-normalisation.
    #[arg(long)]
    pub no_normalize: bool,
    /// Proxy rewards from this column (N numbers per line) instead of a model.
    #[arg(long)]
    pub reward_column: Option<String>,
    /// Gold reward model folder, for evaluation only.
    #[arg(long, conflicts_with = "gold_column")]
    pub gold: Option<PathBuf>,
    /// Gold rewards from this column (N numbers per line).
    #[arg(long)]
    pub gold_column: Option<String>,
    /// Selection rules, comma-separated (bon, kl, wd).
    #[arg(long, value_delimiter = ',', default_value = "bon,kl,wd")]
    pub rules: Vec<Rule>,
    /// β values of RBoN-KL (the regulariser is a log-prob in nats, tens for a sentence).
    #[arg(long, value_delimiter = ',', value_parser = finite, default_value = "0.001,0.01,0.1,1")]
    pub beta_kl: Vec<f64>,
    /// β values of RBoN-WD (the regulariser is a mean cosine distance, in [0, 2]).
    #[arg(long, value_delimiter = ',', value_parser = finite, default_value = "0.1,0.5,1,2,5")]
    pub beta_wd: Vec<f64>,
    /// Subset sizes N, comma-separated (default: all candidates).
    #[arg(long, value_delimiter = ',', value_parser = at_least::<1>)]
    pub n: Vec<usize>,
    /// Random candidate orders per prompt; results are averaged over them.
    #[arg(long, default_value_t = 1, value_parser = at_least::<1>)]
    pub draws: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Column of reference log-probs.
    #[arg(long, default_value = "ref_logprobs")]
    pub ref_logprobs_column: String,
    /// Sentence encoder for RBoN-WD (a BERT folder: mean pooling, L2 normalisation).
    #[arg(long, default_value = "assets/all-MiniLM-L6-v2", conflicts_with = "embedding_column")]
    pub embedder: PathBuf,
    /// RBoN-WD embeddings from this column (N lists of numbers per line) instead of an encoder.
    #[arg(long)]
    pub embedding_column: Option<String>,
    /// What the reward models read: the response alone, or the prompt and the response.
    #[arg(long, value_parser = ["response", "prompt+response"], default_value = "response")]
    pub rm_input: String,
    /// DPO pairs: chosen = the pick of --pair-rule at --pair-beta among all N, rejected = the lowest
    /// proxy reward (TRL format, the prompt kept).
    #[arg(long)]
    pub pairs_out: Option<PathBuf>,
    #[arg(long, default_value = "wd")]
    pub pair_rule: Rule,
    #[arg(long, default_value_t = 0.5, value_parser = finite)]
    pub pair_beta: f64,
    /// Reward-model truncation (default: each model's own, else 128).
    #[arg(long, value_parser = at_least::<2>)]
    pub max_length: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = at_least::<1>)]
    pub batch_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub no_progress: bool,
}

pub fn bon(a: BonArgs) -> Result<()> {
    let proxy = match (&a.reward_column, a.models.is_empty()) {
        (Some(c), true) => RewardSource::Column(c.clone()),
        (None, false) => RewardSource::Models { dirs: a.models.clone(), combine: a.combine, normalize: !a.no_normalize },
        (None, true) => bail!("bon: give the proxy: --model DIR (repeat for an ensemble) or --reward-column NAME"),
        (Some(_), false) => unreachable!("clap refuses --model with --reward-column"),
    };
    let gold = match (&a.gold, &a.gold_column) {
        (Some(d), _) => Some(RewardSource::Models { dirs: vec![d.clone()], combine: Combine::Mean, normalize: false }),
        (None, Some(c)) => Some(RewardSource::Column(c.clone())),
        (None, None) => None,
    };
    let mut rules: Vec<(Rule, Vec<f64>)> = Vec::new();
    for rule in &a.rules {
        if rules.iter().any(|r| r.0 == *rule) {
            continue;
        }
        let betas = match rule {
            Rule::Bon => vec![0.0],
            Rule::Kl => a.beta_kl.clone(),
            Rule::Wd => a.beta_wd.clone(),
        };
        rules.push((*rule, betas));
    }
    let pairs = a.pairs_out.as_ref().map(|p| PairsSpec { path: p.clone(), rule: a.pair_rule, beta: a.pair_beta });
    let needs_embeddings = a.rules.contains(&Rule::Wd) || (pairs.is_some() && a.pair_rule == Rule::Wd);
    let embeddings = needs_embeddings.then(|| match &a.embedding_column {
        Some(c) => EmbeddingSource::Column(c.clone()),
        None => EmbeddingSource::Encoder(a.embedder.clone()),
    });
    let req = BonRequest {
        input: a.input.clone(),
        out_dir: a.out.clone(),
        proxy,
        gold,
        sweep: Sweep { rules, ns: a.n.clone(), draws: a.draws, seed: a.seed },
        ref_logprobs_column: a.ref_logprobs_column.clone(),
        embeddings,
        rm_input: if a.rm_input == "response" { RmInput::Response } else { RmInput::PromptAndResponse },
        max_length: a.max_length,
        batch_size: a.batch_size,
        device: parse_device(&a.device)?,
        pairs,
        progress: !a.no_progress,
    };
    let outcome = run_bon(&req)?;
    println!("{}", outcome.markdown);
    if let (Some(p), Some(n)) = (&a.pairs_out, outcome.pairs_written) {
        eprintln!("rmtrain: wrote {n} DPO pairs to {} ({} prompts)", p.display(), outcome.prompts);
    }
    Ok(())
}
