//! The error when the Docker daemon is not there (its own test binary,
//! because it changes `DOCKER_HOST` for the whole process).

use repro_sandbox::{DockerSandbox, Error};

#[tokio::test]
async fn an_unreachable_daemon_is_an_actionable_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("no-docker.sock");
    std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display()));
    let err = DockerSandbox::connect()
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot reach the Docker daemon: "),
        "{text}"
    );
    assert!(
        text.ends_with("\nhint: start it (`dockerd`) or set DOCKER_HOST"),
        "{text}"
    );
}
