//! Why a file could not be compared in its own format (the explainer then
//! falls back to text or bytes and reports this in the details).

/// A parse failure of one side of a comparison.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Zip archives nested too deeply.
    #[error("zip archives nested too deeply")]
    TooDeep,
    /// Input too large to parse into a tree.
    #[error("input larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Decompressing (or laying out) more than the inputs' size allows.
    #[error("expands past {limit} bytes, the most read for inputs of this size")]
    Expansion {
        /// The budget in bytes.
        limit: u64,
    },
    /// Not a readable zip archive.
    #[error("not a readable zip archive ({side}): {source}")]
    Zip {
        /// `expected` or `actual`.
        side: &'static str,
        /// What the zip reader said.
        source: zip::result::ZipError,
    },
    /// Not a readable `.npy` file.
    #[error("not a readable npy file ({side}): {reason}")]
    Npy {
        /// `expected` or `actual`.
        side: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Not a readable pickle stream.
    #[error("not a readable pickle ({side}) at byte {offset}: {reason}")]
    Pickle {
        /// `expected` or `actual`.
        side: &'static str,
        /// Byte offset in the (decompressed) stream.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// Not a PyTorch file this crate can read.
    #[error("not a readable torch file ({side}): {reason}")]
    Torch {
        /// `expected` or `actual`.
        side: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Not a readable safetensors file.
    #[error("not a readable safetensors file ({side}): {reason}")]
    Safetensors {
        /// `expected` or `actual`.
        side: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Not a readable ONNX model.
    #[error("not a readable ONNX model ({side}) at byte {offset}: {reason}")]
    Onnx {
        /// `expected` or `actual`.
        side: &'static str,
        /// Byte offset in the file.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// Not valid JSON.
    #[error("not valid JSON ({side}): {source}")]
    Json {
        /// `expected` or `actual`.
        side: &'static str,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// Not a readable CSV table.
    #[error("not a readable CSV table ({side}): {source}")]
    Csv {
        /// `expected` or `actual`.
        side: &'static str,
        /// What the reader said.
        source: csv::Error,
    },
    /// Not UTF-8 text without NUL bytes.
    #[error("not UTF-8 text ({side})")]
    NotText {
        /// `expected` or `actual`.
        side: &'static str,
    },
}

/// Result of a format-specific comparison.
pub type Result<T> = std::result::Result<T, Error>;

/// Names the side of a comparison for messages.
pub(crate) fn side(i: usize) -> &'static str {
    if i == 0 {
        "expected"
    } else {
        "actual"
    }
}
