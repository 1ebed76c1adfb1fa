//! Errors in the Kubernetes field-error style: `path: Type: value: detail`, one
//! per line, so that `lb-proxy check` reads like `kubectl apply` and users can
//! grep for the same texts.

use std::fmt;

/// A value shown in an error, formatted as Go's `%v` would show it in a
/// Kubernetes field error: strings quoted like `%q`, numbers bare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadValue {
    /// A string value (shown quoted).
    Str(String),
    /// A number (shown bare).
    Int(i64),
    /// A list of strings, shown as Go's `%#v` shows a `[]string`
    /// (`[]string{"10.96.0.5"}`): Kubernetes reports `spec.clusterIPs` so.
    StrList(Vec<String>),
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_string())
    }
}

impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}

impl From<&String> for BadValue {
    fn from(s: &String) -> Self {
        BadValue::Str(s.clone())
    }
}

impl From<i64> for BadValue {
    fn from(n: i64) -> Self {
        BadValue::Int(n)
    }
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::Str(s) => f.write_str(&go_quote(s)),
            BadValue::Int(n) => write!(f, "{n}"),
            BadValue::StrList(items) => {
                let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
                write!(f, "[]string{{{}}}", quoted.join(", "))
            }
        }
    }
}

/// Quotes a string the way Go's `%q` does (for the characters that matter in a
/// config file: quotes, backslashes and control characters are escaped).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Kubernetes' `field.ErrorType`: what kind of mistake a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Invalid value: <value>: <detail>`.
    Invalid(BadValue),
    /// `Required value` (a detail may follow).
    Required,
    /// `Duplicate value: <value>`.
    Duplicate(BadValue),
    /// `Unsupported value: <value>: <detail>`; the detail lists the supported
    /// values, or says that support comes later.
    NotSupported(BadValue),
    /// `Forbidden: <detail>`.
    Forbidden,
    /// `Too many: <count>: must have at most <max> items`: a list longer
    /// than its bound (`field.TooMany`).
    TooMany(i64),
    /// `Internal error: <detail>` (e.g. an allocation range is full).
    Internal,
    /// The file could not be read as TOML of the right shape (syntax, unknown
    /// key, wrong type): `<detail>` alone.
    Parse,
}

/// Where in a file an error is: what an editor jumps to (`FILE:LINE:COLUMN`,
/// as compilers print it), besides the field's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as given on the command line.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column (characters), from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One error: where (a path such as `services[web].ports[0].node_port`), what
/// kind, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where in its file, when the error comes from a file and the path
    /// could be found in it; printed first.
    pub location: Option<Location>,
    /// Path of the field, objects named `kind[NAME]` or `kind[NAMESPACE/NAME]`.
    pub path: String,
    /// The error type, with the bad value where it has one.
    pub kind: ErrorKind,
    /// Human explanation (may be empty).
    pub detail: String,
}

impl FieldError {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::Invalid(value.into()),
            detail: detail.into(),
        }
    }

    /// `Required value[: <detail>]`.
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::Required,
            detail: detail.into(),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(path: impl Into<String>, value: impl Into<BadValue>) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::Duplicate(value.into()),
            detail: String::new(),
        }
    }

    /// `Unsupported value: <value>: supported values: "A", "B"`.
    pub fn not_supported(
        path: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::NotSupported(value.into()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// `Unsupported value: <value>: <detail>` with a free-form detail (used for
    /// features that come with a later release).
    pub fn not_supported_because(
        path: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::NotSupported(value.into()),
            detail: detail.into(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    /// `Too many: <actual>: must have at most <max> items`, Kubernetes'
    /// `field.TooMany` for a list longer than its bound.
    pub fn too_many(path: impl Into<String>, actual: usize, max: usize) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::TooMany(i64::try_from(actual).unwrap_or(i64::MAX)),
            detail: format!("must have at most {max} items"),
        }
    }

    /// `Internal error: <detail>`.
    pub fn internal(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::Internal,
            detail: detail.into(),
        }
    }

    /// A parse error: `<path>: <detail>`.
    pub fn parse(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            location: None,
            path: path.into(),
            kind: ErrorKind::Parse,
            detail: detail.into(),
        }
    }
}

impl FieldError {
    /// The same error, located at `location` in its file.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        match &self.kind {
            ErrorKind::Invalid(v) => write!(f, "Invalid value: {v}")?,
            ErrorKind::Required => f.write_str("Required value")?,
            ErrorKind::Duplicate(v) => write!(f, "Duplicate value: {v}")?,
            ErrorKind::NotSupported(v) => write!(f, "Unsupported value: {v}")?,
            ErrorKind::Forbidden => f.write_str("Forbidden")?,
            ErrorKind::TooMany(n) => write!(f, "Too many: {n}")?,
            ErrorKind::Internal => f.write_str("Internal error")?,
            ErrorKind::Parse => return f.write_str(&self.detail),
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every error found in one config, in file order. `Display` prints one error
/// per line, as `lb-proxy check` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The errors.
    pub errors: Vec<FieldError>,
}

