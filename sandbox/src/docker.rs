//! The Docker backend: one short-lived container per step, through the
//! Docker Engine API (`bollard`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, KillContainerOptions, LogOutput,
    RemoveContainerOptions, WaitContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::image::ImportImageOptions;
use bollard::models::{HostConfig, ImageInspect, Mount as DockerMount, MountTypeEnum};
use bollard::Docker;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use repro_store::{BlobDigest, ImageDigest, Store};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::backend::BackendInfo;
use crate::contract::{GID, HOSTNAME, IN_DIR, OUT_DIR, UID, WORKDIR};
use crate::error::{Error, Result};
use crate::outcome::{Outcome, Termination};
use crate::spec::StepSpec;

/// The label every sandbox container carries; its value is the step name.
/// `docker ps -a --filter label=repro.step` lists leftovers (there should be
/// none).
pub const LABEL_STEP: &str = "repro.step";

/// How long to wait for the daemon to answer when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The request timeout for long requests (image loads, waits): the step's
/// own timeout is enforced separately.
const LONG_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long to wait for the log stream to drain once the step has ended.
const LOG_DRAIN: Duration = Duration::from_secs(30);
/// How long to wait for a killed container to stop.
const KILL_WAIT: Duration = Duration::from_secs(60);
/// The size of `/tmp` when the step has no memory limit.
const DEFAULT_TMP_BYTES: u64 = 1 << 30;
/// Chunk size of the image archive sent to the daemon.
const CHUNK: usize = 256 * 1024;

/// What `ensure_image` learned about a loaded image.
#[derive(Debug, Clone)]
struct Loaded {
    /// The daemon's image ID: the config digest, `sha256:<hex>`.
    id: String,
}

/// Runs steps in Docker containers under the sandbox contract (see the
/// crate docs).
#[derive(Debug)]
pub struct DockerSandbox {
    /// For short requests (default timeout).
    docker: Docker,
    /// For requests that last as long as a load or a step.
    long: Docker,
    /// Images loaded (or found) by `ensure_image`, by manifest digest.
    loaded: Mutex<HashMap<ImageDigest, Loaded>>,
}

fn daemon(action: impl Into<String>) -> impl FnOnce(BollardError) -> Error {
    let action = action.into();
    move |source| Error::Daemon { action, source }
}

fn is_status(e: &BollardError, codes: &[u16]) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

