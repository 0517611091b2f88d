//! Turns engine events into what a person or a CI log sees.
//!
//! On a terminal: a progress bar per running step (indicatif), which also
//! shows where a step handed to Slurm stands (its job pending, running on
//! a node). Elsewhere: one plain line per event. `--quiet`: failures only,
//! and a step submitted again because its node failed. `--json`: the same
//! on stderr; the command prints one JSON document on stdout at the end.
//! `NO_COLOR` turns colour off. Data goes to stdout, chatter to stderr.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use repro_engine::events::{Event, Reporter};
use repro_evidence::env_vars;
use repro_sandbox::JobState;

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Failures only.
    Quiet,
    /// Every step.
    Normal,
}

/// The reporter for the command line.
pub struct Console {
    verbosity: Verbosity,
    color: bool,
    bars: Option<MultiProgress>,
    running: Mutex<HashMap<String, ProgressBar>>,
}

impl Console {
    /// A reporter drawing on stderr.
    pub fn new(verbosity: Verbosity) -> Console {
        let tty = std::io::stderr().is_terminal();
        let color = tty && std::env::var_os(env_vars::NO_COLOR).is_none_or(|v| v.is_empty());
        let bars = (tty && verbosity == Verbosity::Normal)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Console {
            verbosity,
            color,
            bars,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn paint(&self, word: &str, code: u8) -> String {
        if self.color {
            format!("\x1b[{code}m{word}\x1b[0m")
        } else {
            word.to_string()
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// Show `text` on `step`'s bar; false when it has none (no terminal).
    fn set_bar(&self, step: &str, text: String) -> bool {
        match self.running.lock().ok().and_then(|m| m.get(step).cloned()) {
            Some(pb) => {
                pb.set_message(text);
                true
            }
            None => false,
        }
    }

    fn finish_bar(&self, step: &str) {
        if let Some(pb) = self.running.lock().ok().and_then(|mut m| m.remove(step)) {
            pb.finish_and_clear();
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Reporter for Console {
    fn event(&self, event: &Event) {
        let quiet = self.verbosity == Verbosity::Quiet;
        match event {
            Event::Note(n) if !quiet => self.line(format!("{} {n}", self.paint("note:", 2))),
            Event::Warning(w) => self.line(format!("{} {w}", self.paint("warning:", 33))),
            Event::BuildStarted { steps } if !quiet => self.line(format!(
                "building {steps} step{}",
                if *steps == 1 { "" } else { "s" }
            )),
            Event::StepStarted { step, key } if !quiet => match &self.bars {
                Some(mp) => {
                    let pb = mp.add(ProgressBar::new_spinner());
                    pb.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.set_message(format!("running {step} ({})", key.short()));
                    pb.enable_steady_tick(Duration::from_millis(120));
                    if let Ok(mut m) = self.running.lock() {
                        m.insert(step.clone(), pb);
                    }
                }
                None => self.line(format!(
                    "{:>8} {step} (key {})",
                    self.paint("running", 36),
                    key.short()
                )),
            },
            Event::StepCached { step, key, output } if !quiet => self.line(format!(
                "{:>8} {step} -> {} (cache hit, key {})",
                self.paint("cached", 34),
                output.short(),
                key.short()
            )),
            Event::StepPlacement { step, progress } => {
                let (verb, code) = match progress.state {
                    JobState::Pending => ("queued", 36),
                    JobState::Running => ("placed", 36),
                    JobState::Retrying => ("retry", 33),
                };
                // A node failure is heard of even with `--quiet`, like a
                // warning: the build goes on, but someone's node is down.
                let heard = progress.state == JobState::Retrying || !quiet;
                let shown = heard
                    && progress.state != JobState::Retrying
                    && self.set_bar(step, format!("{step}: {}", progress.detail));
                if heard && !shown {
                    self.line(format!(
                        "{:>8} {step}: {}",
                        self.paint(verb, code),
                        progress.detail
                    ));
                }
            }
            Event::StepSucceeded {
                step,
                output,
                duration,
                key,
            } => {
                self.finish_bar(step);
                if !quiet {
                    self.line(format!(
                        "{:>8} {step} -> {} in {} (key {})",
                        self.paint("ran", 32),
                        output.short(),
                        secs(*duration),
                        key.short()
                    ));
                }
            }
            Event::StepFailed {
                step,
                reason,
                log_tail,
            } => {
                self.finish_bar(step);
                let mut text = format!("{:>8} {step}: {reason}", self.paint("FAILED", 31));
                if !log_tail.is_empty() {
                    text.push_str("\n--- last lines of the log ---\n");
                    text.push_str(log_tail);
                    text.push_str("\n---");
                }
                self.line(text);
            }
            Event::StepSkipped { step, because } => self.line(format!(
                "{:>8} {step} (needs `{because}`, which failed)",
                self.paint("skipped", 33)
            )),
            _ => {}
        }
    }
}