impl ConfigErrors {
    /// The errors as display lines (handy for tests and logs).
    pub fn lines(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.to_string()).collect()
    }

    /// A single error that is not about a field (e.g. the file cannot be read).
    pub fn single(error: FieldError) -> Self {
        ConfigErrors {
            errors: vec![error],
        }
    }

    /// The first `max` errors, one per line and each cut at
    /// [`SUMMARY_LINE_BYTES`], then `... and N more`: what a running proxy
    /// logs and keeps of a failed reload, so a file with 10,000 errors (or
    /// a 1 MB value quoted in one) cannot flood the log or the events.
    /// `lb-proxy check` prints them all.
    pub fn summary(&self, max: usize) -> String {
        let mut out = String::new();
        for (i, e) in self.errors.iter().take(max).enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let line = e.to_string();
            if line.len() > SUMMARY_LINE_BYTES {
                out.push_str(&line[..floor_char(&line, SUMMARY_LINE_BYTES)]);
                out.push_str(" [...]");
            } else {
                out.push_str(&line);
            }
        }
        let more = self.errors.len().saturating_sub(max);
        if more > 0 {
            out.push_str(&format!("\n... and {more} more"));
        }
        out
    }
}

/// The longest line of one error that [`ConfigErrors::summary`] keeps.
pub const SUMMARY_LINE_BYTES: usize = 512;

/// The largest char boundary of `s` at or below `at`.
fn floor_char(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Errors of the file watcher.
#[cfg(feature = "watch")]
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path has no parent directory to watch.
    #[error("cannot watch {path}: it has no parent directory")]
    NoParent {
        /// The config path.
        path: String,
    },
    /// The OS watch could not be set up.
    #[error("cannot watch {path}: {source}")]
    Notify {
        /// The directory being watched.
        path: String,
        /// The underlying error.
        #[source]
        source: notify::Error,
    },
}

/// Collects errors while validating; object paths are built by the caller.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    pub(crate) list: Vec<FieldError>,
}

impl Errors {
    pub(crate) fn push(&mut self, e: FieldError) {
        self.list.push(e);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// A field's path, written out only when an error names it: validating
/// 100,000 endpoint addresses formatted half a million paths (a third of a
/// load) that no error ever used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum At<'a> {
    /// A path already written.
    Text(&'a str),
    /// `PARENT[INDEX]`.
    Index(&'a At<'a>, usize),
    /// `PARENT.FIELD`.
    Field(&'a At<'a>, &'a str),
}

impl<'a> At<'a> {
    /// `self[index]`.
    pub(crate) fn index(&'a self, index: usize) -> At<'a> {
        At::Index(self, index)
    }

    /// `self.name`.
    pub(crate) fn field(&'a self, name: &'a str) -> At<'a> {
        At::Field(self, name)
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Text(path) => f.write_str(path),
            At::Index(parent, index) => write!(f, "{parent}[{index}]"),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// The path of an object: `kind[NAME]` in namespace `default`, else
/// `kind[NAMESPACE/NAME]`; `kind[INDEX]` when the name is missing.
pub(crate) fn object_path(kind: &str, namespace: &str, name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("{kind}[{index}]")
    } else if namespace.is_empty() || namespace == "default" {
        format!("{kind}[{name}]")
    } else {
        format!("{kind}[{namespace}/{name}]")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_summary_keeps_the_first_errors_cuts_long_lines_and_counts_the_rest() {
        let errors = ConfigErrors {
            errors: (0..250)
                .map(|i| FieldError::parse(format!("services[{i}]"), "x".repeat(i * 10)))
                .collect(),
        };
        let summary = errors.summary(100);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(lines.len(), 101);
        assert!(lines[0].starts_with("services[0]"));
        assert_eq!(lines[100], "... and 150 more");
        assert!(lines.iter().all(|l| l.len() <= SUMMARY_LINE_BYTES + 6));
        assert!(lines[99].ends_with(" [...]"));
        let few = ConfigErrors::single(FieldError::parse("a", "é".repeat(600)));
        assert!(few.summary(100).ends_with(" [...]"));
    }

    use super::*;

    #[test]
    fn formats_like_kubernetes_field_errors() {
        let e = FieldError::invalid(
            "services[nginx-service].ports[0].node_port",
            80,
            "provided port is not in the valid range. The range of valid ports is 30000-32767",
        );
        assert_eq!(
            e.to_string(),
            "services[nginx-service].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        assert_eq!(
            FieldError::invalid("x", "Foo_bar", "d").to_string(),
            "x: Invalid value: \"Foo_bar\": d"
        );
        assert_eq!(
            FieldError::required("a.b", "").to_string(),
            "a.b: Required value"
        );
        assert_eq!(
            FieldError::not_supported("t", "X", &["A", "B"]).to_string(),
            "t: Unsupported value: \"X\": supported values: \"A\", \"B\""
        );
        assert_eq!(
            FieldError::too_many("proxy.connect_timeouts_ms", 100_000, 16).to_string(),
            "proxy.connect_timeouts_ms: Too many: 100000: must have at most 16 items"
        );
        assert_eq!(
            FieldError::forbidden("p", "not supported yet").to_string(),
            "p: Forbidden: not supported yet"
        );
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn object_paths_drop_the_default_namespace() {
        assert_eq!(
            object_path("services", "default", "web", 0),
            "services[web]"
        );
        assert_eq!(
            object_path("services", "prod", "web", 0),
            "services[prod/web]"
        );
        assert_eq!(object_path("pods", "default", "", 3), "pods[3]");
    }
}