impl DockerSandbox {
    /// Connect to the local Docker daemon (`DOCKER_HOST` or the default
    /// socket) and negotiate the API version.
    pub async fn connect() -> Result<Self> {
        let unreachable = |e: String| Error::Unreachable(e);
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(CONNECT_TIMEOUT, docker.ping())
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let long = docker.clone().with_timeout(LONG_TIMEOUT);
        Ok(DockerSandbox {
            docker,
            long,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// Write the image `reference` (a tag or an ID known to the daemon) as a
    /// `docker save` archive to `dest`, streamed. Used to pin a toolchain
    /// given by tag: the archive is then imported into the store.
    pub async fn save_image(&self, reference: &str, dest: &Path) -> Result<()> {
        self.long
            .inspect_image(reference)
            .await
            .map_err(daemon(format!("find the image `{reference}`")))?;
        let io = |action: &'static str| {
            let path = dest.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(io("create the image archive"))?;
        let mut stream = self.long.export_image(reference);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(daemon(format!("export the image `{reference}`")))?;
            file.write_all(&chunk)
                .await
                .map_err(io("write the image archive"))?;
        }
        file.sync_all()
            .await
            .map_err(io("write the image archive"))?;
        Ok(())
    }

    /// The engine's name and versions, for the build record.
    pub async fn describe(&self) -> Result<BackendInfo> {
        let v = self
            .docker
            .version()
            .await
            .map_err(daemon("report its version"))?;
        let s = |o: Option<String>| o.unwrap_or_default();
        Ok(BackendInfo {
            backend: "docker".to_string(),
            server_version: s(v.version),
            api_version: self.docker.client_version().to_string(),
            os: s(v.os),
            arch: s(v.arch),
            kernel_version: s(v.kernel_version),
        })
    }

    /// Make sure the daemon has `image` from `store`.
    ///
    /// The daemon's image ID is the image's config digest, so an image whose
    /// ID equals the config digest recorded in the store is the image. When
    /// the daemon lacks it, the store writes a `docker save`-style archive
    /// into a pipe that streams into the daemon's image load (nothing is
    /// buffered whole), and the loaded ID is checked against the config
    /// digest. Must be called before [`run`](Self::run) for each image; it
    /// is one inspect request when the daemon already has the image.
    pub async fn ensure_image(&self, store: &Store, image: &ImageDigest) -> Result<()> {
        let info = store.get_image(image).map_err(|source| Error::Store {
            image: *image,
            source,
        })?;
        let config = info.config;
        let id = config.to_string();
        let found = match self.find_image(&id).await? {
            Some(found) => found,
            None => {
                self.load(store, image, &config).await?;
                self.find_image(&id)
                    .await?
                    .ok_or_else(|| Error::ImageMismatch {
                        image: *image,
                        expected: config,
                        actual: "an image with another ID".to_string(),
                    })?
            }
        };
        // A `VOLUME` would be a writable place outside `/repro/out` and
        // `/tmp` that Docker fills from the image and keeps.
        let mut volumes: Vec<String> = found
            .config
            .and_then(|c| c.volumes)
            .map(|v| v.into_keys().collect())
            .unwrap_or_default();
        if !volumes.is_empty() {
            volumes.sort();
            return Err(Error::ImageVolumes {
                image: *image,
                volumes: volumes.join("`, `"),
            });
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.insert(*image, Loaded { id });
        Ok(())
    }

    /// The daemon's description of the image whose ID is `id`, if it has it.
    async fn find_image(&self, id: &str) -> Result<Option<ImageInspect>> {
        match self.docker.inspect_image(id).await {
            Ok(found) if found.id.as_deref() == Some(id) => Ok(Some(found)),
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, &[404]) => Ok(None),
            Err(e) => Err(daemon(format!("inspect image `{id}`"))(e)),
        }
    }

    /// Stream the store's archive of `image` into the daemon.
    async fn load(&self, store: &Store, image: &ImageDigest, config: &BlobDigest) -> Result<()> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let reader_gone = Arc::new(AtomicBool::new(false));
        let writer = {
            let store = store.clone();
            let image = *image;
            let reader_gone = reader_gone.clone();
            tokio::task::spawn_blocking(move || {
                let mut pipe = PipeWriter {
                    tx,
                    buf: Vec::with_capacity(CHUNK),
                    reader_gone,
                };
                store.write_docker_archive(&image, &mut pipe)?;
                pipe.flush().map_err(|err| repro_store::Error::Io {
                    action: "stream",
                    path: PathBuf::from("docker load"),
                    err,
                })
            })
        };
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let mut progress =
            self.long
                .import_image_stream(ImportImageOptions { quiet: true }, body, None);
        let mut messages = Vec::new();
        let mut load_error = None;
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => messages.extend(info.stream),
                Err(e) => {
                    load_error = Some(e);
                    break;
                }
            }
        }
        // Dropping the request drops the pipe's reader, so a writer blocked
        // on a full pipe wakes up with an error instead of hanging.
        drop(progress);
        let written = writer.await.map_err(|e| Error::Load {
            image: *image,
            why: e.to_string(),
        })?;
        match (written, load_error) {
            (Err(source), _) if !reader_gone.load(Ordering::SeqCst) => Err(Error::Store {
                image: *image,
                source,
            }),
            (_, Some(e)) => Err(daemon(format!("load image `{image}`"))(e)),
            (Err(source), None) => Err(Error::Load {
                image: *image,
                why: source.to_string(),
            }),
            (Ok(()), None) => {
                let said = messages.concat();
                let want = config.to_string();
                match said.split("Loaded image ID: ").nth(1).map(str::trim) {
                    Some(got) if got != want => Err(Error::ImageMismatch {
                        image: *image,
                        expected: *config,
                        actual: got.to_string(),
                    }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Run one step in a fresh container and remove the container afterwards.
    ///
    /// Returns `Ok` with the outcome whenever the step ran, whatever its exit
    /// code; `Err` only when the sandbox or the daemon failed. When `cancel`
    /// fires, the container is killed and removed and the outcome is
    /// [`Termination::Cancelled`].
    pub async fn run(&self, spec: &StepSpec, cancel: CancellationToken) -> Result<Outcome> {
        spec.validate()?;
        let image = {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded
                .get(&spec.image)
                .cloned()
                .ok_or(Error::ImageNotEnsured { image: spec.image })?
        };
        if cancel.is_cancelled() {
            return Ok(Outcome {
                termination: Termination::Cancelled,
                duration: Duration::ZERO,
            });
        }
        let inputs = prepare_inputs(spec).await?;
        let output = prepare_output(spec).await?;
        let log = open_log(&spec.log).await?;

        let config = container_config(spec, &image.id, &inputs, &output);
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions<String>>, config)
            .await
            .map_err(|e| {
                if is_status(&e, &[404]) {
                    Error::ImageNotEnsured { image: spec.image }
                } else {
                    daemon(format!("create the container of step `{}`", spec.step))(e)
                }
            })?;
        let mut guard = Guard {
            docker: self.docker.clone(),
            id: Some(created.id.clone()),
        };
        let result = self.drive(&created.id, spec, log, cancel).await;
        let removed = guard.remove().await;
        let outcome = result?;
        removed.map_err(daemon(format!(
            "remove the container of step `{}`",
            spec.step
        )))?;
        Ok(outcome)
    }

    /// Attach, start, wait (with timeout and cancellation), collect the log
    /// and the exit state of a created container.
    async fn drive(
        &self,
        id: &str,
        spec: &StepSpec,
        log: tokio::fs::File,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        let step = spec.step.as_str();
        let attached = self
            .long
            .attach_container(
                id,
                Some(AttachContainerOptions::<String> {
                    stdout: Some(true),
                    stderr: Some(true),
                    stream: Some(true),
                    // Attached before the start: nothing is missed.
                    logs: Some(false),
                    ..Default::default()
                }),
            )
            .await
            .map_err(daemon(format!("attach to the container of step `{step}`")))?;
        let log_path = spec.log.clone();
        let mut pump = tokio::spawn(pump_log(attached.output, log, log_path));

        self.docker
            .start_container::<String>(id, None)
            .await
            .map_err(|source| {
                if source.to_string().contains("executable file not found") {
                    Error::NoEnvProgram {
                        step: step.to_string(),
                        image: spec.image,
                        source,
                    }
                } else {
                    daemon(format!("start the container of step `{step}`"))(source)
                }
            })?;
        let started = Instant::now();

        let stopped = tokio::select! {
            biased;
            () = cancel.cancelled() => Some(Termination::Cancelled),
            () = tokio::time::sleep(spec.limits.timeout) => Some(Termination::TimedOut),
            waited = self.wait(id) => {
                waited.map_err(daemon(format!("wait for the container of step `{step}`")))?;
                None
            }
        };
        let duration = started.elapsed();
        if stopped.is_some() {
            let kill = KillContainerOptions { signal: "SIGKILL" };
            match self.docker.kill_container(id, Some(kill)).await {
                // 409: it stopped in the meantime.
                Err(e) if !is_status(&e, &[404, 409]) => {
                    return Err(daemon(format!("kill the container of step `{step}`"))(e));
                }
                _ => {}
            }
            // Bounded: a container that ignores SIGKILL is removed by force.
            let _ = tokio::time::timeout(KILL_WAIT, self.wait(id)).await;
        }

        let drained = tokio::time::timeout(LOG_DRAIN, &mut pump).await;
        match drained {
            Ok(Ok(written)) => written?,
            Ok(Err(join)) => {
                return Err(Error::Io {
                    action: "write the log",
                    path: spec.log.clone(),
                    source: std::io::Error::other(join.to_string()),
                })
            }
            // The stream did not end: keep what was written.
            Err(_) => pump.abort(),
        }

        let termination = match stopped {
            Some(t) => t,
            None => {
                let inspected = self
                    .docker
                    .inspect_container(id, None)
                    .await
                    .map_err(daemon(format!("inspect the container of step `{step}`")))?;
                let state = inspected.state.unwrap_or_default();
                if state.oom_killed == Some(true) {
                    Termination::OutOfMemory
                } else {
                    let code = state.exit_code.unwrap_or(-1);
                    Termination::Exited(i32::try_from(code).unwrap_or(-1))
                }
            }
        };
        Ok(Outcome {
            termination,
            duration,
        })
    }

    /// Wait until the container is not running.
    async fn wait(&self, id: &str) -> Result<(), BollardError> {
        let options = WaitContainerOptions {
            condition: "not-running",
        };
        let mut waiting = self.long.wait_container(id, Some(options));
        match waiting.next().await {
            // bollard reports a non-zero exit as an error; the exit code is
            // read from the container's state afterwards.
            None | Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) => Ok(()),
            Some(Err(e)) => Err(e),
        }
    }
}

/// Removes its container when dropped, unless already removed: the
/// last-resort cleanup when the `run` future is dropped mid-way.
struct Guard {
    docker: Docker,
    id: Option<String>,
}

impl Guard {
    async fn remove(&mut self) -> Result<(), BollardError> {
        let Some(id) = self.id.take() else {
            return Ok(());
        };
        remove_container(&self.docker, &id).await
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), BollardError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Err(e) if is_status(&e, &[404]) => Ok(()),
        other => other,
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let docker = self.docker.clone();
                runtime.spawn(async move {
                    let _ = remove_container(&docker, &id).await;
                });
            }
        }
    }
}

