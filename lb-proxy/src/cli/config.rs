//! `lb-proxy config schema` and `lb-proxy config dump`: the file's JSON
//! Schema for editors, and the configuration in force written back as TOML
//! (as nginx -T and Envoy's config dump show theirs), every setting with
//! its default and every allocation as the next load would make it.

use std::path::Path;

use lb_config::raw::RawConfig;
use lb_config::ConfigErrors;

/// What `lb-proxy config` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of the TOML file (docs/lb.schema.json).
    #[command(
        long_about = "Prints the JSON Schema (draft 7) of the config file, pretty JSON on \
stdout: every table and key with its type, default, bounds and description. It is the \
same as docs/lb.schema.json in the repository. Editors that read JSON Schema for TOML \
(taplo, Even Better TOML) complete and check a file that starts with \
`#:schema ./lb.schema.json`.",
        after_help = "EXAMPLES:\n  lb-proxy config schema > /etc/lb/lb.schema.json\n  \
sed -i '1i #:schema ./lb.schema.json' /etc/lb/lb.toml"
    )]
    Schema,
    /// Print the configuration in force as TOML: defaults filled in, allocations written.
    #[command(
        long_about = "Loads --config (with --manifests, and the allocations of --state-file \
as the starting point, read and never written), as `check` does, and prints the result as \
one TOML file: every key of [node], [cluster], [proxy], [admin], [log] and [dns] with its \
value in force (defaults filled in), the objects of the file and of the manifests, and each \
service's cluster IP, node ports, health-check node port and LoadBalancer address as the \
load allocated them, written as requests. The output passes `lb-proxy check` and loads to \
the same services. An invalid file prints its errors, as `check` does, and exits 1.",
        after_help = "EXAMPLES:\n  lb-proxy config dump --config /etc/lb/lb.toml\n  \
lb-proxy config dump --config lb.toml --manifests k8s/ --state-file /var/lib/lb/state.json"
    )]
    Dump,
}

/// The JSON Schema of the file, as `config schema` prints it.
pub fn schema() -> String {
    lb_config::schema::schema_text()
}

/// The configuration in force, as `config dump` prints it: the file and the
/// manifests loaded as [`super::check`] loads them, written back by
/// [`lb_config::effective::effective`], under a header naming the inputs.
pub fn dump(
    config: &Path,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
) -> Result<String, ConfigErrors> {
    let (raw, loaded) = super::load(config, manifests, state_file)?;
    let effective = lb_config::effective::effective(&raw, &loaded);
    let mut out = format!(
        "# lb-proxy config dump of {}{}{}\n\
         # The configuration in force: defaults filled in, allocations written as requests.\n\n",
        config.display(),
        manifests.map_or(String::new(), |m| format!(
            " with --manifests {}",
            m.display()
        )),
        state_file.map_or(String::new(), |s| format!(
            " and --state-file {}",
            s.display()
        )),
    );
    out.push_str(&to_toml(&effective)?);
    Ok(out)
}

/// `raw` as TOML text; empty lists of objects are left out.
fn to_toml(raw: &RawConfig) -> Result<String, ConfigErrors> {
    lb_config::effective::to_toml(raw).map_err(|e| {
        ConfigErrors::single(lb_config::FieldError::internal(
            "config dump",
            format!("cannot write TOML: {e}"),
        ))
    })
}
