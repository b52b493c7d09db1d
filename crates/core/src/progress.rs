//! Progress bars on stderr (indicatif), one style for every stage; hidden when not wanted so
//! callers need no branches.

pub use indicatif::ProgressBar;
use indicatif::ProgressStyle;

/// A bar of `total` `unit`s prefixed by `stage`, starting at `done`; hidden unless `show`.
pub fn progress_bar(show: bool, stage: &str, unit: &str, total: u64, done: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} (eta {{eta}}) {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid progress template"));
    bar.set_prefix(stage.to_string());
    bar.set_position(done);
    bar
}