/// Copy the container's output into the log file as it arrives.
async fn pump_log(
    mut output: impl Stream<Item = Result<LogOutput, BollardError>> + Unpin,
    mut log: tokio::fs::File,
    path: PathBuf,
) -> Result<()> {
    let io = |source| Error::Io {
        action: "write the log",
        path: path.clone(),
        source,
    };
    while let Some(item) = output.next().await {
        let chunk = match item {
            Ok(chunk) => chunk.into_bytes(),
            // The connection broke: the log ends here, the exit state is
            // read separately.
            Err(_) => break,
        };
        log.write_all(&chunk).await.map_err(io)?;
    }
    log.flush().await.map_err(io)?;
    log.sync_all().await.map_err(io)?;
    Ok(())
}

/// Canonical host paths of the inputs, each checked to be a directory.
async fn prepare_inputs(spec: &StepSpec) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::with_capacity(spec.inputs.len());
    for m in &spec.inputs {
        let io = |source| Error::Io {
            action: "use input directory",
            path: m.host.clone(),
            source,
        };
        let host = tokio::fs::canonicalize(&m.host).await.map_err(io)?;
        let meta = tokio::fs::metadata(&host).await.map_err(io)?;
        if !meta.is_dir() {
            return Err(io(std::io::Error::other("not a directory")));
        }
        out.push((m.name.clone(), host));
    }
    Ok(out)
}

