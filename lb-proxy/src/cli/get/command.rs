//! `lb-proxy get` as the binary runs it: finding the admin API, one
//! answer, or `-w`'s answer at each change.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::{fetch_bodies, get_command, render, GetRequest, OutputFormat};

/// `lb-proxy get`, whole: which admin API to ask (`--admin`, else the
/// file's `admin.listen`, else the default), one answer or, with `-w`, an
/// answer each time one changes (`watch` = how many, 0 for no end).
pub fn command(
    request: &GetRequest,
    admin: Option<String>,
    config: Option<&Path>,
    watch: Option<u32>,
) -> ExitCode {
    use std::io::Write;
    let admin = match (admin, config) {
        (Some(a), _) => a,
        (None, Some(path)) => match lb_config::check_file(path) {
            Ok(c) => match c.admin_listen {
                Some(a) => a.to_string(),
                None => {
                    eprintln!(
                        "error: {} disables the admin API (admin.listen = \"\")",
                        path.display()
                    );
                    return ExitCode::from(1);
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::from(1);
            }
        },
        (None, None) => lb_config::config::DEFAULT_ADMIN_LISTEN.to_string(),
    };
    let Some(limit) = watch else {
        return match get_command(&admin, request, SystemTime::now()) {
            Ok(out) => {
                print!("{}", out.stdout);
                eprint!("{}", out.stderr);
                if out.success {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    };
    // Watch: poll every second and print again when an answer changed
    // (AGE alone ticking does not count); Ctrl-C ends it.
    let mut last = None;
    let mut printed = 0u32;
    loop {
        match fetch_bodies(&admin, request) {
            Ok(bodies) if last.as_ref() != Some(&bodies) => {
                match render(&admin, request, &bodies, SystemTime::now()) {
                    Ok(out) => {
                        let document =
                            matches!(request.output, OutputFormat::Json | OutputFormat::Yaml);
                        if printed > 0 && !document {
                            println!();
                        }
                        print!("{}", out.stdout);
                        eprint!("{}", out.stderr);
                        let _ = std::io::stdout().flush();
                        printed += 1;
                    }
                    Err(e) => eprintln!("error: {e}"),
                }
                last = Some(bodies);
                if limit > 0 && printed >= limit {
                    return ExitCode::SUCCESS;
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("error: {e}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
