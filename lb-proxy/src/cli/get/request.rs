//! What `lb-proxy get` was asked, read from its arguments as kubectl reads
//! them (`TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...`), with kubectl's
//! refusals word for word.

use crate::cli::selector::{Selector, SelectorError};
use crate::ops::views::{CONNECTIONS_PATH, ENDPOINTS_PATH, EVENTS_PATH, PODS_PATH, SERVICES_PATH};

/// A kind `lb-proxy get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GetKind {
    /// `services` (also `svc`, `service`).
    Services,
    /// `endpoints` (also `ep`).
    Endpoints,
    /// `pods` (also `po`, `pod`): the pods lb knows, ready as lb sees them.
    Pods,
    /// `connections` (also `conn`, `connection`): open TCP connections,
    /// lb's own kind. Their NAME is their service's.
    Connections,
    /// `events` (also `ev`, `event`).
    Events,
}

impl GetKind {
    /// The admin API path that lists this kind.
    pub fn path(self) -> &'static str {
        match self {
            GetKind::Services => SERVICES_PATH,
            GetKind::Endpoints => ENDPOINTS_PATH,
            GetKind::Pods => PODS_PATH,
            GetKind::Connections => CONNECTIONS_PATH,
            GetKind::Events => EVENTS_PATH,
        }
    }

    /// The resource, as `Error from server (NotFound): services "web" not
    /// found` names it.
    pub fn resource(self) -> &'static str {
        match self {
            GetKind::Services => "services",
            GetKind::Endpoints => "endpoints",
            GetKind::Pods => "pods",
            GetKind::Connections => "connections",
            GetKind::Events => "events",
        }
    }

    /// The `Kind` of its objects in `-o json|yaml`.
    pub fn kind(self) -> &'static str {
        match self {
            GetKind::Services => "Service",
            GetKind::Endpoints => "Endpoints",
            GetKind::Pods => "Pod",
            GetKind::Connections => "Connection",
            GetKind::Events => "Event",
        }
    }

    /// The prefix of `-o name` and of names when several kinds are printed
    /// (`service/web`, `endpoints/web`, `pod/web-1`): the kind in lower
    /// case, as kubectl prints it.
    pub fn prefix(self) -> &'static str {
        match self {
            GetKind::Services => "service",
            GetKind::Endpoints => "endpoints",
            GetKind::Pods => "pod",
            GetKind::Connections => "connection",
            GetKind::Events => "event",
        }
    }

    /// The kinds one word names: a kind, a short name or alias, or `all`
    /// (kubectl's category: of lb's kinds, pods and services).
    fn parse(word: &str) -> Option<&'static [GetKind]> {
        Some(match word.to_ascii_lowercase().as_str() {
            "services" | "service" | "svc" => &[GetKind::Services],
            "endpoints" | "ep" => &[GetKind::Endpoints],
            "pods" | "pod" | "po" => &[GetKind::Pods],
            "connections" | "connection" | "conn" => &[GetKind::Connections],
            "events" | "event" | "ev" => &[GetKind::Events],
            "all" => &[GetKind::Pods, GetKind::Services],
            _ => return None,
        })
    }
}

/// `lb-proxy get -o ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// A `kubectl get` table (the default).
    #[default]
    Table,
    /// More columns: kubectl's wide columns, and lb's (endpoints: one row
    /// each with its state, why it is out of rotation and since when).
    Wide,
    /// JSON: the object asked by name, else a `kind: List` of the objects.
    Json,
    /// YAML, as `-o json`.
    Yaml,
    /// One `kind/name` a line (`service/web`).
    Name,
}

/// What `lb-proxy get` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    /// The kinds, in the order asked, each with the names asked (none:
    /// every object).
    pub targets: Vec<(GetKind, Vec<String>)>,
    /// The namespace listed; `None` with `-A` (every namespace).
    pub namespace: Option<String>,
    /// `-l`: labels the objects must have (empty: any).
    pub selector: Selector,
    /// `-o`.
    pub output: OutputFormat,
    /// `--no-headers`.
    pub no_headers: bool,
}

/// A command line `lb-proxy get` refuses; printed after `error: `, in
/// kubectl's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// A kind lb does not list.
    #[error("the server doesn't have a resource type \"{0}\"")]
    UnknownKind(String),
    /// `get svc svc/web`.
    #[error("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'lb-proxy get resource/<resource_name>' instead of 'lb-proxy get resource resource/<resource_name>'")]
    TypeAndTuple,
    /// `get svc/web db`.
    #[error("arguments in resource/name form must have a single resource and name")]
    BareNameAmongTuples,
    /// A name with `-A`.
    #[error("a resource cannot be retrieved by name across all namespaces")]
    NameAcrossNamespaces,
    /// A name with `-l`.
    #[error("name cannot be provided when a selector is specified")]
    NameWithSelector,
    /// `TYPE/NAME` with `-l`.
    #[error("selectors and the all flag cannot be used when passing resource/name arguments")]
    TupleWithSelector,
    /// A `-l` that does not parse.
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

