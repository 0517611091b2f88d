//! The `Backend` trait from outside the crate, as an engine's tests use it:
//! a fake backend (no root, no Docker) built only from the public API, held
//! as `Arc<dyn Backend>`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use repro_sandbox::{
    Backend, BackendInfo, BackendKind, Error, Limits, Outcome, Result, Sandbox, StepSpec,
    Termination, Variation,
};
use repro_store::{Hash, ImageDigest, Store};
use tokio_util::sync::CancellationToken;

/// The real backends are usable the same way (checked when this compiles).
fn _sandbox_is_a_backend(sandbox: Arc<Sandbox>) -> Arc<dyn Backend> {
    sandbox
}

/// Pretends to run a step: `argv` is `["exit", CODE]`; it writes a log line
/// and one output file, and exits with `CODE`.
#[derive(Default)]
struct Fake {
    ensured: Mutex<HashSet<ImageDigest>>,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

impl Backend for Fake {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn ensure_image<'a>(
        &'a self,
        _store: &'a Store,
        image: &'a ImageDigest,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.ensured.lock().unwrap().insert(*image);
            Ok(())
        })
    }

    fn run_varied<'a>(
        &'a self,
        spec: &'a StepSpec,
        variation: &'a Variation,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            if !variation.is_none() {
                return Err(Error::InvalidSpec {
                    step: spec.step.clone(),
                    why: "the fake backend cannot vary the sandbox".to_string(),
                });
            }
            if !self.ensured.lock().unwrap().contains(&spec.image) {
                return Err(Error::ImageNotEnsured { image: spec.image });
            }
            if cancel.is_cancelled() {
                return Ok(Outcome {
                    termination: Termination::Cancelled,
                    duration: Duration::ZERO,
                });
            }
            std::fs::create_dir_all(&spec.output).map_err(io("create", &spec.output))?;
            std::fs::write(&spec.log, format!("{}\n", spec.argv.join(" ")))
                .map_err(io("write", &spec.log))?;
            let out = spec.output.join("model.bin");
            std::fs::write(&out, b"weights").map_err(io("write", &out))?;
            let code = spec.argv.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            Ok(Outcome {
                termination: Termination::Exited(code),
                duration: Duration::from_millis(5),
            })
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<BackendInfo>> {
        Box::pin(async {
            Ok(BackendInfo {
                backend: "fake".to_string(),
                server_version: "0".to_string(),
                api_version: "none".to_string(),
                os: "linux".to_string(),
                arch: "amd64".to_string(),
                kernel_version: "0".to_string(),
            })
        })
    }
}

fn spec(dir: &Path, step: &str, code: i32) -> StepSpec {
    StepSpec {
        step: step.to_string(),
        image: ImageDigest::from_hash(Hash::of(b"image")),
        argv: vec!["exit".to_string(), code.to_string()],
        env: Default::default(),
        inputs: Vec::new(),
        output: dir.join(step).join("out"),
        log: dir.join(format!("{step}.log")),
        limits: Limits::default(),
    }
}

#[tokio::test]
async fn a_fake_backend_runs_steps_through_arc_dyn_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let backend: Arc<dyn Backend> = Arc::new(Fake::default());
    backend.expect_runs(3);
    assert_eq!(backend.kind(), BackendKind::Native);
    assert_eq!(backend.describe().await.expect("describe").backend, "fake");

    let ok = spec(dir.path(), "train", 0);
    let err = backend
        .run(&ok, CancellationToken::new())
        .await
        .expect_err("the image was not ensured");
    assert!(matches!(err, Error::ImageNotEnsured { .. }), "{err:?}");

    backend
        .ensure_image(&store, &ok.image)
        .await
        .expect("ensure_image");
    // The provided `run` is `run_varied` with no variation; the futures
    // are `Send`, so an engine may spawn them.
    let outcome = tokio::spawn({
        let (backend, ok) = (Arc::clone(&backend), ok.clone());
        async move { backend.run(&ok, CancellationToken::new()).await }
    })
    .await
    .expect("join")
    .expect("run");
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(std::fs::read_to_string(&ok.log).unwrap(), "exit 0\n");
    assert_eq!(
        std::fs::read(ok.output.join("model.bin")).unwrap(),
        b"weights"
    );

    // A failing step is an outcome, not an error.
    let failing = spec(dir.path(), "eval", 3);
    let outcome = backend
        .run_varied(&failing, &Variation::default(), CancellationToken::new())
        .await
        .expect("a failing step still ran");
    assert_eq!(outcome.termination, Termination::Exited(3));
    assert!(!outcome.success());

    let cancel = CancellationToken::new();
    cancel.cancel();
    let outcome = backend
        .run(&spec(dir.path(), "late", 0), cancel)
        .await
        .expect("cancelled");
    assert_eq!(outcome.termination, Termination::Cancelled);

    let varied = Variation {
        hostname: Some("elsewhere".to_string()),
        ..Variation::default()
    };
    let err = backend
        .run_varied(&ok, &varied, CancellationToken::new())
        .await
        .expect_err("the fake cannot vary");
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err:?}");
}