/// Create the output directory if needed, check that it is empty, and make
/// it writable by the step's user.
async fn prepare_output(spec: &StepSpec) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = &spec.output;
    let io = |action| {
        move |source| Error::Io {
            action,
            path: path.clone(),
            source,
        }
    };
    tokio::fs::create_dir_all(path)
        .await
        .map_err(io("create output directory"))?;
    let host = tokio::fs::canonicalize(path)
        .await
        .map_err(io("use output directory"))?;
    let mut entries = tokio::fs::read_dir(&host)
        .await
        .map_err(io("read output directory"))?;
    if entries
        .next_entry()
        .await
        .map_err(io("read output directory"))?
        .is_some()
    {
        return Err(Error::OutputNotEmpty {
            step: spec.step.clone(),
            path: path.clone(),
        });
    }
    let mode = std::fs::Permissions::from_mode(0o777);
    tokio::fs::set_permissions(&host, mode)
        .await
        .map_err(io("make writable output directory"))?;
    Ok(host)
}

/// Create (or truncate) the log file, and its directory.
async fn open_log(path: &Path) -> Result<tokio::fs::File> {
    let io = |action| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io("create the log directory"))?;
    }
    tokio::fs::File::create(path)
        .await
        .map_err(io("create the log file"))
}

/// The command the container runs: `env -i -- NAME=VALUE... argv...`, so the
/// step sees exactly `env` (Docker would add `HOSTNAME` and the image's
/// `Env`).
fn entrypoint(argv: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let mut cmd = vec!["env".to_string(), "-i".to_string(), "--".to_string()];
    cmd.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    cmd.extend(argv.iter().cloned());
    cmd
}

