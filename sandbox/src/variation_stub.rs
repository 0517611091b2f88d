//! Temporary: variations are being implemented in the native backend.

use tokio_util::sync::CancellationToken;

use crate::native::{Error, NativeSandbox};
use crate::{Outcome, StepSpec, Variation};

impl NativeSandbox {
    /// Run with deliberate changes to the contract (being implemented).
    pub async fn run_varied(
        &self,
        spec: &StepSpec,
        variation: &Variation,
        cancel: CancellationToken,
    ) -> Result<Outcome, Error> {
        if variation.is_none() {
            return self.run(spec, cancel).await;
        }
        Err(Error::Setup {
            step: spec.step.clone(),
            why: "variations are not implemented yet".into(),
        })
    }
}
