//! The Slurm executor: each step is a batch job (`sbatch`) whose script
//! runs the same sandboxed step on the compute node through the hidden
//! `repro __slurm-step` command, the native sandbox by default. The spec,
//! the inputs, the output folder and the log are all in the store, which
//! must be on a filesystem the nodes share (see the README); so the step
//! key, the outputs and the record are exactly those of a local build.
//!
//! Without a shared filesystem, a [`Courier`] moves the step through an OCI
//! registry instead: the controller sends the image and the input trees
//! and leaves the job there under a token, the node (with its own store)
//! pulls them by digest, runs the step and sends back its output tree and
//! log, which the controller pulls, re-hashes and lays out where a local
//! run would have left them.
//!
//! The controller polls `scontrol show job` until the job ends, telling
//! the engine (through [`Backend::run_observed`]) when the job is pending
//! and when it runs on a node, and cancels it (`scancel`) when the build
//! is cancelled. A job that Slurm itself ends (time limit, node failure,
//! preemption) is reported with Slurm's state and reason and the job's
//! log; a node failure is retried up to [`SlurmOptions::retries`] times,
//! each retry in a folder of its own, so that nothing the failed attempt
//! wrote (or a node cut off from the controller still writes) can reach
//! the store.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use repro_store::{ImageDigest, Store};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendInfo, BackendKind, JobProgress, JobState, ProgressSink};
use crate::error::{Error, Result};
use crate::outcome::{Outcome, Termination};
use crate::spec::{StepSpec, Variation};

/// The hidden subcommand a job runs: `<exe> __slurm-step <store> <spec> <result>`.
pub const STEP_ARG: &str = "__slurm-step";

/// Moves a step to a node and its result back when the nodes do not share
/// the store (implemented over an OCI registry by `repro-exchange`).
pub trait Courier: Send + Sync + std::fmt::Debug {
    /// Make `spec`'s image and input trees (every [`Mount::tree`](crate::Mount::tree))
    /// reachable for a node and leave the job there under `token`.
    fn send<'a>(
        &'a self,
        spec: &'a StepSpec,
        token: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;
    /// Bring back what the node left for `token`: its output tree laid out
    /// at `spec.output` (which exists and is empty) and its log written to
    /// `spec.log`, every blob re-hashed on the way. `None` when the node
    /// left nothing (it never ran, or died before it could).
    fn receive<'a>(
        &'a self,
        spec: &'a StepSpec,
        token: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<Outcome>, String>>;
    /// The arguments of `repro __slurm-step` on the node that reach the
    /// same place (before `--job <token>`).
    fn node_args(&self) -> Vec<String>;
}

/// Where a job's own output (Slurm's, not the step's log) goes on a node
/// that does not share the store: the node's `/tmp`, named by job id.
pub const NODE_JOB_LOG: &str = "/tmp/repro-slurm-%j.out";

/// Where and how jobs are submitted.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// `--partition`, when given.
    pub partition: Option<String>,
    /// `--account`, when given.
    pub account: Option<String>,
    /// How many times a step whose node failed is submitted again.
    pub retries: u32,
}

/// The Slurm executor (a [`Backend`]).
#[derive(Debug)]
pub struct SlurmBackend {
    placements: std::sync::Mutex<std::collections::HashMap<String, String>>,
    options: SlurmOptions,
    store: PathBuf,
    exe: PathBuf,
    node_sandbox: BackendKind,
    courier: Option<Arc<dyn Courier>>,
}

/// A submitted job: Slurm's id, and the courier's token when there is one.
struct Submitted {
    id: String,
    token: Option<String>,
}

/// What one job ended as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobEnd {
    job: String,
    state: String,
    reason: String,
    node: String,
}

