//! Progress bars for long transfers: only on a terminal, only for big or unknown sizes.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Transfers smaller than this finish too fast for a bar to help.
pub const PROGRESS_BYTES_MIN: u64 = 4 << 20;

/// A bar (or a spinner when the size is unknown) on stderr, cleared when dropped.
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for a transfer of `total` bytes (`None`: unknown), or nothing when stderr is not
    /// a terminal or the transfer is small.
    pub fn new(what: &str, total: Option<u64>) -> Option<Progress> {
        if !wanted(std::io::stderr().is_terminal(), total) {
            return None;
        }
        let bar = match total {
            Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
                .with_style(style(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )),
            None => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_style(style("{spinner} {msg} {bytes} {bytes_per_sec}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }
        };
        bar.set_message(what.to_owned());
        Some(Progress(bar))
    }

    /// The bar, to wrap a reader or writer or count bytes with.
    pub fn bar(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Whether a transfer of `total` bytes gets a bar when stderr is (or is not) a terminal.
fn wanted(stderr_is_terminal: bool, total: Option<u64>) -> bool {
    stderr_is_terminal && total.is_none_or(|len| len >= PROGRESS_BYTES_MIN)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bars_only_on_a_terminal_for_big_or_unknown_transfers() {
        assert!(!wanted(false, None));
        assert!(!wanted(false, Some(1 << 30)));
        assert!(wanted(true, None));
        assert!(wanted(true, Some(PROGRESS_BYTES_MIN)));
        assert!(!wanted(true, Some(PROGRESS_BYTES_MIN - 1)));
    }

    #[test]
    fn templates_are_valid() {
        for t in [
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            "{spinner} {msg} {bytes} {bytes_per_sec}",
        ] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