/// The container's configuration: the whole contract in one place.
fn container_config(
    spec: &StepSpec,
    image_id: &str,
    inputs: &[(String, PathBuf)],
    output: &Path,
) -> Config<String> {
    let bind = |source: &Path, target: String, read_only: bool| DockerMount {
        target: Some(target),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountTypeEnum::BIND),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut mounts: Vec<DockerMount> = inputs
        .iter()
        .map(|(name, host)| bind(host, format!("{IN_DIR}/{name}"), true))
        .collect();
    mounts.push(bind(output, OUT_DIR.to_string(), false));

    let limits = &spec.limits;
    let memory = limits.memory_bytes.and_then(|m| i64::try_from(m).ok());
    let tmp_bytes = limits.memory_bytes.unwrap_or(DEFAULT_TMP_BYTES);
    let tmpfs = HashMap::from([(
        WORKDIR.to_string(),
        format!("rw,nosuid,nodev,exec,size={tmp_bytes},mode=1777"),
    )]);
    let host_config = HostConfig {
        mounts: Some(mounts),
        tmpfs: Some(tmpfs),
        readonly_rootfs: Some(true),
        network_mode: Some("none".to_string()),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        privileged: Some(false),
        ipc_mode: Some("private".to_string()),
        pids_limit: i64::try_from(limits.pids).ok(),
        memory,
        memory_swap: memory,
        nano_cpus: limits.cpus.map(|c| (c * 1e9).round() as i64),
        auto_remove: Some(false),
        ..Default::default()
    };
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Config {
        image: Some(image_id.to_string()),
        hostname: Some(HOSTNAME.to_string()),
        domainname: Some(String::new()),
        user: Some(format!("{UID}:{GID}")),
        working_dir: Some(WORKDIR.to_string()),
        env: Some(env),
        entrypoint: Some(entrypoint(&spec.argv, &spec.env)),
        cmd: None,
        network_disabled: Some(true),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        labels: Some(HashMap::from([(LABEL_STEP.to_string(), spec.step.clone())])),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The writing end of the pipe from the store's archive writer (a blocking
/// thread) to the daemon's image load.
struct PipeWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    reader_gone: Arc<AtomicBool>,
}

impl PipeWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(chunk).map_err(|_| {
            self.reader_gone.store(true, Ordering::SeqCst);
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the Docker daemon stopped reading",
            )
        })
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Limits, Mount};
    use repro_store::Hash;

    fn spec() -> StepSpec {
        StepSpec {
            step: "train".into(),
            image: ImageDigest::from_hash(Hash::of(b"m")),
            argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
            env: BTreeMap::from([("PATH".into(), "/bin".into()), ("A".into(), "x=y".into())]),
            inputs: vec![Mount {
                name: "data".into(),
                host: "/h/d".into(),
                tree: None,
            }],
            output: "/h/o".into(),
            log: "/h/log".into(),
            limits: Limits {
                memory_bytes: Some(64 << 20),
                cpus: Some(1.5),
                timeout: Duration::from_secs(5),
                pids: 100,
                gpus: None,
            },
        }
    }

    #[test]
    fn the_container_config_carries_the_contract() {
        let s = spec();
        let inputs = vec![("data".to_string(), PathBuf::from("/h/d"))];
        let c = container_config(&s, "sha256:abc", &inputs, Path::new("/h/o"));
        assert_eq!(c.image.as_deref(), Some("sha256:abc"));
        assert_eq!(c.user.as_deref(), Some("65534:65534"));
        assert_eq!(c.hostname.as_deref(), Some("repro"));
        assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(
            c.entrypoint.as_deref(),
            Some(
                &[
                    "env",
                    "-i",
                    "--",
                    "A=x=y",
                    "PATH=/bin",
                    "python3",
                    "-c",
                    "print(1)"
                ]
                .map(String::from)[..]
            )
        );
        assert_eq!(c.cmd, None);
        let h = c.host_config.expect("host config");
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(h.memory, Some(64 << 20));
        assert_eq!(h.memory_swap, Some(64 << 20));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.pids_limit, Some(100));
        let tmpfs = h.tmpfs.expect("tmpfs");
        assert!(
            tmpfs["/tmp"].contains(&format!("size={}", 64 << 20)),
            "{tmpfs:?}"
        );
        let mounts = h.mounts.expect("mounts");
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target.as_deref(), Some("/repro/in/data"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].target.as_deref(), Some("/repro/out"));
        assert_eq!(mounts[1].read_only, Some(false));
    }

    #[test]
    fn pipe_writer_sends_everything_in_order_and_notices_a_gone_reader() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let gone = Arc::new(AtomicBool::new(false));
        let mut w = PipeWriter {
            tx,
            buf: Vec::new(),
            reader_gone: gone.clone(),
        };
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).expect("write");
        w.flush().expect("flush");
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
        drop(rx);
        w.write_all(b"x").expect("buffered");
        assert_eq!(
            w.flush().expect_err("reader gone").kind(),
            std::io::ErrorKind::BrokenPipe
        );
        assert!(gone.load(Ordering::SeqCst));
    }
}