impl SlurmBackend {
    /// An executor submitting to Slurm steps that run on the nodes with
    /// `exe` (the `repro` binary, on the shared filesystem or installed at
    /// the same path on every node) over the store at `store`, sandboxed by
    /// `node_sandbox`.
    pub fn new(options: SlurmOptions, store: &Path, exe: &Path, node_sandbox: BackendKind) -> Self {
        SlurmBackend {
            placements: Default::default(),
            options,
            store: store.to_path_buf(),
            exe: exe.to_path_buf(),
            node_sandbox,
            courier: None,
        }
    }

    /// Move steps through `courier` instead of the shared store.
    pub fn with_courier(mut self, courier: Arc<dyn Courier>) -> Self {
        self.courier = Some(courier);
        self
    }

    /// The `sbatch` arguments for `spec`: its resources (CPUs, time,
    /// memory, GPUs) and where it goes.
    pub fn sbatch_args(&self, spec: &StepSpec, script: &Path, job_log: &Path) -> Vec<String> {
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name=repro-{}", spec.step),
            format!("--output={}", job_log.display()),
            "--ntasks=1".to_string(),
            format!(
                "--cpus-per-task={}",
                spec.limits.cpus.map_or(1, |c| c.ceil().max(1.0) as u64)
            ),
            // Slurm's limit is the step's own plus a minute for the node to
            // set the sandbox up, so that the sandbox, not Slurm, enforces it.
            format!("--time={}", spec.limits.timeout.as_secs().div_ceil(60) + 1),
            // A job whose node fails must end as NODE_FAIL, not be put back
            // in the queue by Slurm (its default, `JobRequeue=1`): the
            // requeued job would run again over the failed attempt's output
            // and result, and `--retries` would not count it. The executor
            // submits a step again itself, in a folder of its own.
            "--no-requeue".to_string(),
        ];
        if let Some(m) = spec.limits.memory_bytes {
            a.push(format!("--mem={}M", m.div_ceil(1 << 20) + 256));
        }
        // `gpu:2` or `gpu:a100:2`: the generic resource Slurm's GPU plugin
        // schedules, on the one node of the job.
        if let Some(g) = &spec.limits.gpus {
            a.push(format!("--gres=gpu:{g}"));
        }
        if let Some(p) = &self.options.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(acc) = &self.options.account {
            a.push(format!("--account={acc}"));
        }
        a.push(script.display().to_string());
        a
    }

    async fn submit(&self, spec: &StepSpec, dir: &Path) -> Result<Submitted> {
        let spec_file = dir.join("spec.json");
        let result = dir.join("result.json");
        let script = dir.join("job.sh");
        let job_log = dir.join("job.log");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let bytes = serde_json::to_vec(spec).map_err(|e| Error::InvalidSpec {
            step: spec.step.clone(),
            why: format!("the spec does not serialize: {e}"),
        })?;
        let _ = std::fs::remove_file(&result);
        let (text, token, job_log) = match &self.courier {
            None => {
                std::fs::write(&spec_file, &bytes).map_err(io("write", &spec_file))?;
                let text = format!(
                    "#!/bin/sh\nexec {} {STEP_ARG} --sandbox {} {} {} {}\n",
                    sh(&self.exe),
                    self.node_sandbox.name(),
                    sh(&self.store),
                    sh(&spec_file),
                    sh(&result)
                );
                (text, None, job_log)
            }
            Some(courier) => {
                let token = job_token(&bytes);
                courier
                    .send(spec, &token)
                    .await
                    .map_err(|why| Error::Cluster {
                        step: spec.step.clone(),
                        why: format!("cannot send the step to the nodes: {why}"),
                    })?;
                let mut text = format!(
                    "#!/bin/sh\nexec {} {STEP_ARG} --sandbox {}",
                    sh(&self.exe),
                    self.node_sandbox.name()
                );
                for a in courier.node_args() {
                    text.push(' ');
                    text.push_str(&sh(Path::new(&a)));
                }
                text.push_str(&format!(" --job {token}\n"));
                (text, Some(token), PathBuf::from(NODE_JOB_LOG))
            }
        };
        std::fs::write(&script, text).map_err(io("write", &script))?;
        let out = Command::new("sbatch")
            .args(self.sbatch_args(spec, &script, &job_log))
            .output()
            .await
            .map_err(|e| Error::Cluster {
                step: spec.step.clone(),
                why: format!("cannot run `sbatch` ({e}); is Slurm installed on this machine?"),
            })?;
        if !out.status.success() {
            return Err(Error::Cluster {
                step: spec.step.clone(),
                why: format!(
                    "`sbatch` refused the job: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Cluster {
                step: spec.step.clone(),
                why: format!(
                    "`sbatch` printed no job id: {:?}",
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        Ok(Submitted { id, token })
    }

    /// Wait for job `id` to end (or cancel it when `cancel` fires),
    /// telling `progress` when the job is first seen pending and when it
    /// first has a node.
    async fn wait(
        &self,
        id: &str,
        cancel: &CancellationToken,
        progress: &ProgressSink<'_>,
    ) -> Result<Option<JobEnd>> {
        let mut delay = Duration::from_millis(100);
        let (mut told_pending, mut told_running) = (false, false);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = Command::new("scancel").arg(id).output().await;
                    return Ok(None);
                }
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
            let out = Command::new("scontrol")
                .args(["show", "job", "--oneliner", id])
                .output()
                .await
                .map_err(|e| Error::Cluster {
                    step: id.to_string(),
                    why: format!("cannot run `scontrol` ({e})"),
                })?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let field = |k: &str| {
                text.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            let state = field("JobState");
            let node = Some(field("NodeList"))
                .filter(|n| n != "(null)")
                .unwrap_or_default();
            if state == "PENDING" && !told_pending && !told_running {
                told_pending = true;
                let reason = field("Reason");
                progress(JobProgress {
                    state: JobState::Pending,
                    job: id.to_string(),
                    detail: match reason.as_str() {
                        "" | "None" => format!("submitted as slurm job {id}, pending"),
                        r => format!("submitted as slurm job {id}, pending ({r})"),
                    },
                });
            } else if !state.is_empty() && state != "PENDING" && !node.is_empty() && !told_running {
                // Told once, also for a job that ended before it was seen
                // running: where it ran is worth knowing.
                told_running = true;
                progress(JobProgress {
                    state: JobState::Running,
                    job: id.to_string(),
                    detail: format!("running as slurm job {id} on {node}"),
                });
            }
            if matches!(
                state.as_str(),
                "COMPLETED"
                    | "FAILED"
                    | "CANCELLED"
                    | "TIMEOUT"
                    | "NODE_FAIL"
                    | "PREEMPTED"
                    | "OUT_OF_MEMORY"
                    | "BOOT_FAIL"
                    | "DEADLINE"
            ) {
                return Ok(Some(JobEnd {
                    job: id.to_string(),
                    state,
                    reason: field("Reason"),
                    node,
                }));
            }
            // A job Slurm has purged (`MinJobAge` passed while we were not
            // looking) is over: what it left decides, as for any ending.
            if state.is_empty() && String::from_utf8_lossy(&out.stderr).contains("Invalid job id") {
                return Ok(Some(JobEnd {
                    job: id.to_string(),
                    state: "UNKNOWN".into(),
                    reason: "Slurm no longer knows the job".into(),
                    node,
                }));
            }
        }
    }

    async fn run_once(
        &self,
        spec: &StepSpec,
        cancel: &CancellationToken,
        progress: &ProgressSink<'_>,
    ) -> Result<std::result::Result<Outcome, JobEnd>> {
        let dir = spec
            .log
            .parent()
            .map(|p| p.join("slurm"))
            .unwrap_or_else(|| PathBuf::from("slurm"));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let started = Instant::now();
        let Submitted { id, token } = self.submit(spec, &dir).await?;
        let end = self.wait(&id, cancel, progress).await?;
        if let Some(e) = &end {
            if let Ok(mut p) = self.placements.lock() {
                p.insert(spec.step.clone(), format!("slurm job {id} on {}", e.node));
            }
        }
        let Some(end) = end else {
            return Ok(Ok(Outcome {
                termination: Termination::Cancelled,
                duration: started.elapsed(),
            }));
        };
        let reported = match (&self.courier, &token) {
            (Some(courier), Some(token)) => {
                courier
                    .receive(spec, token)
                    .await
                    .map_err(|why| Error::Cluster {
                        step: spec.step.clone(),
                        why: format!("cannot bring back what job {id} left: {why}"),
                    })?
            }
            _ => std::fs::read(dir.join("result.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Outcome>(&bytes).ok()),
        };
        if let Some(o) = reported {
            // A step the node cancelled without our asking was ended by
            // Slurm (an operator's scancel, its time limit, preemption):
            // that is Slurm's ending, not an interruption of the build.
            if o.termination != Termination::Cancelled || cancel.is_cancelled() {
                return Ok(Ok(o));
            }
        }
        if end.state == "TIMEOUT" {
            return Ok(Ok(Outcome {
                termination: Termination::TimedOut,
                duration: started.elapsed(),
            }));
        }
        let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
        let node = if end.node.is_empty() {
            "no node"
        } else {
            &end.node
        };
        Ok(Err(JobEnd {
            reason: format!(
                "job {id} on {node} ended {} ({}) before the step reported{}",
                end.state,
                end.reason,
                if self.courier.is_some() {
                    format!(
                        "; its log is on {node} at {}",
                        NODE_JOB_LOG.replace("%j", &id)
                    )
                } else if log.trim().is_empty() {
                    String::new()
                } else {
                    format!("; its log:\n{}", tail(&log, 20))
                }
            ),
            ..end
        }))
    }
}

/// The spec of attempt `attempt` (2 or more) of `spec`: the same step,
/// with its output, its log and its job's files (beside the log) in a
/// folder of the attempt's own, `slurm-attempt-<n>` beside `spec.log`. A
/// node that lost touch with the controller may still be running the
/// failed attempt and writing into its folders; nothing it writes can
/// mix with this attempt's output or be taken for its result.
fn retry_spec(spec: &StepSpec, attempt: u32) -> Result<StepSpec> {
    let dir = spec
        .log
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(format!("slurm-attempt-{attempt}"));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.clone(),
        source,
    })?;
    Ok(StepSpec {
        output: dir.join("out"),
        log: dir.join("log"),
        ..spec.clone()
    })
}

/// Put the output and the log of the attempt that reported (`tried`, a
/// [`retry_spec`]) where the engine reads them (`spec`), after moving the
/// first attempt's aside, into `tried`'s folder (a rename: a node cut off
/// from the controller may still be writing there).
fn adopt(spec: &StepSpec, tried: &StepSpec) -> Result<()> {
    let aside = |p: &Path| {
        tried.log.with_file_name(format!(
            "first-attempt-{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        ))
    };
    for (from, to) in [
        (&spec.output, aside(&spec.output)),
        (&spec.log, aside(&spec.log)),
        (&tried.output, spec.output.clone()),
        (&tried.log, spec.log.clone()),
    ] {
        match std::fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "rename",
                    path: from.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A token naming one submission of a step (what the courier leaves the
/// job under): unique per process, time and spec.
fn job_token(spec: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(spec);
    h.update(std::process::id().to_le_bytes());
    h.update(
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    let hex: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("job-{hex}")
}

/// `p` quoted for `sh`.
fn sh(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

impl Backend for SlurmBackend {
    fn kind(&self) -> BackendKind {
        self.node_sandbox
    }

    fn ensure_image<'a>(
        &'a self,
        _store: &'a Store,
        _image: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>> {
        // The node makes the image ready, from the shared store.
        Box::pin(async { Ok(()) })
    }

    fn run_varied<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>> {
        self.run_observed(spec, variation, cancel, &|_| {})
    }

    fn run_observed<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
        progress: &'a ProgressSink<'a>,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            if !variation.is_none() {
                return Err(Error::InvalidSpec {
                    step: spec.step.clone(),
                    why: "the Slurm executor cannot vary the sandbox; run `repro check` locally"
                        .into(),
                });
            }
            let attempts = self.options.retries.saturating_add(1);
            let mut attempt = 1;
            // The jobs whose node failed, oldest first.
            let mut failed: Vec<String> = Vec::new();
            // The first attempt writes where the engine reads; each later
            // one in a folder of its own (see `retry_spec`).
            let mut this = Cow::Borrowed(spec);
            loop {
                match self.run_once(&this, &cancel, progress).await? {
                    Ok(o) => {
                        if attempt > 1 && o.termination != Termination::Cancelled {
                            adopt(spec, &this)?;
                        }
                        return Ok(o);
                    }
                    Err(end) if end.state == "NODE_FAIL" && attempt < attempts => {
                        attempt += 1;
                        progress(JobProgress {
                            state: JobState::Retrying,
                            job: end.job.clone(),
                            detail: format!(
                                "slurm job {} on {} ended NODE_FAIL: node failed; \
                                 submitting again (attempt {attempt} of {attempts})",
                                end.job,
                                if end.node.is_empty() {
                                    "no node"
                                } else {
                                    &end.node
                                },
                            ),
                        });
                        failed.push(end.job);
                        this = Cow::Owned(retry_spec(spec, attempt)?);
                    }
                    Err(end) => {
                        let why = if failed.is_empty() {
                            end.reason
                        } else {
                            format!(
                                "attempt {attempt} of {attempts} (the node of slurm job{} {} \
                                 failed before): {}",
                                if failed.len() > 1 { "s" } else { "" },
                                failed.join(", "),
                                end.reason
                            )
                        };
                        return Err(Error::Cluster {
                            step: spec.step.clone(),
                            why,
                        });
                    }
                }
            }
        })
    }

    fn allocates_gpus(&self) -> bool {
        // `--gres=gpu:...`: Slurm reserves them on the node.
        true
    }

    fn placement(&self, step: &str) -> Option<String> {
        self.placements.lock().ok()?.get(step).cloned()
    }

    fn describe(&self) -> BoxFuture<'_, Result<BackendInfo>> {
        Box::pin(async move {
            let v = Command::new("sbatch").arg("--version").output().await;
            let version = v
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            Ok(BackendInfo {
                backend: format!("slurm ({} sandbox on the nodes)", self.node_sandbox.name()),
                server_version: version,
                api_version: "sbatch".into(),
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
                kernel_version: String::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_asks_for_the_steps_resources_and_the_chosen_partition() {
        let b = SlurmBackend::new(
            SlurmOptions {
                partition: Some("gpu".into()),
                account: Some("risk".into()),
                retries: 1,
            },
            Path::new("/shared/store"),
            Path::new("/opt/repro"),
            BackendKind::Native,
        );
        let spec = StepSpec {
            step: "train".into(),
            image: ImageDigest::from_hash(repro_store::Hash::of(b"i")),
            argv: vec!["true".into()],
            env: Default::default(),
            inputs: Vec::new(),
            output: PathBuf::from("/shared/store/v1/tmp/x/out"),
            log: PathBuf::from("/shared/store/v1/tmp/x/log"),
            limits: crate::Limits {
                memory_bytes: Some(3 << 30),
                cpus: Some(1.5),
                timeout: Duration::from_secs(600),
                pids: 512,
                gpus: Some(crate::Gpus {
                    kind: Some("a100".into()),
                    count: 2,
                }),
            },
        };
        let a = b.sbatch_args(&spec, Path::new("/s/job.sh"), Path::new("/s/job.log"));
        for want in [
            "--cpus-per-task=2",
            "--time=11",
            "--mem=3328M",
            "--gres=gpu:a100:2",
            "--partition=gpu",
            "--account=risk",
            "--job-name=repro-train",
            "--output=/s/job.log",
            "--no-requeue",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} not in {a:?}");
        }
        assert_eq!(a.last().map(String::as_str), Some("/s/job.sh"));
        assert_eq!(sh(Path::new("/a b/it's")), "'/a b/it'\\''s'");
    }

    /// A GPU count alone asks for any GPU type; a step without GPUs asks
    /// for no generic resource at all (and a job without a partition or an
    /// account leaves them to Slurm's defaults).
    #[test]
    fn a_job_asks_for_gpus_only_when_the_step_does() {
        let b = SlurmBackend::new(
            SlurmOptions::default(),
            Path::new("/shared/store"),
            Path::new("/opt/repro"),
            BackendKind::Native,
        );
        let mut spec = StepSpec {
            step: "train".into(),
            image: ImageDigest::from_hash(repro_store::Hash::of(b"i")),
            argv: vec!["true".into()],
            env: Default::default(),
            inputs: Vec::new(),
            output: PathBuf::from("/shared/store/v1/tmp/x/out"),
            log: PathBuf::from("/shared/store/v1/tmp/x/log"),
            limits: crate::Limits::default(),
        };
        let args = |spec: &StepSpec| b.sbatch_args(spec, Path::new("/s/job.sh"), Path::new("/s/l"));
        let a = args(&spec);
        assert!(!a.iter().any(|x| x.starts_with("--gres")), "{a:?}");
        assert!(!a.iter().any(|x| x.starts_with("--partition")), "{a:?}");
        assert!(!a.iter().any(|x| x.starts_with("--account")), "{a:?}");
        spec.limits.gpus = Some(crate::Gpus {
            kind: None,
            count: 2,
        });
        let a = args(&spec);
        let gres: Vec<&String> = a.iter().filter(|x| x.starts_with("--gres")).collect();
        assert_eq!(gres, ["--gres=gpu:2"]);
    }

    /// A retry writes in a folder of its own; when it reports, its output
    /// and log take the place the engine reads, and the first attempt's
    /// partial output is moved aside, never mixed in.
    #[test]
    fn a_retry_writes_apart_and_only_its_output_is_adopted() {
        let scratch = tempfile::tempdir().unwrap();
        let spec = StepSpec {
            step: "train".into(),
            image: ImageDigest::from_hash(repro_store::Hash::of(b"i")),
            argv: vec!["true".into()],
            env: Default::default(),
            inputs: Vec::new(),
            output: scratch.path().join("out"),
            log: scratch.path().join("log"),
            limits: crate::Limits {
                memory_bytes: None,
                cpus: None,
                timeout: Duration::from_secs(60),
                pids: 64,
                gpus: None,
            },
        };
        // The first attempt left half an output and a log.
        std::fs::create_dir(&spec.output).unwrap();
        std::fs::write(spec.output.join("model.txt"), "half").unwrap();
        std::fs::write(&spec.log, "first").unwrap();
        let second = retry_spec(&spec, 2).unwrap();
        assert_eq!(second.step, spec.step);
        assert_eq!(second.argv, spec.argv);
        let dir = scratch.path().join("slurm-attempt-2");
        assert_eq!(second.output, dir.join("out"));
        assert_eq!(second.log, dir.join("log"));
        assert!(dir.is_dir());
        std::fs::create_dir(&second.output).unwrap();
        std::fs::write(second.output.join("model.txt"), "whole").unwrap();
        std::fs::write(&second.log, "second").unwrap();
        adopt(&spec, &second).unwrap();
        let files: Vec<_> = std::fs::read_dir(&spec.output)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["model.txt"]);
        assert_eq!(
            std::fs::read_to_string(spec.output.join("model.txt")).unwrap(),
            "whole"
        );
        assert_eq!(std::fs::read_to_string(&spec.log).unwrap(), "second");
        assert_eq!(
            std::fs::read_to_string(dir.join("first-attempt-out/model.txt")).unwrap(),
            "half"
        );
        assert!(!second.output.exists());
    }
}
