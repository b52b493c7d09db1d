//! Importer of the VADER ICWSM-2014 human sentiment ratings (Hutto & Gilbert, "VADER: A Parsimonious
//! Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014;
//! https://github.com/cjhutto/vaderSentiment) as a preference testbed with gold labels.
//!
//! 23,703 short texts in four domains (movie reviews, tweets, NYT editorials, Amazon reviews), each
//! rated from -4 to 4 by 15 to 99 independent raters (20 for most). Two snippets whose mean ratings
//! differ by at least `threshold` make a preference pair ("which text is more positive?") whose gold
//! label is the higher mean, with `gold_margin` = difference of means. Labelling the same pairs with
//! one rater's scores instead gives real human label noise, so methods for noisy preferences can be
//! trained on single-rater labels and evaluated against the mean.
//!
//! Protocol, per domain, deterministic given the seed:
//! 1. split the snippets (not the pairs) into train/valid/test after a seeded shuffle, keeping
//!    duplicate texts together, so no text is seen in two splits;
//! 2. inside each split, sample random unordered pairs with |Δ mean| ≥ threshold, without repeats,
//!    in random order (the first k lines of a file are a random subset of it);
//! 3. draw one rater per snippet, once for the run, and label the train pairs by the drawn scores
//!    (a tie is decided by a seeded coin and marked `"tie": true`).
//!
//! Output in `out_dir`: `{domain}.mean.train.jsonl`, `{domain}.single_rater.train.jsonl` (the same
//! pairs in the same order, labels from one rater), `{domain}.valid.jsonl`, `{domain}.test.jsonl`
//! (gold labels only: evaluation is always against the mean) and `summary.json`.

use crate::DataError;
use crate::pairs::write_jsonl;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Domain names and the file prefixes of their raw files.
pub const DOMAINS: [(&str, &str); 4] = [
    ("movie", "movieReviewSnippets"),
    ("tweets", "tweets"),
    ("nyt", "nytEditorialSnippets"),
    ("amazon", "amazonReviewSnippets"),
];

const SPLIT_NAMES: [&str; 3] = ["train", "valid", "test"];

/// A pair is sought at most this many times per requested pair before the importer settles for
/// fewer: a small split or a high threshold may not hold enough distinct pairs.
const ATTEMPTS_PER_PAIR: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaderOptions {
    /// The unzipped `hutto_ICWSM_2014` folder (`scripts/fetch-assets.sh` puts it under assets/).
    pub raw_dir: PathBuf,
    pub out_dir: PathBuf,
    pub seed: u64,
    /// Minimum |Δ mean rating| of a pair, on the -4..4 scale. 0.5 keeps pairs whose order most raters
    /// would agree on while leaving single raters a few percent of disagreements to learn through.
    pub threshold: f64,
    /// Train/valid/test fractions of the snippets (summing to 1).
    pub split: [f64; 3],
    /// Pairs requested per split; fewer are written if a split cannot supply them.
    pub train_pairs: usize,
    pub valid_pairs: usize,
    /// 3000 test pairs put the standard error of an accuracy near 0.9 at about 0.5 points.
    pub test_pairs: usize,
    /// Domain names from [`DOMAINS`].
    pub domains: Vec<String>,
}

impl Default for VaderOptions {
    fn default() -> Self {
        Self {
            raw_dir: "assets/vader/hutto_ICWSM_2014".into(),
            out_dir: "data/vader".into(),
            seed: 0,
            threshold: 0.5,
            split: [0.7, 0.1, 0.2],
            train_pairs: 8000,
            valid_pairs: 1000,
            test_pairs: 3000,
            domains: DOMAINS.iter().map(|(name, _)| name.to_string()).collect(),
        }
    }
}

impl VaderOptions {
    fn validate(&self) -> Result<(), DataError> {
        let invalid = |message: String| Err(DataError::InvalidOption(message));
        if self.split.iter().any(|f| !(0.0..=1.0).contains(f)) || (self.split.iter().sum::<f64>() - 1.0).abs() > 1e-9 {
            return invalid(format!("split fractions must lie in [0, 1] and sum to 1, got {:?}", self.split));
        }
        if !(self.threshold >= 0.0 && self.threshold.is_finite()) {
            return invalid(format!("threshold must be a finite number ≥ 0, got {}", self.threshold));
        }
        // An empty pair file is one no verb can read ("no records"), so it is refused here rather
        // than written.
        if let Some((name, _)) =
            [("train_pairs", self.train_pairs), ("valid_pairs", self.valid_pairs), ("test_pairs", self.test_pairs)]
                .into_iter()
                .find(|(_, n)| *n == 0)
        {
            return invalid(format!("{name} must be at least 1, got 0"));
        }
        if self.domains.is_empty() {
            return invalid("no domains to import".into());
        }
        for name in &self.domains {
            if prefix_of(name).is_none() {
                let valid: Vec<&str> = DOMAINS.iter().map(|(n, _)| *n).collect();
                return invalid(format!("unknown VADER domain {name:?}; valid ones: {}", valid.join(", ")));
            }
        }
        Ok(())
    }
}

