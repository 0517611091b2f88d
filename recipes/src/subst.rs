//! Parameter values and their `${params.NAME}` substitution in `argv` and
//! `env` values. A leaf: it uses nothing else of the crate.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// A parameter's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A TOML string.
    String(String),
    /// A TOML integer.
    Integer(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML boolean.
    Bool(bool),
}

impl fmt::Display for ParamValue {
    /// As substituted: strings as they are, the others as TOML writes them
    /// (`42`, `0.5`, `2.0`, `1e100`, `inf`, `true`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::String(s) => f.write_str(s),
            ParamValue::Integer(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{}", toml::Value::Float(*x)),
            ParamValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Why a string could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubstError {
    /// `${params.NAME}` with no such parameter.
    Unknown(String),
    /// A `$` that starts neither `$$` nor `${params.NAME}`.
    Malformed(String),
}

/// Replace every `${params.NAME}` in `text` by the parameter's value and
/// every `$$` by `$`. Any other `$` is an error, so that a typo such as
/// `$params.seed` or a shell variable meant literally is caught early.
pub(crate) fn substitute(
    text: &str,
    params: &BTreeMap<String, ParamValue>,
) -> Result<String, SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(SubstError::Malformed(format!(
                    "`${{` without a closing `}}` in `{text}`"
                )));
            };
            let inner = &tail[..end];
            let Some(name) = inner.strip_prefix("params.") else {
                return Err(SubstError::Malformed(format!(
                    "`${{{inner}}}` is not a parameter reference"
                )));
            };
            match params.get(name) {
                Some(value) => out.push_str(&value.to_string()),
                None => return Err(SubstError::Unknown(name.to_string())),
            }
            rest = &tail[end + 1..];
        } else {
            return Err(SubstError::Malformed(format!("lone `$` in `{text}`")));
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, ParamValue> {
        BTreeMap::from([
            ("seed".to_string(), ParamValue::Integer(42)),
            ("lr".to_string(), ParamValue::Float(0.5)),
            ("whole".to_string(), ParamValue::Float(2.0)),
            ("name".to_string(), ParamValue::String("a b".to_string())),
            ("on".to_string(), ParamValue::Bool(true)),
        ])
    }

    #[test]
    fn replaces_params_and_escapes() {
        let p = params();
        assert_eq!(
            substitute("--seed=${params.seed}", &p).unwrap(),
            "--seed=42"
        );
        assert_eq!(
            substitute("${params.lr}${params.whole}", &p).unwrap(),
            "0.52.0"
        );
        assert_eq!(
            substitute("${params.name}/${params.on}", &p).unwrap(),
            "a b/true"
        );
        assert_eq!(
            substitute("cost $$5 $${params.seed}", &p).unwrap(),
            "cost $5 ${params.seed}"
        );
        assert_eq!(substitute("plain", &p).unwrap(), "plain");
    }

    #[test]
    fn refuses_unknown_and_malformed() {
        let p = params();
        assert_eq!(
            substitute("${params.sed}", &p),
            Err(SubstError::Unknown("sed".into()))
        );
        assert!(matches!(
            substitute("$HOME", &p),
            Err(SubstError::Malformed(_))
        ));
        assert!(matches!(
            substitute("${HOME}", &p),
            Err(SubstError::Malformed(_))
        ));
        assert!(matches!(
            substitute("${params.seed", &p),
            Err(SubstError::Malformed(_))
        ));
        assert!(matches!(
            substitute("end$", &p),
            Err(SubstError::Malformed(_))
        ));
    }
}