/// kubectl's namespace when none is given (and no kubeconfig says one).
pub const DEFAULT_NAMESPACE: &str = "default";

impl GetRequest {
    /// Reads `lb-proxy get ARGS -n NAMESPACE [-A] [-l SELECTOR] -o OUTPUT
    /// [--no-headers]` as kubectl reads `kubectl get`. `-A` wins over `-n`,
    /// as in kubectl.
    pub fn parse(
        args: &[String],
        namespace: Option<&str>,
        all_namespaces: bool,
        selector: Option<&str>,
        output: OutputFormat,
        no_headers: bool,
    ) -> Result<GetRequest, GetError> {
        let mut targets: Vec<(GetKind, Vec<String>)> = Vec::new();
        let tuples = args.first().is_some_and(|a| a.contains('/'));
        if tuples {
            for arg in args {
                let Some((kind, name)) = arg.split_once('/') else {
                    return Err(GetError::BareNameAmongTuples);
                };
                let kinds = match GetKind::parse(kind) {
                    Some([k]) => *k,
                    _ => return Err(GetError::UnknownKind(kind.to_string())),
                };
                add(&mut targets, kinds, Some(name.to_string()));
            }
        } else if let Some((kinds, names)) = args.split_first() {
            if names.iter().any(|n| n.contains('/')) {
                return Err(GetError::TypeAndTuple);
            }
            for word in kinds.split(',').filter(|w| !w.is_empty()) {
                let parsed =
                    GetKind::parse(word).ok_or_else(|| GetError::UnknownKind(word.to_string()))?;
                for kind in parsed {
                    add(&mut targets, *kind, None);
                    for name in names {
                        add(&mut targets, *kind, Some(name.clone()));
                    }
                }
            }
            if targets.is_empty() {
                return Err(GetError::UnknownKind(kinds.clone()));
            }
        }
        let named = targets.iter().any(|(_, names)| !names.is_empty());
        let selector = Selector::parse(selector.unwrap_or(""))?;
        if named && !selector.requirements().is_empty() {
            return Err(if tuples {
                GetError::TupleWithSelector
            } else {
                GetError::NameWithSelector
            });
        }
        if named && all_namespaces {
            return Err(GetError::NameAcrossNamespaces);
        }
        Ok(GetRequest {
            targets,
            namespace: (!all_namespaces)
                .then(|| namespace.unwrap_or(DEFAULT_NAMESPACE).to_string()),
            selector,
            output,
            no_headers,
        })
    }

    /// Several kinds were asked: names are printed `service/web`.
    pub fn several_kinds(&self) -> bool {
        self.targets.len() > 1
    }
}

/// Adds `kind` (and `name`) to `targets`, keeping the kinds in the order
/// first asked and each name once.
fn add(targets: &mut Vec<(GetKind, Vec<String>)>, kind: GetKind, name: Option<String>) {
    let i = match targets.iter().position(|(k, _)| *k == kind) {
        Some(i) => i,
        None => {
            targets.push((kind, Vec::new()));
            targets.len() - 1
        }
    };
    let slot = &mut targets[i].1;
    if let Some(name) = name {
        if !slot.contains(&name) {
            slot.push(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<GetRequest, GetError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        GetRequest::parse(&args, None, false, None, OutputFormat::Table, false)
    }

    #[test]
    fn kinds_names_and_tuples_are_read_as_kubectl_reads_them() {
        let r = parse(&["svc,ep", "web"]).unwrap();
        assert_eq!(
            r.targets,
            [
                (GetKind::Services, vec!["web".to_string()]),
                (GetKind::Endpoints, vec!["web".to_string()])
            ]
        );
        assert_eq!(r.namespace.as_deref(), Some("default"));
        let r = parse(&["svc/web", "po/a", "service/db"]).unwrap();
        assert_eq!(
            r.targets,
            [
                (GetKind::Services, vec!["web".to_string(), "db".to_string()]),
                (GetKind::Pods, vec!["a".to_string()])
            ]
        );
        let r = parse(&["all"]).unwrap();
        assert_eq!(
            r.targets,
            [(GetKind::Pods, vec![]), (GetKind::Services, vec![])]
        );
        assert!(r.several_kinds());
    }

    #[test]
    fn kubectl_refusals_are_kept() {
        assert_eq!(
            parse(&["nodes"]).unwrap_err().to_string(),
            "the server doesn't have a resource type \"nodes\""
        );
        assert_eq!(parse(&["svc", "svc/web"]), Err(GetError::TypeAndTuple));
        assert_eq!(
            parse(&["svc/web", "db"]),
            Err(GetError::BareNameAmongTuples)
        );
        let args = vec!["svc".to_string(), "web".to_string()];
        assert_eq!(
            GetRequest::parse(&args, None, true, None, OutputFormat::Table, false),
            Err(GetError::NameAcrossNamespaces)
        );
        assert_eq!(
            GetRequest::parse(&args, None, false, Some("a=b"), OutputFormat::Table, false),
            Err(GetError::NameWithSelector)
        );
    }
}