fn prefix_of(domain: &str) -> Option<&'static str> {
    DOMAINS.iter().find(|(name, _)| *name == domain).map(|(_, prefix)| *prefix)
}

/// One rated text.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    pub id: String,
    /// Mean rating as published in the GroundTruth file.
    pub mean: f64,
    /// Every rater's score, -4..4.
    pub ratings: Vec<i32>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainSummary {
    pub domain: String,
    /// Snippets in train/valid/test.
    pub snippets: [usize; 3],
    /// Pairs written for train/valid/test.
    pub pairs: [usize; 3],
    /// Share of train pairs where the single rater's scores order the two texts against their means
    /// (ties not counted: those are in `single_rater_ties`, and half of them, decided by the coin,
    /// also end up against the mean).
    pub single_rater_disagree: f64,
    /// Share of train pairs where the single rater gave both texts the same score.
    pub single_rater_ties: f64,
    /// Share of single-rater train labels against the mean, lost coin flips included: the noise
    /// rate of the training labels (about `single_rater_disagree` + `single_rater_ties` / 2).
    pub single_rater_label_noise: f64,
    /// Snippets dropped because their text is empty.
    pub skipped_empty: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VaderSummary {
    pub options: VaderOptions,
    pub domains: Vec<DomainSummary>,
}

impl std::fmt::Display for VaderSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "VADER ICWSM-2014 -> {} (seed {}, |Δ mean| ≥ {}, split {}/{}/{})",
            o.out_dir.display(),
            o.seed,
            o.threshold,
            o.split[0],
            o.split[1],
            o.split[2]
        )?;
        writeln!(
            f,
            "{:<8} {:>22} {:>20} {:>10} {:>8} {:>8} {:>6}",
            "domain", "snippets train/val/test", "pairs train/val/test", "disagree", "ties", "noise", "empty"
        )?;
        for d in &self.domains {
            let slash = |n: &[usize; 3]| format!("{}/{}/{}", n[0], n[1], n[2]);
            writeln!(
                f,
                "{:<8} {:>22} {:>20} {:>9.1}% {:>7.1}% {:>7.1}% {:>6}",
                d.domain,
                slash(&d.snippets),
                slash(&d.pairs),
                100.0 * d.single_rater_disagree,
                100.0 * d.single_rater_ties,
                100.0 * d.single_rater_label_noise,
                d.skipped_empty
            )?;
        }
        Ok(())
    }
}

