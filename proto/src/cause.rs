//! One invalid field of a refused object, as Kubernetes reports it in `Status.details.causes`.

/// One invalid field, reported in `details.causes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
}

impl Cause {
    /// A value that is present but wrong.
    pub fn invalid(field: impl Into<String>, value: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value:?}: {why}"),
            field: field.into(),
        }
    }
    /// A value that must be present.
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }
    /// A value that may not change.
    pub fn immutable(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: "field is immutable".into(),
            field: field.into(),
        }
    }
    /// A change that is not allowed.
    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {why}"),
            field: field.into(),
        }
    }
    /// A value that is not one of the supported ones.
    pub fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                allowed.join(", ")
            ),
            field: field.into(),
        }
    }
}

impl Cause {
    /// The causes as kube-apiserver lists them after `... is invalid: ` (one as is, several in
    /// brackets).
    pub fn summary(causes: &[Cause]) -> String {
        let mut msgs: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        if msgs.len() == 1 {
            msgs.swap_remove(0)
        } else {
            format!("[{}]", msgs.join(", "))
        }
    }
}
