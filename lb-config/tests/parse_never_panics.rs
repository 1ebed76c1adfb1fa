//! The parser and validator take untrusted text (a file edited by hand, a
//! ConfigMap): whatever they are given, they answer with a config or with
//! errors, never a panic. A property-test stand-in for a fuzz target (the
//! machine has only a stable toolchain, which cargo-fuzz cannot use).

mod support;

use proptest::prelude::*;

const VALID: &str = r#"
[node]
name = "node-1"
addresses = ["127.0.0.1"]
[cluster]
service_cidr = "127.96.0.0/16"
node_port_range = "30000-30100"
[proxy]
connect_timeouts_ms = [100, 200]
drain_timeout = "5s"
[[pods]]
name = "web-1"
ip = "127.0.244.1"
labels = { app = "web" }
ports = [{ name = "http", container_port = 8080 }]
[[services]]
name = "web"
type = "NodePort"
selector = { app = "web" }
session_affinity = "ClientIP"
session_affinity_config = { client_ip = { timeout_seconds = 60 } }
[[services.ports]]
name = "http"
port = 80
target_port = "http"
node_port = 30001
[[endpoints]]
name = "manual"
[[endpoints.subsets]]
addresses = [{ ip = "127.0.244.9", weight = 2 }]
ports = [{ name = "http", port = 80 }]
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = lb_config::check_str(&text);
    }

    #[test]
    fn a_valid_file_with_lines_dropped_or_mangled_never_panics(
        drops in proptest::collection::vec(any::<bool>(), 40),
        mangle in proptest::collection::vec((0usize..40, "[-a-zA-Z0-9_ .\"=\\[\\]{}]{0,12}"), 0..4),
    ) {
        let mut lines: Vec<String> = VALID.lines().map(str::to_string).collect();
        for (i, replacement) in mangle {
            if let Some(line) = lines.get_mut(i) {
                let cut = line.len() / 2;
                let head: String = line.chars().take(cut).collect();
                *line = head + &replacement;
            }
        }
        let text: Vec<String> = lines
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drops.get(*i).copied().unwrap_or(false))
            .map(|(_, l)| l)
            .collect();
        let _ = lb_config::check_str(&text.join("\n"));
    }
}

#[test]
fn the_unmangled_file_is_valid() {
    support::config(VALID);
}