/// Imports the requested domains into `opts.out_dir` and writes `summary.json` there.
pub fn import_vader(opts: &VaderOptions) -> Result<VaderSummary, DataError> {
    opts.validate()?;
    let mut domains = Vec::new();
    for domain in &opts.domains {
        let prefix = prefix_of(domain).expect("domains were validated");
        let (snippets, empty): (Vec<Snippet>, Vec<Snippet>) =
            load_domain(&opts.raw_dir, prefix)?.into_iter().partition(|s| !s.text.is_empty());
        domains.push(import_domain(domain, &snippets, empty.len(), opts)?);
    }
    let summary = VaderSummary { options: opts.clone(), domains };
    rmtrain_core::write_json_atomic(&opts.out_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// Reads `{prefix}_GroundTruth.txt` (`id<TAB>mean<TAB>text`) and joins each line with its rater
/// scores from `{prefix}_anonDataRatings.txt` (`id<TAB>mean<TAB>std<TAB>[r1, r2, ...]`, not in the
/// same order for amazon). Texts are trimmed; empty ones are kept for the caller to count.
pub fn load_domain(raw_dir: &Path, prefix: &str) -> Result<Vec<Snippet>, DataError> {
    let truth_path = raw_dir.join(format!("{prefix}_GroundTruth.txt"));
    let ratings_path = raw_dir.join(format!("{prefix}_anonDataRatings.txt"));

    let mut ratings_by_id: HashMap<String, Vec<i32>> = HashMap::new();
    for (line, text) in tab_file_lines(&ratings_path)? {
        let at = |field: &str, problem: String| DataError::Field {
            path: ratings_path.clone(),
            line,
            field: field.into(),
            problem,
        };
        let fields: Vec<&str> = text.splitn(4, '\t').collect();
        let [id, _mean, _std, list] = fields[..] else {
            let problem = format!("expected 4 tab-separated fields (id, mean, std, [ratings]), got {}", fields.len());
            return Err(DataError::Line { path: ratings_path.clone(), line, problem });
        };
        let ratings = parse_ratings(list).ok_or_else(|| {
            at("ratings", format!("expected a non-empty list of integers in -4..4, got {:?}", list.trim()))
        })?;
        if ratings_by_id.insert(id.trim().to_string(), ratings).is_some() {
            return Err(at("id", format!("{id:?} appears twice")));
        }
    }

    let mut snippets = Vec::new();
    for (line, text) in tab_file_lines(&truth_path)? {
        // splitn keeps any tab inside the text (there is none in the 2014 release).
        let fields: Vec<&str> = text.splitn(3, '\t').collect();
        let [id, mean, text] = fields[..] else {
            let problem = format!("expected 3 tab-separated fields (id, mean, text), got {}", fields.len());
            return Err(DataError::Line { path: truth_path.clone(), line, problem });
        };
        let id = id.trim();
        let mean = mean.trim().parse::<f64>().ok().filter(|m| m.is_finite()).ok_or_else(|| DataError::Field {
            path: truth_path.clone(),
            line,
            field: "mean".into(),
            problem: format!("expected a number, got {mean:?}"),
        })?;
        let ratings = ratings_by_id.remove(id).ok_or_else(|| DataError::Line {
            path: truth_path.clone(),
            line,
            problem: format!("id {id:?} has no line in {}", ratings_path.display()),
        })?;
        snippets.push(Snippet { id: id.to_string(), mean, ratings, text: text.trim().to_string() });
    }
    Ok(snippets)
}

/// Non-blank lines with 1-based numbers. The files are CRLF, start with a BOM in places, and are
/// decoded lossily in case a text holds bytes that are not UTF-8.
fn tab_file_lines(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r').to_string()))
        .collect())
}

/// `[0, -1, 2]` → scores, or None if malformed, empty, or off the -4..4 scale.
fn parse_ratings(list: &str) -> Option<Vec<i32>> {
    let inner = list.trim().strip_prefix('[')?.strip_suffix(']')?;
    let ratings: Vec<i32> = inner.split(',').map(|r| r.trim().parse().ok()).collect::<Option<_>>()?;
    (!ratings.is_empty() && ratings.iter().all(|r| (-4..=4).contains(r))).then_some(ratings)
}

/// Random streams of one domain. Each step draws from its own stream so that, for example, asking
/// for more train pairs leaves the split, the valid and the test pairs unchanged.
enum Stream {
    Split,
    Rater,
    Pairs(usize),
    TieCoin,
}

/// The generator of one (seed, domain, step): the ChaCha key is the seed followed by the domain
/// name, so each domain's draws are independent of which other domains are imported.
fn domain_rng(seed: u64, domain: &str, stream: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    assert!(domain.len() <= 24, "domain names come from DOMAINS and fit in the 24 bytes left of the key");
    key[8..8 + domain.len()].copy_from_slice(domain.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(match stream {
        Stream::Split => 0,
        Stream::Rater => 1,
        Stream::TieCoin => 2,
        Stream::Pairs(split) => 3 + split as u64,
    });
    rng
}

fn import_domain(
    domain: &str,
    snippets: &[Snippet],
    skipped_empty: usize,
    opts: &VaderOptions,
) -> Result<DomainSummary, DataError> {
    let splits = split_snippets(snippets, opts.split, &mut domain_rng(opts.seed, domain, Stream::Split));
    let requested = [opts.train_pairs, opts.valid_pairs, opts.test_pairs];
    let pairs: Vec<Vec<(usize, usize)>> = (0..3)
        .map(|s| {
            let mut rng = domain_rng(opts.seed, domain, Stream::Pairs(s));
            sample_pairs(&splits[s], snippets, opts.threshold, requested[s], &mut rng)
        })
        .collect();

    // Gold labels: the higher mean is chosen.
    for (s, split_pairs) in pairs.iter().enumerate() {
        let rows: Vec<Map<String, Value>> =
            split_pairs.iter().map(|&(hi, lo)| pair_record(domain, "mean", &snippets[hi], &snippets[lo])).collect();
        let name =
            if s == 0 { format!("{domain}.mean.train.jsonl") } else { format!("{domain}.{}.jsonl", SPLIT_NAMES[s]) };
        write_jsonl(&opts.out_dir.join(name), &rows)?;
    }

    // Single-rater labels for the same train pairs. One rater per snippet for the whole run: a
    // snippet carries one noisy score, as if each text had been annotated once.
    let mut rater_rng = domain_rng(opts.seed, domain, Stream::Rater);
    let drawn: Vec<i32> = snippets.iter().map(|s| s.ratings[rater_rng.random_range(0..s.ratings.len())]).collect();
    let mut coin = domain_rng(opts.seed, domain, Stream::TieCoin);
    let (mut disagree, mut ties, mut against_mean) = (0usize, 0usize, 0usize);
    let mut rows = Vec::with_capacity(pairs[0].len());
    for &(hi, lo) in &pairs[0] {
        let tie = drawn[hi] == drawn[lo];
        let agrees = if tie { coin.random_bool(0.5) } else { drawn[hi] > drawn[lo] };
        ties += usize::from(tie);
        disagree += usize::from(!tie && !agrees);
        against_mean += usize::from(!agrees);
        let (chosen, rejected) = if agrees { (hi, lo) } else { (lo, hi) };
        let mut row = pair_record(domain, "single_rater", &snippets[chosen], &snippets[rejected]);
        row.insert("chosen_rating".into(), json!(drawn[chosen]));
        row.insert("rejected_rating".into(), json!(drawn[rejected]));
        row.insert("tie".into(), json!(tie));
        row.insert("agrees_with_mean".into(), json!(agrees));
        rows.push(row);
    }
    write_jsonl(&opts.out_dir.join(format!("{domain}.single_rater.train.jsonl")), &rows)?;

    let share = |count: usize| if rows.is_empty() { 0.0 } else { count as f64 / rows.len() as f64 };
    Ok(DomainSummary {
        domain: domain.into(),
        snippets: splits.each_ref().map(Vec::len),
        pairs: [pairs[0].len(), pairs[1].len(), pairs[2].len()],
        single_rater_disagree: share(disagree),
        single_rater_ties: share(ties),
        single_rater_label_noise: share(against_mean),
        skipped_empty,
    })
}

/// Snippet indices of train/valid/test. Distinct texts are shuffled and split, not snippets: a few
/// texts were rated twice under two ids (71 in nyt) and must not sit on both sides of a split.
fn split_snippets(snippets: &[Snippet], fractions: [f64; 3], rng: &mut ChaCha8Rng) -> [Vec<usize>; 3] {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of_text: HashMap<&str, usize> = HashMap::new();
    for (i, s) in snippets.iter().enumerate() {
        let g = *group_of_text.entry(&s.text).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups.shuffle(rng);
    let n = groups.len() as f64;
    let train_end = (fractions[0] * n).round() as usize;
    let valid_end = ((fractions[0] + fractions[1]) * n).round().min(n) as usize;
    let take = |range: std::ops::Range<usize>| groups[range].concat();
    [take(0..train_end), take(train_end..valid_end), take(valid_end..groups.len())]
}

/// Up to `count` distinct unordered pairs from `members`, as (higher mean, lower mean), in the
/// order drawn. Pairs with equal means never qualify, whatever the threshold: they have no gold label.
fn sample_pairs(
    members: &[usize],
    snippets: &[Snippet],
    threshold: f64,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    let mut pairs = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    if members.len() < 2 {
        return pairs;
    }
    for _ in 0..count.saturating_mul(ATTEMPTS_PER_PAIR) {
        if pairs.len() == count {
            break;
        }
        let a = members[rng.random_range(0..members.len())];
        let b = members[rng.random_range(0..members.len())];
        let (hi, lo) = if snippets[a].mean >= snippets[b].mean { (a, b) } else { (b, a) };
        let gap = mean_gap(&snippets[hi], &snippets[lo]);
        if a == b || gap == 0.0 || gap < threshold || snippets[a].text == snippets[b].text {
            continue;
        }
        if seen.insert((a.min(b), a.max(b))) {
            pairs.push((hi, lo));
        }
    }
    pairs
}

/// mean(a) − mean(b), rounded to 12 decimals (the published means carry about 12 significant
/// digits): a gap that is 0.5 on paper must not become 0.49999999999999994 and miss a 0.5 threshold.
fn mean_gap(a: &Snippet, b: &Snippet) -> f64 {
    ((a.mean - b.mean) * 1e12).round() / 1e12
}

fn pair_record(domain: &str, label_source: &str, chosen: &Snippet, rejected: &Snippet) -> Map<String, Value> {
    let record = json!({
        "chosen": chosen.text,
        "rejected": rejected.text,
        "gold_margin": mean_gap(chosen, rejected),
        "domain": domain,
        "label_source": label_source,
        "chosen_id": chosen.id,
        "rejected_id": rejected.id,
        "chosen_mean": chosen.mean,
        "rejected_mean": rejected.mean,
    });
    match record {
        Value::Object(fields) => fields,
        _ => unreachable!("json!({{...}}) is an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_pairs;

    /// Writes a raw dir for `movie` with `n` snippets, CRLF line endings and a BOM on the ratings
    /// file (as the real amazon file has), its ratings lines in reverse order.
    fn synthetic_raw_dir(n: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut truth, mut ratings) = (String::new(), vec![]);
        for i in 0..n {
            // Scores spread over the scale, with different spreads so single raters disagree.
            let scores: Vec<i32> = (0..10).map(|r| ((i * 7 + r * (i % 5)) % 9) as i32 - 4).collect();
            let mean = scores.iter().sum::<i32>() as f64 / scores.len() as f64;
            truth.push_str(&format!("{i}\t{mean}\tsnippet number {i} is {}\r\n", ["fine", "bad", "great"][i % 3]));
            ratings.push(format!("{i}\t{mean}\t1.0\t{scores:?}\r\n"));
        }
        ratings.reverse();
        std::fs::write(dir.path().join("movieReviewSnippets_GroundTruth.txt"), truth).expect("write");
        std::fs::write(
            dir.path().join("movieReviewSnippets_anonDataRatings.txt"),
            format!("\u{feff}{}", ratings.concat()),
        )
        .expect("write");
        dir
    }

    fn options(raw: &Path, out: &Path, seed: u64) -> VaderOptions {
        VaderOptions {
            raw_dir: raw.into(),
            out_dir: out.into(),
            seed,
            train_pairs: 60,
            valid_pairs: 5,
            test_pairs: 20,
            domains: vec!["movie".into()],
            ..VaderOptions::default()
        }
    }

    fn files(out: &Path) -> Vec<(String, String)> {
        ["movie.mean.train.jsonl", "movie.single_rater.train.jsonl", "movie.valid.jsonl", "movie.test.jsonl"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read_to_string(out.join(f)).expect("output file")))
            .collect()
    }

    #[test]
    fn import_is_deterministic_split_clean_and_consistent() {
        let raw = synthetic_raw_dir(40);
        let out = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (out.path().join("a"), out.path().join("b"), out.path().join("c"));
        let summary = import_vader(&options(raw.path(), &a, 1)).expect("import");
        import_vader(&options(raw.path(), &b, 1)).expect("import");
        import_vader(&options(raw.path(), &c, 2)).expect("import");
        assert_eq!(files(&a), files(&b), "same seed, same files");
        assert_ne!(files(&a), files(&c), "another seed, other pairs");
        assert!(a.join("summary.json").exists());
        assert_eq!(summary.domains[0].snippets, [28, 4, 8]);
        assert_eq!(summary.domains[0].pairs[0], 60);

        let read = |name: &str| read_pairs(&a.join(name)).expect("readable output");
        let mean = read("movie.mean.train.jsonl");
        let single = read("movie.single_rater.train.jsonl");
        let splits = [&mean, &read("movie.valid.jsonl"), &read("movie.test.jsonl")];

        // No snippet in two splits.
        let ids = |pairs: &Vec<crate::Pair>| -> HashSet<String> {
            pairs
                .iter()
                .flat_map(|p| ["chosen_id", "rejected_id"].map(|k| p.fields[k].as_str().expect("id").to_string()))
                .collect()
        };
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            assert!(ids(splits[i]).is_disjoint(&ids(splits[j])), "splits {i} and {j} share a snippet");
        }
        for pair in splits.iter().flat_map(|s| s.iter()) {
            assert!(pair.gold_margin.expect("gold margin") >= 0.5, "{:?}", pair.fields);
            assert_eq!(pair.label_source.as_deref(), Some("mean"));
        }

        // The single-rater file holds the same pairs in the same order, labelled by the drawn scores.
        assert_eq!(mean.len(), single.len());
        let mut disagreements = 0;
        for (m, s) in mean.iter().zip(&single) {
            let unordered = |p: &crate::Pair| {
                let mut ids = [p.fields["chosen_id"].to_string(), p.fields["rejected_id"].to_string()];
                ids.sort();
                ids
            };
            assert_eq!(unordered(m), unordered(s));
            let (chosen, rejected) = (
                s.fields["chosen_rating"].as_i64().expect("rating"),
                s.fields["rejected_rating"].as_i64().expect("rating"),
            );
            let tie = s.fields["tie"].as_bool().expect("tie");
            let agrees = s.fields["agrees_with_mean"].as_bool().expect("agrees");
            assert_eq!(tie, chosen == rejected);
            assert!(tie || chosen > rejected, "the higher drawn score wins");
            assert_eq!(agrees, s.chosen == m.chosen);
            let gold = s.gold_margin.expect("gold margin");
            assert_eq!(gold, if agrees { m.gold_margin.expect("gold") } else { -m.gold_margin.expect("gold") });
            disagreements += usize::from(!agrees);
        }
        assert!(disagreements > 0, "the synthetic raters are meant to disagree sometimes");
    }

    #[test]
    fn a_missing_ratings_line_names_file_and_line() {
        let raw = synthetic_raw_dir(5);
        let truth = raw.path().join("movieReviewSnippets_GroundTruth.txt");
        let mut text = std::fs::read_to_string(&truth).expect("read");
        text.push_str("99\t1.0\tno ratings for me\r\n");
        std::fs::write(&truth, text).expect("write");
        let err = load_domain(raw.path(), "movieReviewSnippets").expect_err("id 99 has no ratings").to_string();
        assert!(err.starts_with(&format!("{}:6: id \"99\"", truth.display())), "{err}");
    }

    #[test]
    fn invalid_options_are_rejected() {
        let bad = [
            VaderOptions { split: [0.7, 0.2, 0.2], ..VaderOptions::default() },
            VaderOptions { threshold: -1.0, ..VaderOptions::default() },
            VaderOptions { domains: vec!["imdb".into()], ..VaderOptions::default() },
            VaderOptions { threshold: f64::NAN, ..VaderOptions::default() },
            VaderOptions { valid_pairs: 0, ..VaderOptions::default() },
        ];
        for opts in bad {
            assert!(matches!(import_vader(&opts), Err(DataError::InvalidOption(_))), "{opts:?}");
        }
        let err =
            VaderOptions { domains: vec!["imdb".into()], ..VaderOptions::default() }.validate().expect_err("unknown");
        assert!(err.to_string().contains("movie, tweets, nyt, amazon"), "{err}");
    }

    /// The real testbed. Ignored by default (the ratings are downloaded, not committed); CI runs it
    /// after `scripts/fetch-assets.sh` with `--ignored real_vader`, and there missing ratings are a
    /// failure: a test that passes when its data is absent would hide a broken download.
    #[test]
    #[ignore = "needs the real VADER ratings: scripts/fetch-assets.sh"]
    fn real_vader_import_matches_the_design_numbers() {
        let raw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/vader/hutto_ICWSM_2014");
        assert!(raw.is_dir(), "{} not found: run scripts/fetch-assets.sh first", raw.display());
        let out = tempfile::tempdir().expect("tempdir");
        let opts = VaderOptions { raw_dir: raw, out_dir: out.path().into(), ..VaderOptions::default() };
        let summary = import_vader(&opts).expect("import of the real data");
        println!("{summary}");
        assert_eq!(summary.domains.len(), 4);
        assert_eq!(
            summary.domains.iter().map(|d| d.snippets.iter().sum::<usize>() + d.skipped_empty).sum::<usize>(),
            23_703
        );
        for d in &summary.domains {
            assert!(d.pairs[2] >= 3000, "{}: {} test pairs", d.domain, d.pairs[2]);
            assert!((0.01..=0.15).contains(&d.single_rater_disagree), "{}: {}", d.domain, d.single_rater_disagree);
        }
    }
}
