//! lb-proxy's integration tests: one test binary (`cargo test -p lb-proxy
//! --test it`), one module per area, one support library ([`support`]).
//!
//! Run one area with its module path, e.g. `cargo test -p lb-proxy --test it
//! dataplane::`. The tests of every module run in parallel threads of this
//! one process: a test uses addresses of its own ([`support::addr`]), and a
//! test that counts process-wide things (threads, pipes) takes
//! [`support::process::alone`].
//!
//! A module that needs a cargo feature is declared under it here.

// `pub` in the support library marks what tests may use (this crate has
// no public API). Built without `cli`, the helpers of the admin and binary
// tests go unused: only then is dead code allowed.
#[allow(unreachable_pub)]
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod support;

#[cfg(feature = "admin")]
mod admin_api;
#[cfg(feature = "admin")]
mod admin_limits;
mod admin_tables;
#[cfg(feature = "cli")]
mod allocations;
#[cfg(feature = "cli")]
mod check_warnings;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod config_reference;
mod dataplane;
#[cfg(feature = "cli")]
mod deploy;
#[cfg(all(feature = "admin", feature = "dns"))]
mod dns_app;
#[cfg(feature = "cli")]
mod dns_dig;
#[cfg(feature = "dns")]
mod dns_forward;
#[cfg(all(feature = "admin", feature = "dns"))]
mod dns_hosts;
#[cfg(feature = "dns")]
mod dns_limits;
#[cfg(feature = "cli")]
mod dns_logs;
#[cfg(feature = "dns")]
mod dns_records;
mod examples;
#[cfg(feature = "cli")]
mod fault_descriptors;
mod health_ejection;
#[cfg(feature = "cli")]
mod health_exec;
#[cfg(feature = "admin")]
mod health_policy;
mod health_probes;
#[cfg(feature = "cli")]
mod lb_app;
#[cfg(feature = "cli")]
mod lb_vip_netns;
#[cfg(feature = "cli")]
mod manifest_dir;
#[cfg(feature = "cli")]
mod manifest_e2e;
#[cfg(feature = "cli")]
mod manifest_k8s;
#[cfg(feature = "cli")]
mod node_owner;
#[cfg(feature = "cli")]
mod obs_access;
#[cfg(feature = "admin")]
mod obs_api;
// The WebDriver client is ureq, which comes with `cli`.
#[cfg(feature = "cli")]
mod obs_browser;
#[cfg(feature = "cli")]
mod obs_get;
#[cfg(feature = "cli")]
mod obs_kubectl;
#[cfg(feature = "admin")]
mod obs_metrics;
#[cfg(feature = "admin")]
mod obs_status;
#[cfg(feature = "cli")]
mod obs_systemd;
mod perf_engines;
mod proxy_protocol;
#[cfg(feature = "cli")]
mod proxy_transparent;
#[cfg(feature = "cli")]
mod self_loop;
#[cfg(feature = "cli")]
mod shutdown;
#[cfg(feature = "cli")]
mod source_etcd;
#[cfg(feature = "cli")]
mod source_etcd_fleet;
#[cfg(feature = "cli")]
mod source_etcd_resilience;
#[cfg(feature = "cli")]
mod source_etcd_security;
#[cfg(feature = "cli")]
mod status_cli;
#[cfg(feature = "admin")]
mod status_conditions;
#[cfg(feature = "cli")]
mod takeover;
#[cfg(feature = "admin")]
mod topology;
mod udp_dataplane;
mod udp_dig;
mod udp_flow_sim;
